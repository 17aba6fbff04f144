"""Quantized Binary-Kernel Networks (QBN; Stable signs / QBN paper).

For each binary 3×3 conv layer, the codebook is the K = 2^b most frequent 9-bit kernel
patterns of that layer (see kernels.py); every kernel is replaced by its nearest codeword

    c*(x) = argmin_{c ∈ C} popcount(x ⊕ c)          (Hamming distance, ties → more frequent)

With `merge_negation` the codebook holds the K/2 most frequent pattern classes, each with its
negation. Storage: b bits per kernel plus the codebook (|C|·9 bits per layer), so

    bits per weight = (Σ_l n_l·b + Σ_l |C_l|·9) / (Σ_l 9·n_l),   compression = 1 / bits per weight

against the 1 bit per weight of the binary network. Only the signs change: a latent weight
keeps its magnitude (so mean-|w| scales are unchanged) and takes the codeword's sign.
Test accuracy is measured as is and, optionally, after fine-tuning only the real parameters
(BN, scales, first and last layers) with the binary kernels frozen by the trainable mask.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.analysis.kernels import BITS, binary_conv_paths, decode, encode, histogram, negate, ranked, tiles_to_kernel
from bnnx.errors import check
from bnnx.layers import flat, param_labels, unflat

POPCOUNT = np.array([bin(i).count("1") for i in range(2 ** BITS)], np.int64)
MAX_CODEBOOK_BITS = 8


def codebook(codes: np.ndarray, size: int, merge_negation: bool = False) -> np.ndarray:
    """The `size` most frequent patterns among `codes` (fewer if fewer occur)."""
    check(size >= 1, f"codebook size must be >= 1 (got {size})")
    if not merge_negation:
        return ranked(histogram(codes))[:size]
    check(size % 2 == 0, f"with merged negations the codebook size must be even (got {size})")
    classes = ranked(histogram(codes, merge_negation=True))[:size // 2]
    return np.concatenate([classes, negate(classes)])


def nearest(codes: np.ndarray, book: np.ndarray, chunk: int = 16384) -> np.ndarray:
    """Each code's nearest codeword in Hamming distance; ties go to the earlier (more frequent)."""
    codes, book = np.asarray(codes), np.asarray(book)
    out = np.empty_like(codes)
    for begin in range(0, len(codes), chunk):  # bounded memory for layers with many kernels
        distances = POPCOUNT[codes[begin:begin + chunk, None] ^ book[None, :]]
        out[begin:begin + chunk] = book[np.argmin(distances, axis=1)]
    return out


