"""Bit layout of the packed engine: ±1 values as bits in uint32 words along the reduction axis.

A bit is 1 for +1 (and for sign(0) = +1), 0 for −1; bit j of word i holds element 32·i + j, and
the bits past the end of a row are 0 in kernels and activations alike, so they never count.
A ternary kernel has a second plane, `nonzero`. Dense kernels (K, N) become (N, ⌈K/32⌉) words;
conv kernels (kh, kw, cin, N) become (N, kh·kw·⌈cin/32⌉): each tap's input channels start a
new word, so the patches of a conv can be cut from channel-packed activations word by word.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

WORD_BITS = 32


def words_for(bits: int) -> int:
    return math.ceil(bits / WORD_BITS)


def _padded(bits, xp):
    """(…, n) → (…, ⌈n/32⌉, 32), zero-padded."""
    pad = words_for(bits.shape[-1]) * WORD_BITS - bits.shape[-1]
    bits = xp.pad(bits, [(0, 0)] * (bits.ndim - 1) + [(0, pad)])
    return bits.reshape(*bits.shape[:-1], -1, WORD_BITS)


def pack_rows(bits: jax.Array) -> jax.Array:
    """Booleans (…, n) → uint32 words (…, ⌈n/32⌉), under jit."""
    weights = jnp.left_shift(jnp.uint32(1), jnp.arange(WORD_BITS, dtype=jnp.uint32))
    return jnp.sum(jnp.where(_padded(bits, jnp), weights, jnp.uint32(0)), axis=-1, dtype=jnp.uint32)


def pack_rows_np(bits: np.ndarray) -> np.ndarray:
    """NumPy twin of `pack_rows` (for the export)."""
    weights = np.left_shift(np.uint64(1), np.arange(WORD_BITS, dtype=np.uint64))
    return (_padded(np.asarray(bits, bool), np) * weights).sum(-1).astype(np.uint32)


def unpack_rows_np(words: np.ndarray, count: int) -> np.ndarray:
    """Inverse of `pack_rows_np`: booleans (…, count)."""
    bits = (words[..., None] >> np.arange(WORD_BITS, dtype=np.uint32)) & 1
    return bits.reshape(*words.shape[:-1], -1)[..., :count].astype(bool)


def kernel_rows(values: np.ndarray) -> np.ndarray:
    """A kernel (…, cin, N) → rows (N, taps, cin): one row per output channel, taps in HW order."""
    values = np.asarray(values)
    return np.moveaxis(values.reshape(-1, values.shape[-2], values.shape[-1]), -1, 0)


def pack_kernel(levels: np.ndarray, ternary: bool) -> dict[str, np.ndarray]:
    """A ±1 (or −1/0/+1) kernel → planes of uint32 words (N, taps·⌈cin/32⌉)."""
    rows = kernel_rows(levels)
    flat = lambda bits: pack_rows_np(bits).reshape(rows.shape[0], -1)
    planes = {"sign": flat(rows > 0)}
    if ternary:
        planes["nonzero"] = flat(rows != 0)
    return planes


def unpack_kernel(planes: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `pack_kernel`: the kernel as float32 values (for the float reference path)."""
    cin, n = shape[-2], shape[-1]
    taps = math.prod(shape[:-2])
    decode = lambda words: unpack_rows_np(words.reshape(n, taps, -1), cin)
    values = np.where(decode(planes["sign"]), 1.0, -1.0)
    if "nonzero" in planes:
        values = np.where(decode(planes["nonzero"]), values, 0.0)
    return np.moveaxis(values, 0, -1).reshape(shape).astype(np.float32)


def bit_select(words: jax.Array, bit: int) -> jax.Array:
    """Booleans: bit `bit` of each word."""
    return (jnp.right_shift(words, jnp.uint32(bit)) & jnp.uint32(1)) > 0
