/* bnnx C runtime: the kernels a bnnx C export calls. C99, stdint.h and string.h only, no malloc.
 *
 * Bit layout (as bnnx packs them, see bnnx/packed/bits.py): a +1 is bit 1 (sign(0) = +1), a -1
 * is bit 0; bit j of uint32 word i holds element 32*i + j of a row; the bits past a row's end are 0
 * in kernels and activations alike. Dense kernels (K, N) are N rows of ceil(K/32) words; conv
 * kernels (kh, kw, cin, N) are N rows of kh*kw*ceil(cin/32) words, each tap's channels starting a
 * new word. Ternary kernels add a second plane, `nonzero` (NULL for binary kernels).
 * For +-1 rows a, w of length K: a.w = K - 2*popcount(a XOR w); ternary: popcount(z) - 2*popcount((a XOR w) AND z).
 *
 * popcount: a portable path, and fast paths chosen by the compiler's own macros: AVX-512
 * VPOPCNTDQ (__AVX512VPOPCNTDQ__), AVX2 (__AVX2__, nibble lookup), ARM NEON (__ARM_NEON, vcnt),
 * __builtin_popcountll (__GNUC__). Geometry arrays `geo` are {kh, kw, sh, sw, pad_top, pad_left, ho, wo}.
 * bnnx_xnor_conv's `scratch` holds wo*kh*kw*ceil(cin/32) + (2*kh*kw + 1)*N words (BNNX_CONV_SCRATCH_WORDS).
 */
#ifndef BNNX_RUNTIME_H
#define BNNX_RUNTIME_H

#include <stdint.h>
#include <string.h>

#define BNNX_MAX(a, b) ((a) > (b) ? (a) : (b))
#define BNNX_MIN(a, b) ((a) < (b) ? (a) : (b))
#define BNNX_ABS(a) ((a) < 0 ? -(a) : (a))

#ifdef BNNX_DEBUG
/* Called after every layer on bits with its integer sums (defined by the program, e.g. main.c). */
void bnnx_debug_dump(const char *layer, const int32_t *sums, int32_t count);
#define BNNX_DUMP(layer, sums, count) bnnx_debug_dump(layer, sums, count)
#else
#define BNNX_DUMP(layer, sums, count) ((void)0)
#endif

static inline float bnnx_f32_from_bits(uint32_t bits) {
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

/* sum over words of popcount((a XOR w) AND z); z may be NULL (all ones). */
int32_t bnnx_popcount_xor(const uint32_t *a, const uint32_t *w, const uint32_t *z, int32_t words);
/* the name of the popcount path compiled in */
const char *bnnx_popcount_path(void);

void bnnx_pack_bits(const uint8_t *bits, int32_t rows, int32_t count, uint32_t *words);
void bnnx_fold_bits(const int32_t *sums, int32_t rows, int32_t channels, const int32_t *multiplier,
                    const int32_t *threshold, uint8_t *bits);
void bnnx_xnor_dense(const uint32_t *a, int32_t m, const uint32_t *w, const uint32_t *nonzero, int32_t n,
                     int32_t words, int32_t k, int32_t *out);
#define BNNX_CONV_SCRATCH_WORDS(wo, taps, cin, n) ((int64_t)(wo) * (taps) * (((cin) + 31) / 32) + (2 * (int64_t)(taps) + 1) * (n))
void bnnx_xnor_conv(const uint32_t *a, int32_t h, int32_t w, int32_t cin, const uint32_t *kernel,
                    const uint32_t *nonzero, int32_t n, const int32_t *geo, uint32_t *scratch, int32_t *out);
void bnnx_select_dense(const float *x, int32_t m, int32_t k, const uint32_t *w, const uint32_t *nonzero,
                       int32_t n, int32_t words, float *out);
void bnnx_select_conv(const float *x, int32_t h, int32_t w, int32_t cin, const uint32_t *kernel,
                      const uint32_t *nonzero, int32_t n, const int32_t *geo, float *out);
void bnnx_dense_f32(const float *x, int32_t m, int32_t k, const float *w, int32_t n, float *out);
void bnnx_conv_f32(const float *x, int32_t h, int32_t w, int32_t cin, const float *kernel, int32_t n,
                   const int32_t *geo, float *out);
void bnnx_maxpool_f32(const float *x, int32_t h, int32_t w, int32_t c, const int32_t *geo, float *out);
void bnnx_maxpool_i32(const int32_t *x, int32_t h, int32_t w, int32_t c, const int32_t *geo, int32_t *out);
void bnnx_maxpool_u8(const uint8_t *x, int32_t h, int32_t w, int32_t c, const int32_t *geo, uint8_t *out);
void bnnx_sumpool_f32(const float *x, int32_t h, int32_t w, int32_t c, const int32_t *geo, float *out);

#endif
