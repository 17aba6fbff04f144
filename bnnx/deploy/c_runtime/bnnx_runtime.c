/* bnnx C runtime (see bnnx_runtime.h). C99; the intrinsics headers are the compiler's own. */
#include "bnnx_runtime.h"

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#include <immintrin.h>
#define BNNX_PATH "avx512-vpopcntdq"
#define BNNX_AVX512 1
#elif defined(__AVX2__)
#include <immintrin.h>
#define BNNX_PATH "avx2"
#elif defined(__ARM_NEON)
#include <arm_neon.h>
#define BNNX_PATH "neon"
#elif defined(__GNUC__) && !(defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M')
#define BNNX_PATH "builtin-popcountll"
#define BNNX_BUILTIN 1
#else
#define BNNX_PATH "portable"
#endif

const char *bnnx_popcount_path(void) { return BNNX_PATH; }

static inline int32_t popcount32(uint32_t v) {
#if defined(__GNUC__) && (defined(__POPCNT__) || defined(__ARM_NEON))
  return __builtin_popcount(v); /* one instruction (x86 POPCNT) or a short vcnt sequence */
#else
  v = v - ((v >> 1) & 0x55555555u);
  v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
  return (int32_t)((((v + (v >> 4)) & 0x0F0F0F0Fu) * 0x01010101u) >> 24);
#endif
}

static inline uint32_t masked(const uint32_t *a, const uint32_t *w, const uint32_t *z, int32_t i) {
  return (a[i] ^ w[i]) & (z ? z[i] : 0xFFFFFFFFu);
}

#if !defined(BNNX_AVX512)
/* the words from `start` on, one at a time (the tail of every fast path but AVX-512's masked loads) */
static int32_t tail_count(const uint32_t *a, const uint32_t *w, const uint32_t *z, int32_t start, int32_t words) {
  int32_t count = 0;
  for (int32_t i = start; i < words; ++i) count += popcount32(masked(a, w, z, i));
  return count;
}
#endif

int32_t bnnx_popcount_xor(const uint32_t *a, const uint32_t *w, const uint32_t *z, int32_t words) {
#if defined(BNNX_AVX512)
  __m512i acc = _mm512_setzero_si512();
  for (int32_t i = 0; i < words; i += 16) {
    __mmask16 keep = words - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (words - i)) - 1u);
    __m512i v = _mm512_xor_si512(_mm512_maskz_loadu_epi32(keep, a + i), _mm512_maskz_loadu_epi32(keep, w + i));
    if (z) v = _mm512_and_si512(v, _mm512_maskz_loadu_epi32(keep, z + i));
    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(v));
  }
  return (int32_t)_mm512_reduce_add_epi64(acc);
#elif defined(__AVX2__)
  const __m256i lookup = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                          0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
  const __m256i low = _mm256_set1_epi8(0x0f);
  __m256i acc = _mm256_setzero_si256();
  int32_t i = 0;
  for (; i + 8 <= words; i += 8) {
    __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(a + i)),
                                 _mm256_loadu_si256((const __m256i *)(w + i)));
    if (z) v = _mm256_and_si256(v, _mm256_loadu_si256((const __m256i *)(z + i)));
    __m256i counts = _mm256_add_epi8(_mm256_shuffle_epi8(lookup, _mm256_and_si256(v, low)),
                                     _mm256_shuffle_epi8(lookup, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
    acc = _mm256_add_epi64(acc, _mm256_sad_epu8(counts, _mm256_setzero_si256()));
  }
  uint64_t lanes[4];
  _mm256_storeu_si256((__m256i *)lanes, acc);
  return (int32_t)(lanes[0] + lanes[1] + lanes[2] + lanes[3]) + tail_count(a, w, z, i, words);
#elif defined(__ARM_NEON)
  uint64x2_t acc = vdupq_n_u64(0);
  int32_t i = 0;
  for (; i + 4 <= words; i += 4) {
    uint32x4_t v = veorq_u32(vld1q_u32(a + i), vld1q_u32(w + i));
    if (z) v = vandq_u32(v, vld1q_u32(z + i));
    acc = vpadalq_u32(acc, vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u32(v)))));
  }
  return (int32_t)(vgetq_lane_u64(acc, 0) + vgetq_lane_u64(acc, 1)) + tail_count(a, w, z, i, words);
