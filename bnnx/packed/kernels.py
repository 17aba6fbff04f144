"""Binary layers computed on packed bits (layout in `bits.py`); every function runs under jit.

For ±1 vectors a, w of length K held as bits: a·w = K − 2·popcount(a XOR w) (XNOR-Net, Rastegari
et al., ECCV 2016, arXiv:1603.05279; larq compute engine's bgemm). A ternary w adds its
`nonzero` plane z: a·w = popcount(z) − 2·popcount((a XOR w) AND z). A real input x against
binary w is a sign-select sum, x·w = 2·Σ_{w=+1} x − Σ x (ternary: 2·Σ_{w=+1} x − Σ_{w≠0} x).
Integer results are exact; only a layer's scale and the real layers round.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.packed.bits import WORD_BITS, bit_select, pack_rows, words_for

# Words per loop iteration. On a 2-core AVX-512 CPU (4096×4096 dense, batch 64) 8 was fastest of
# 4 / 8 / 16 (4.8 / 2.2 / 4.8 ms): fewer passes over the (M, N) int32 accumulator than 4, a fused
# body that still vectorises, unlike 16. A broadcast (M, N, W) XOR-popcount took 48 ms, 16 ms chunked.
UNROLL = 8


def _pad_words(words: jax.Array, multiple: int) -> jax.Array:
    pad = -words.shape[-1] % multiple
    return jnp.pad(words, [(0, 0)] * (words.ndim - 1) + [(0, pad)])


def popcount_sums(a: jax.Array, s: jax.Array, z: jax.Array | None = None) -> jax.Array:
    """int32 (M, N): Σ_w popcount((a[m] XOR s[n]) AND z[n]) for words a (M, W), s and z (N, W).

    A loop over word groups with an (M, N) accumulator: the broadcast (M, N, W) XOR is never
    materialised, and each step is one fused elementwise pass."""
    a, s = _pad_words(a, UNROLL), _pad_words(s, UNROLL)
    s_t = s.T.reshape(-1, UNROLL, s.shape[0])
    z_t = None if z is None else _pad_words(z, UNROLL).T.reshape(-1, UNROLL, s.shape[0])
    a_g = a.T.reshape(-1, UNROLL, a.shape[0])

    def body(group, acc):
        for j in range(UNROLL):
            xor = a_g[group, j][:, None] ^ s_t[group, j][None, :]
            if z_t is not None:
                xor = xor & z_t[group, j][None, :]
            acc = acc + jax.lax.population_count(xor).astype(jnp.int32)
        return acc

    return jax.lax.fori_loop(0, s_t.shape[0], body, jnp.zeros((a.shape[0], s.shape[0]), jnp.int32))


def plane_counts(plane: jax.Array) -> jax.Array:
    """Set bits per row, int32 (N,)."""
    return jnp.sum(jax.lax.population_count(plane).astype(jnp.int32), axis=-1)


def xnor_dense(x_bits: jax.Array, planes: dict, k: int) -> jax.Array:
    """int32 (M, N): binary inputs (M, K) booleans (True = +1) against packed kernel planes."""
    a = pack_rows(x_bits)
    z = planes.get("nonzero")
    ones = k if z is None else plane_counts(z)[None, :]
    return ones - 2 * popcount_sums(a, planes["sign"], z)


def masked_sums(x: jax.Array, plane: jax.Array) -> jax.Array:
    """float (M, N): Σ_k x[m, k] where bit k of plane[n] is set (x (M, K), plane (N, W))."""
    x = jnp.pad(x, ((0, 0), (0, plane.shape[-1] * WORD_BITS - x.shape[-1])))
    x_words = x.T.reshape(plane.shape[-1], WORD_BITS, x.shape[0])
    plane_t = plane.T

    def body(word, acc):
        for bit in range(WORD_BITS):
            selected = bit_select(plane_t[word], bit)[None, :]
            acc = acc + jnp.where(selected, x_words[word, bit][:, None], 0.0)
        return acc

    return jax.lax.fori_loop(0, plane.shape[-1], body, jnp.zeros((x.shape[0], plane.shape[0]), x.dtype))


def select_dense(x: jax.Array, planes: dict) -> jax.Array:
    """float (M, N): real inputs (M, K) against packed kernel planes, by sign-select sums."""
    z = planes.get("nonzero")
    if z is None:
        return 2.0 * masked_sums(x, planes["sign"]) - jnp.sum(x, axis=-1, keepdims=True)
    return 2.0 * masked_sums(x, planes["sign"] & z) - masked_sums(x, z)


# ---- convolutions: patches of channel-packed words ---------------------------------------

def conv_pads(spatial: tuple[int, ...], kernel_size, strides, padding) -> list[tuple[int, int]]:
    if isinstance(padding, str):
        return jax.lax.padtype_to_pads(spatial, tuple(kernel_size), tuple(strides), padding)
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def patches(x, kernel_size, strides, pads, xp=jnp):
    """(B, H, W, C) → (B, Ho, Wo, taps, C), zeros outside the input; taps in HW order."""
    x = xp.pad(x, ((0, 0), *pads, (0, 0)))
    (kh, kw), (sh, sw) = kernel_size, strides
    ho, wo = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    taps = [x[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] for i in range(kh) for j in range(kw)]
    return xp.stack(taps, axis=3)


def padded_taps(spatial, kernel_size, strides, pads) -> np.ndarray:
    """int32 (Ho·Wo, taps): 1 where a tap of an output position falls on the padding (static)."""
    window = patches(np.ones((1, *spatial, 1), np.int32), kernel_size, strides, pads, xp=np)
    return (1 - window[0, ..., 0]).reshape(-1, math.prod(kernel_size))


def xnor_conv(x_bits: jax.Array, planes: dict, kernel_shape, strides, pads) -> jax.Array:
    """int32 (B, Ho, Wo, N): binary inputs (B, H, W, C) booleans against packed conv planes.

    Padding contributes 0 (the float conv pads sign(x) with zeros), not ±1: the words of a padded
    tap are 0, so they add popcount(w_tap) to the XOR count; that is taken off again per output
    position with a small integer product (padded taps × per-tap counts)."""
    kh, kw, cin, n = kernel_shape
    a = patches(pack_rows(x_bits), (kh, kw), strides, pads)
    b, ho, wo = a.shape[:3]
    taps, wc = kh * kw, words_for(cin)
    s = planes["sign"]
    z = planes.get("nonzero")
    counts = popcount_sums(a.reshape(b * ho * wo, -1), s, z).reshape(b, ho * wo, n)
    tap_words = lambda plane: plane.reshape(n, taps, wc)
    xor_with_zero = plane_counts(tap_words(s) if z is None else tap_words(s & z)).T  # (taps, N)
    ones = jnp.full((taps, n), cin, jnp.int32) if z is None else plane_counts(tap_words(z)).T
    pad = jnp.asarray(padded_taps(x_bits.shape[1:3], (kh, kw), strides, pads))
    valid_ones = jnp.sum(ones, 0) - jnp.dot(pad, ones, preferred_element_type=jnp.int32)
    counts = counts - jnp.dot(pad, xor_with_zero, preferred_element_type=jnp.int32)
    return (valid_ones - 2 * counts).reshape(b, ho, wo, n)


def select_conv(x: jax.Array, planes: dict, kernel_shape, strides, pads) -> jax.Array:
    """float (B, Ho, Wo, N): real inputs against packed conv planes (patches padded per tap)."""
    kh, kw, cin, n = kernel_shape
    p = patches(x, (kh, kw), strides, pads)
    p = jnp.pad(p, [(0, 0)] * 4 + [(0, words_for(cin) * WORD_BITS - cin)])
    b, ho, wo = p.shape[:3]
    return select_dense(p.reshape(b * ho * wo, -1), planes).reshape(b, ho, wo, n)