def with_signs(kernel: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """`kernel` with each 3×3 slice's signs set to its code, magnitudes kept (0 → ±tiny)."""
    kernel = np.asarray(kernel)
    target = tiles_to_kernel(decode(codes), kernel.shape)
    magnitude = np.abs(kernel)
    negative = -np.maximum(magnitude, np.finfo(kernel.dtype).tiny)  # −0 would read as +1
    return np.where(target > 0, magnitude, negative).astype(kernel.dtype)


@dataclasses.dataclass(frozen=True)
class QuantizedLayer:
    kernels: int
    codebook_size: int
    changed_kernels: int  # kernels whose pattern is not in the codebook


def quantize_params(params, quant, size: int, merge_negation: bool = False):
    """Params with every binary 3×3 kernel mapped to its layer's `size`-pattern codebook."""
    out, layers = dict(flat(params)), {}
    for name, path in binary_conv_paths(params, quant).items():
        kernel = np.asarray(out[path])
        codes = encode(kernel)
        book = codebook(codes, size, merge_negation)
        mapped = nearest(codes, book)
        out[path] = jnp.asarray(with_signs(kernel, mapped))
        layers[name] = QuantizedLayer(len(codes), len(book), int((mapped != codes).sum()))
    return unflat(out), layers


def bits_per_weight(layers: dict[str, QuantizedLayer], index_bits: int) -> float:
    weights = sum(BITS * layer.kernels for layer in layers.values())
    stored = sum(layer.kernels * index_bits + layer.codebook_size * BITS for layer in layers.values())
    return stored / max(weights, 1)


def parse_bits(text: str) -> list[int]:
    """'1,2,8' → [1, 2, 8]; each b in 1 … 8 (K = 2^b patterns)."""
    try:
        bits = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        bits = []
    check(bool(bits) and all(1 <= b <= MAX_CODEBOOK_BITS for b in bits),
          f"--bits must be a comma-separated list of integers in 1..{MAX_CODEBOOK_BITS} (got '{text}')")
    return sorted(set(bits))


def finetune_experiment(config, dataset):
    """An experiment with the run's model and data whose method (STE) trains what is not frozen.

    Binary-weight quantizers are replaced by sign_ste: their forward pass is sign(w) at
    evaluation, and with frozen kernels the training forward must be that same sign.
    """
    from bnnx.methods.ste import STE
    from bnnx.train.experiment import build_experiment

    model = config.trained_model
    if getattr(model.policy().kernel_quantizer, "levels", None) == 2:
        model = dataclasses.replace(model, kernel_quantizer="sign_ste", kernel_quantizer_args=None)
    derived = dataclasses.replace(config, method=STE(lr=config.method.lr, schedule="cosine"), model=model,
                                  out_dir=None, resume=False,
                                  analysis=dataclasses.replace(config.analysis, signs=False))
    return build_experiment(derived, dataset=dataset)


def finetune_real(tuner, trained_state, params, epochs: int):
    """Train only the real parameters of `params` for `epochs` epochs, binary kernels frozen."""
    labels = param_labels(params, trained_state.quant)
    trainable = jax.tree.map(lambda label: jnp.asarray(0.0 if label == "binary" else 1.0), labels)
    base = tuner.state
    state = base.replace(step=jnp.zeros((), jnp.int32), params=params, batch_stats=trained_state.batch_stats,
                         quant=trained_state.quant, trainable=trainable, opt_state=base.tx.init(params))
    state = jax.tree.map(jnp.copy, state)  # the train step donates its input; keep the originals
    config = tuner.config
    for epoch in range(epochs):
        for batch in tuner.dataset.train_batches(epoch, config.batch_size, config.seed):
            state, _ = tuner.train_step(state, batch, tuner.loss)
    return state


def run_qbn(experiment, state, bits: list[int], merge_negation: bool = False, finetune: int = 0,
            on_result=None) -> dict:
    """Accuracy vs bits per weight for each b in `bits`; the content of qbn.json."""
    from bnnx.train.step import evaluate

    check(all(1 <= b <= MAX_CODEBOOK_BITS for b in bits),
          f"codebook bits must be in 1..{MAX_CODEBOOK_BITS} (got {bits})")
    baseline = evaluate(experiment, state)["test_accuracy"]
    tuner = finetune_experiment(experiment.config, experiment.dataset) if finetune else None
    rows, layers = [], {}
    for b in bits:
        params, layers = quantize_params(state.params, state.quant, 2 ** b, merge_negation)
        quantized = state.replace(params=params)
        bpw = bits_per_weight(layers, b)
        row = {"bits": b, "codebook_size": 2 ** b, "bits_per_weight": bpw, "compression_vs_1bit": 1.0 / bpw,
               "changed_kernels": sum(layer.changed_kernels for layer in layers.values()),
               "kernels": sum(layer.kernels for layer in layers.values()),
               "test_accuracy": evaluate(experiment, quantized)["test_accuracy"]}
        if tuner is not None:
            tuned = finetune_real(tuner, state, params, finetune)
            row["finetuned_test_accuracy"] = evaluate(tuner, tuned)["test_accuracy"]
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return {"baseline_test_accuracy": baseline, "finetune_epochs": finetune, "merge_negation": merge_negation,
            "index_bits_rule": "b bits per 3x3 kernel + codebook (K x 9 bits per layer)",
            "layers": sorted(layers), "results": rows}