#elif defined(BNNX_BUILTIN)
  int32_t count = 0, i = 0;
  for (; i + 2 <= words; i += 2) {
    uint64_t x, y, m = ~(uint64_t)0;
    memcpy(&x, a + i, 8);
    memcpy(&y, w + i, 8);
    if (z) memcpy(&m, z + i, 8);
    count += __builtin_popcountll((x ^ y) & m);
  }
  return count + tail_count(a, w, z, i, words);
#else
  return tail_count(a, w, z, 0, words);
#endif
}

#if defined(BNNX_AVX512)
/* 16 vectors of 8 partial sums each -> their 16 totals, in order: a transpose-and-add tree (14
 * adds) where a horizontal reduction per vector would cost ~6 ops each. */
static inline __m512i add_pairs(__m512i x, __m512i y) {
  return _mm512_add_epi64(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
}
static inline __m512i add_lanes(__m512i x, __m512i y) {
  return _mm512_add_epi64(_mm512_shuffle_i64x2(x, y, 0x88), _mm512_shuffle_i64x2(x, y, 0xDD));
}
static void reduce_16(const __m512i *v, int32_t *totals) {
  __m512i s[8], t[4];
  for (int i = 0; i < 8; ++i) s[i] = add_pairs(v[2 * i], v[2 * i + 1]);
  for (int i = 0; i < 4; ++i) t[i] = add_lanes(s[2 * i], s[2 * i + 1]);
  _mm256_storeu_si256((__m256i *)totals, _mm512_cvtepi64_epi32(add_lanes(t[0], t[1])));
  _mm256_storeu_si256((__m256i *)(totals + 8), _mm512_cvtepi64_epi32(add_lanes(t[2], t[3])));
}

/* counts[i*n + j] for rows i..i+3 against rows j..j+3: 16 accumulators share each load; whole
 * 512-bit chunks with plain loads (masked ones cost ~15 % here), the row's tail masked. */
#define BNNX_ACC(k, ar, wc) acc[k] = _mm512_add_epi64(acc[k], _mm512_popcnt_epi64(_mm512_xor_si512(ar, wc)))
#define BNNX_STEP_4X4(LOAD)                                                                 \
  {                                                                                         \
    __m512i w0 = LOAD(w + i), w1 = LOAD(w1_ + i), w2 = LOAD(w2_ + i), w3 = LOAD(w3_ + i);   \
    for (int r = 0; r < 4; ++r) {                                                           \
      __m512i ar = LOAD(a + r * (int64_t)words + i);                                        \
      BNNX_ACC(4 * r, ar, w0);                                                              \
      BNNX_ACC(4 * r + 1, ar, w1);                                                          \
      BNNX_ACC(4 * r + 2, ar, w2);                                                          \
      BNNX_ACC(4 * r + 3, ar, w3);                                                          \
    }                                                                                       \
  }
#define BNNX_LOAD_FULL(p) _mm512_loadu_si512(p)
#define BNNX_LOAD_TAIL(p) _mm512_maskz_loadu_epi32(keep, p)
static void counts_4x4(const uint32_t *a, const uint32_t *w, int32_t words, int32_t n, int32_t *counts) {
  const uint32_t *w1_ = w + words, *w2_ = w + 2 * (int64_t)words, *w3_ = w + 3 * (int64_t)words;
  __m512i acc[16];
  int32_t i = 0, totals[16];
  for (int k = 0; k < 16; ++k) acc[k] = _mm512_setzero_si512();
  for (; i + 16 <= words; i += 16) BNNX_STEP_4X4(BNNX_LOAD_FULL)
  if (i < words) {
    __mmask16 keep = (__mmask16)((1u << (words - i)) - 1u);
    BNNX_STEP_4X4(BNNX_LOAD_TAIL)
  }
  reduce_16(acc, totals);
  for (int r = 0; r < 4; ++r) memcpy(counts + (int64_t)r * n, totals + 4 * r, 4 * sizeof(int32_t));
}
#endif

/* counts (m, n) of popcount((a_i XOR w_j) AND z_j) */
static void xor_counts(const uint32_t *a, int32_t m, const uint32_t *w, const uint32_t *z, int32_t n,
                       int32_t words, int32_t *counts) {
  int32_t j0 = 0;
#if defined(BNNX_AVX512)
  if (!z) {
    j0 = n - n % 4;
#if defined(_OPENMP)
#pragma omp parallel for schedule(static)
#endif
    for (int32_t j = 0; j < j0; j += 4) {
      int32_t i = 0;
      for (; i + 4 <= m; i += 4)
        counts_4x4(a + (int64_t)i * words, w + (int64_t)j * words, words, n, counts + (int64_t)i * n + j);
      for (; i < m; ++i)
        for (int c = 0; c < 4; ++c)
          counts[(int64_t)i * n + j + c] = bnnx_popcount_xor(a + (int64_t)i * words, w + (int64_t)(j + c) * words, 0, words);
    }
  }
#endif
  for (int32_t i = 0; i < m; ++i)
    for (int32_t j = j0; j < n; ++j)
      counts[(int64_t)i * n + j] = bnnx_popcount_xor(a + (int64_t)i * words, w + (int64_t)j * words,
                                                     z ? z + (int64_t)j * words : 0, words);
}

static int32_t ones(const uint32_t *z, int32_t words) {
  int32_t count = 0;
  for (int32_t i = 0; i < words; ++i) count += popcount32(z[i]);
  return count;
}

void bnnx_pack_bits(const uint8_t *bits, int32_t rows, int32_t count, uint32_t *words) {
  int32_t per_row = (count + 31) / 32;
  for (int32_t r = 0; r < rows; ++r) {
    const uint8_t *row = bits + (int64_t)r * count;
    for (int32_t i = 0; i < per_row; ++i) {
      uint32_t word = 0;
      int32_t end = count - 32 * i < 32 ? count - 32 * i : 32;
      for (int32_t j = 0; j < end; ++j) word |= (uint32_t)(row[32 * i + j] != 0) << j;
      words[(int64_t)r * per_row + i] = word;
    }
  }
}

void bnnx_fold_bits(const int32_t *sums, int32_t rows, int32_t channels, const int32_t *multiplier,
                    const int32_t *threshold, uint8_t *bits) {
  for (int32_t r = 0; r < rows; ++r)
    for (int32_t c = 0; c < channels; ++c)
      bits[(int64_t)r * channels + c] = (uint8_t)(multiplier[c] * sums[(int64_t)r * channels + c] >= threshold[c]);
}

void bnnx_xnor_dense(const uint32_t *a, int32_t m, const uint32_t *w, const uint32_t *nonzero, int32_t n,
                     int32_t words, int32_t k, int32_t *out) {
  xor_counts(a, m, w, nonzero, n, words, out);
  for (int32_t i = 0; i < m; ++i)
    for (int32_t j = 0; j < n; ++j)
      out[(int64_t)i * n + j] = (nonzero ? ones(nonzero + (int64_t)j * words, words) : k) - 2 * out[(int64_t)i * n + j];
}

/* a tap (ky, kx) of output (oy, ox) falls on the input, or on the zero padding */
static int tap_inside(const int32_t *geo, int32_t h, int32_t w, int32_t oy, int32_t ox, int32_t ky, int32_t kx) {
  int32_t iy = oy * geo[2] - geo[4] + ky, ix = ox * geo[3] - geo[5] + kx;
  return iy >= 0 && iy < h && ix >= 0 && ix < w;
}

/* popcount(kernel tap AND nonzero tap) and the tap's nonzero count, per (output channel, tap) */
static void tap_counts(const uint32_t *kernel, const uint32_t *nonzero, int32_t n, int32_t taps, int32_t wc,
                       int32_t cin, int32_t *count, int32_t *length) {
  for (int32_t j = 0; j < n; ++j)
    for (int32_t t = 0; t < taps; ++t) {
      int64_t at = ((int64_t)j * taps + t) * wc;
      int32_t c = 0, l = nonzero ? 0 : cin;
      for (int32_t i = 0; i < wc; ++i) {
        uint32_t z = nonzero ? nonzero[at + i] : 0xFFFFFFFFu;
        c += popcount32(kernel[at + i] & z);
        if (nonzero) l += popcount32(z);
      }
      count[(int64_t)j * taps + t] = c;
      length[(int64_t)j * taps + t] = l;
    }
}

/* Padding contributes 0 to the float conv, so a padded tap is taken off again: its words are 0
 * in the patch, adding popcount(w_tap AND z_tap) to the count and its ones to the length. Those
 * per-tap counts are computed once per call, into the scratch after the patch rows. */
void bnnx_xnor_conv(const uint32_t *a, int32_t h, int32_t w, int32_t cin, const uint32_t *kernel,
                    const uint32_t *nonzero, int32_t n, const int32_t *geo, uint32_t *scratch, int32_t *out) {
  int32_t kh = geo[0], kw = geo[1], ho = geo[6], wo = geo[7], wc = (cin + 31) / 32, taps = kh * kw;
  int32_t row = taps * wc;
  int32_t *tap_count = (int32_t *)(scratch + (int64_t)wo * row), *tap_length = tap_count + (int64_t)n * taps;
  int32_t *full_length = tap_length + (int64_t)n * taps;
  tap_counts(kernel, nonzero, n, taps, wc, cin, tap_count, tap_length);
  for (int32_t j = 0; j < n; ++j) {
    full_length[j] = 0;
    for (int32_t t = 0; t < taps; ++t) full_length[j] += tap_length[(int64_t)j * taps + t];
  }
  for (int32_t oy = 0; oy < ho; ++oy) {
    for (int32_t ox = 0; ox < wo; ++ox)
      for (int32_t t = 0; t < taps; ++t) {
        uint32_t *dst = scratch + (int64_t)ox * row + (int64_t)t * wc;
        if (tap_inside(geo, h, w, oy, ox, t / kw, t % kw)) {
          int32_t iy = oy * geo[2] - geo[4] + t / kw, ix = ox * geo[3] - geo[5] + t % kw;
          memcpy(dst, a + ((int64_t)iy * w + ix) * wc, (size_t)wc * 4u);
        } else {
          memset(dst, 0, (size_t)wc * 4u);
        }
      }
    int32_t *counts = out + (int64_t)oy * wo * n;
    xor_counts(scratch, wo, kernel, nonzero, n, row, counts);
    for (int32_t ox = 0; ox < wo; ++ox) {
      /* the window is a rectangle: inside when its first and last taps are */
      int inside = tap_inside(geo, h, w, oy, ox, 0, 0) && tap_inside(geo, h, w, oy, ox, kh - 1, kw - 1);
      for (int32_t j = 0; j < n; ++j) {
        const int32_t *tc = tap_count + (int64_t)j * taps, *tl = tap_length + (int64_t)j * taps;
        int32_t count = counts[(int64_t)ox * n + j], length = full_length[j];
        for (int32_t t = 0; !inside && t < taps; ++t)
          if (!tap_inside(geo, h, w, oy, ox, t / kw, t % kw)) {
            count -= tc[t];
            length -= tl[t];
          }
        counts[(int64_t)ox * n + j] = length - 2 * count;
      }
    }
  }
}

static inline float selected(const uint32_t *w, const uint32_t *z, int32_t i, float x) {
  uint32_t bit = 1u << (i % 32);
  if (z && !(z[i / 32] & bit)) return 0.0f;
  return (w[i / 32] & bit) ? x : -x;
}

void bnnx_select_dense(const float *x, int32_t m, int32_t k, const uint32_t *w, const uint32_t *nonzero,
                       int32_t n, int32_t words, float *out) {
  for (int32_t i = 0; i < m; ++i)
    for (int32_t j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int32_t q = 0; q < k; ++q)
        sum += selected(w + (int64_t)j * words, nonzero ? nonzero + (int64_t)j * words : 0, q, x[(int64_t)i * k + q]);
      out[(int64_t)i * n + j] = sum;
    }
}

