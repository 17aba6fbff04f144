"""Statistics of binary 3×3 kernels: which of the 512 sign patterns a layer uses.

The Stable signs / QBN paper observes that the binary 3×3 kernels of a trained binary
weight network concentrate on a few of the 2⁹ = 512 possible patterns, so an index into a
small codebook can store them in fewer than 9 bits. A *kernel* is one (in, out) 3×3 slice of
an HWIO kernel. Its pattern is the 9-bit code

    code = Σ_j 1{w_j ≥ 0} · 2^j,   j = 3·row + col   (sign(0) = +1, as everywhere in bnnx)

A pattern and its negation (code ⊕ 511) may be merged into one class, represented by the
smaller of the two codes.
"""

from __future__ import annotations

import numpy as np

from bnnx.layers import flat, param_labels

BITS = 9
PATTERNS = 2 ** BITS
ALL_ONES = PATTERNS - 1
COVERAGE_KS = tuple(2 ** i for i in range(BITS + 1))  # 1, 2, 4, …, 512
_PLACE_VALUES = 1 << np.arange(BITS)


def is_3x3_conv(kernel) -> bool:
    return np.ndim(kernel) == 4 and tuple(np.shape(kernel)[:2]) == (3, 3)


def encode(kernel) -> np.ndarray:
    """HWIO kernel (3, 3, I, O) → one 9-bit code per (in, out) slice, in (I, O) order, flattened."""
    kernel = np.asarray(kernel)
    if not is_3x3_conv(kernel):
        raise ValueError(f"expected a (3, 3, in, out) kernel, got shape {kernel.shape}")
    slices = np.transpose(kernel, (2, 3, 0, 1)).reshape(-1, BITS)
    return (slices >= 0).astype(np.int64) @ _PLACE_VALUES


def decode(codes) -> np.ndarray:
    """9-bit codes → their ±1 3×3 tiles, shape (n, 3, 3)."""
    bits = (np.asarray(codes, np.int64)[:, None] >> np.arange(BITS)) & 1
    return (2.0 * bits - 1.0).reshape(-1, 3, 3)


def tiles_to_kernel(tiles: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(I·O, 3, 3) tiles back to an HWIO kernel of `shape` (the inverse of encode's layout)."""
    _, _, fan_in, fan_out = shape
    return np.transpose(tiles.reshape(fan_in, fan_out, 3, 3), (2, 3, 0, 1))


def negate(codes) -> np.ndarray:
    return np.asarray(codes) ^ ALL_ONES


def canonical(codes) -> np.ndarray:
    """A pattern and its negation share one class: the smaller code."""
    codes = np.asarray(codes)
    return np.minimum(codes, negate(codes))


def histogram(codes, merge_negation: bool = False) -> np.ndarray:
    """Counts per pattern (512 bins); merged counts sit on each class's smaller code."""
    codes = canonical(codes) if merge_negation else np.asarray(codes)
    return np.bincount(codes, minlength=PATTERNS)


def ranked(counts: np.ndarray) -> np.ndarray:
    """Patterns that occur, most frequent first (ties: smaller code first)."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    return order[counts[order] > 0]


def top_k_coverage(counts: np.ndarray, ks=COVERAGE_KS) -> dict[int, float]:
    """Share of kernels whose pattern is among the k most frequent ones."""
    total = max(int(counts.sum()), 1)
    cumulative = np.cumsum(np.sort(counts)[::-1])
    return {int(k): float(cumulative[min(k, len(cumulative)) - 1] / total) for k in ks}


def entropy_bits(counts: np.ndarray) -> float:
    """H = −Σ p log₂ p over patterns, in bits per kernel (9 at most; 1 bit per weight = 9)."""
    p = counts[counts > 0] / max(int(counts.sum()), 1)
    return float(-(p * np.log2(p)).sum())


def random_reference(kernels: int, merge_negation: bool = False, draws: int = 20, seed: int = 0) -> dict:
    """The same statistics for as many kernels drawn uniformly from the 512 patterns (mean of `draws`).

    With few kernels per pattern, even uniform signs look concentrated (e.g. 512 kernels
    use only ~324 patterns); a layer shows real concentration only beyond this reference.
    """
    rng = np.random.default_rng(seed)
    samples = [histogram(rng.integers(0, PATTERNS, kernels), merge_negation) for _ in range(draws)]
    coverage = [top_k_coverage(counts) for counts in samples]
    return {"distinct_patterns": float(np.mean([(c > 0).sum() for c in samples])),
            "entropy_bits_per_kernel": float(np.mean([entropy_bits(c) for c in samples])),
            "top_k_coverage": {str(k): float(np.mean([c[k] for c in coverage])) for k in COVERAGE_KS}}


def kernel_stats(kernel, merge_negation: bool = False, top: int = 16) -> dict:
    """One layer's pattern statistics, as written to kernels.json."""
    counts = histogram(encode(kernel), merge_negation)
    order = ranked(counts)
    return {
        "shape": list(np.shape(kernel)),
        "kernels": int(counts.sum()),
        "distinct_patterns": int(len(order)),
        "merge_negation": merge_negation,
        "entropy_bits_per_kernel": entropy_bits(counts),
        "top_k_coverage": {str(k): v for k, v in top_k_coverage(counts).items()},
        "top_patterns": [{"code": int(c), "count": int(counts[c])} for c in order[:top]],
        "sorted_counts": counts[order].tolist(),
        "uniform_random_reference": random_reference(int(counts.sum()), merge_negation),
    }


def binary_conv_paths(params, quant) -> dict[str, tuple]:
    """Parameter paths of the binary-bound 3×3 conv kernels, by layer name ('/'-joined module path)."""
    labels = flat(param_labels(params, quant))
    return {"/".join(path[:-1]): path for path, kernel in flat(params).items()
            if labels[path] == "binary" and is_3x3_conv(kernel)}


def binary_conv_kernels(params, quant) -> dict[str, np.ndarray]:
    flat_params = flat(params)
    return {name: np.asarray(flat_params[path]) for name, path in binary_conv_paths(params, quant).items()}