void bnnx_select_conv(const float *x, int32_t h, int32_t w, int32_t cin, const uint32_t *kernel,
                      const uint32_t *nonzero, int32_t n, const int32_t *geo, float *out) {
  int32_t kh = geo[0], kw = geo[1], wc = (cin + 31) / 32, row = kh * kw * wc;
  for (int32_t oy = 0; oy < geo[6]; ++oy)
    for (int32_t ox = 0; ox < geo[7]; ++ox)
      for (int32_t j = 0; j < n; ++j) {
        float sum = 0.0f;
        for (int32_t t = 0; t < kh * kw; ++t) {
          if (!tap_inside(geo, h, w, oy, ox, t / kw, t % kw)) continue;
          int32_t iy = oy * geo[2] - geo[4] + t / kw, ix = ox * geo[3] - geo[5] + t % kw;
          const uint32_t *wt = kernel + (int64_t)j * row + t * wc, *zt = nonzero ? nonzero + (int64_t)j * row + t * wc : 0;
          for (int32_t c = 0; c < cin; ++c) sum += selected(wt, zt, c, x[((int64_t)iy * w + ix) * cin + c]);
        }
        out[((int64_t)oy * geo[7] + ox) * n + j] = sum;
      }
}

void bnnx_dense_f32(const float *x, int32_t m, int32_t k, const float *w, int32_t n, float *out) {
  for (int32_t i = 0; i < m; ++i) {
    float *o = out + (int64_t)i * n;
    for (int32_t j = 0; j < n; ++j) o[j] = 0.0f;
    for (int32_t q = 0; q < k; ++q) {
      float xq = x[(int64_t)i * k + q];
      for (int32_t j = 0; j < n; ++j) o[j] += xq * w[(int64_t)q * n + j];
    }
  }
}

void bnnx_conv_f32(const float *x, int32_t h, int32_t w, int32_t cin, const float *kernel, int32_t n,
                   const int32_t *geo, float *out) {
  int32_t kw = geo[1], taps = geo[0] * geo[1];
  for (int32_t oy = 0; oy < geo[6]; ++oy)
    for (int32_t ox = 0; ox < geo[7]; ++ox) {
      float *o = out + ((int64_t)oy * geo[7] + ox) * n;
      for (int32_t j = 0; j < n; ++j) o[j] = 0.0f;
      for (int32_t t = 0; t < taps; ++t) {
        if (!tap_inside(geo, h, w, oy, ox, t / kw, t % kw)) continue;
        int32_t iy = oy * geo[2] - geo[4] + t / kw, ix = ox * geo[3] - geo[5] + t % kw;
        for (int32_t c = 0; c < cin; ++c) {
          float xc = x[((int64_t)iy * w + ix) * cin + c];
          const float *kc = kernel + ((int64_t)t * cin + c) * n;
          for (int32_t j = 0; j < n; ++j) o[j] += xc * kc[j];
        }
      }
    }
}

/* pools over space: the window's valid taps (max-pool padding is -inf, sum-pool padding 0) */
#define BNNX_POOL(name, type, combine)                                                            \
  void name(const type *x, int32_t h, int32_t w, int32_t c, const int32_t *geo, type *out) {      \
    for (int32_t oy = 0; oy < geo[6]; ++oy)                                                       \
      for (int32_t ox = 0; ox < geo[7]; ++ox)                                                     \
        for (int32_t ch = 0; ch < c; ++ch) {                                                      \
          type acc = 0;                                                                           \
          int first = 1;                                                                          \
          for (int32_t t = 0; t < geo[0] * geo[1]; ++t) {                                         \
            if (!tap_inside(geo, h, w, oy, ox, t / geo[1], t % geo[1])) continue;                 \
            int32_t iy = oy * geo[2] - geo[4] + t / geo[1], ix = ox * geo[3] - geo[5] + t % geo[1]; \
            type v = x[((int64_t)iy * w + ix) * c + ch];                                          \
            acc = first ? v : combine(acc, v);                                                    \
            first = 0;                                                                            \
          }                                                                                       \
          out[((int64_t)oy * geo[7] + ox) * c + ch] = acc;                                        \
        }                                                                                         \
  }
#define BNNX_SUM(a, b) ((a) + (b))
BNNX_POOL(bnnx_maxpool_f32, float, BNNX_MAX)
BNNX_POOL(bnnx_maxpool_i32, int32_t, BNNX_MAX)
BNNX_POOL(bnnx_maxpool_u8, uint8_t, BNNX_MAX)
BNNX_POOL(bnnx_sumpool_f32, float, BNNX_SUM)
