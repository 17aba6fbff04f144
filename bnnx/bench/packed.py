"""Packed vs float32 inference and export size: the packed cases of `bnnx bench`.

Each speed case times one layer as a network runs it: the float32 layer on float inputs and
weights against the packed layer on the same float inputs (their sign bits packed inside the
timed call) and the kernel's words. Calls alternate, so a shared machine's load hits both
alike; the figure is the ratio of medians.
"""

from __future__ import annotations

import io
import math
import tempfile
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.bench.common import Result, seconds_per_call
from bnnx.packed import kernels
from bnnx.packed.bits import pack_kernel

NHWC = ("NHWC", "HWIO", "NHWC")


def median_ms(functions: dict, repeats: int) -> dict[str, float]:
    """Median wall time (ms) of each zero-argument function, called in turn `repeats` times
    after one warm-up (compile) call each."""
    for function in functions.values():
        jax.block_until_ready(function())
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            times[name].append(seconds_per_call(function))
    return {name: 1000 * float(np.median(values)) for name, values in times.items()}


def _speed_row(name: str, float_fn, packed_fn, target: float | None, repeats: int, labels=("float32", "packed"),
               **shape) -> Result:
    """`labels[0]`'s time over `labels[1]`'s (calling `float_fn` and `packed_fn`)."""
    ms = median_ms(dict(zip(labels, (float_fn, packed_fn))), repeats)
    ratio = ms[labels[0]] / ms[labels[1]]
    equal = bool(np.array_equal(np.asarray(float_fn()), np.asarray(packed_fn())))  # it times the same layer
    return Result(name, round(ratio, 3), "x", target, figures={
        **shape, **{f"{label}_ms": round(ms[label], 3) for label in labels}, "outputs_equal": equal,
        "repeats": repeats, "figure": f"{labels[0]} time / {labels[1]} time (speedup)"})


def _levels(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def dense_case(batch=64, features=4096, target=4.0, repeats=15) -> Result:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, features)), jnp.float32)
    w = _levels(rng, (features, features))
    planes = {k: jnp.asarray(v) for k, v in pack_kernel(w, ternary=False).items()}
    w = jnp.asarray(w)
    float_dense = jax.jit(lambda x, w: jnp.dot(jnp.where(x >= 0, 1.0, -1.0), w))
    packed_dense = jax.jit(lambda x, p: kernels.xnor_dense(x >= 0, p, features))
    return _speed_row(f"packed-dense{features}-w1a1-b{batch}", lambda: float_dense(x, w),
                      lambda: packed_dense(x, planes), target, repeats, batch=batch, kernel=[features, features])


def conv_case(batch=64, size=16, channels=256, target=2.0, repeats=7) -> Result:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(batch, size, size, channels)), jnp.float32)
    shape = (3, 3, channels, channels)
    w = _levels(rng, shape)
    planes = {k: jnp.asarray(v) for k, v in pack_kernel(w, ternary=False).items()}
    w = jnp.asarray(w)
    pads = kernels.conv_pads((size, size), (3, 3), (1, 1), "SAME")
    float_conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
        jnp.where(x >= 0, 1.0, -1.0), w, (1, 1), pads, dimension_numbers=NHWC))
    packed_conv = jax.jit(lambda x, p: kernels.xnor_conv(x >= 0, p, shape, (1, 1), pads))
    return _speed_row(f"packed-conv3x3-{channels}-w1a1-{size}x{size}-b{batch}", lambda: float_conv(x, w),
                      lambda: packed_conv(x, planes), target, repeats, batch=batch, kernel=list(shape))


def random_variables(model, x, seed: int = 0) -> dict:
    """Random values in every variable of `model` (BN statistics included; quant masks 1), from
    an abstract init: nothing is compiled."""
    from bnnx.layers import flat, unflat

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    rng = np.random.default_rng(seed)

    def value(path, shape):
        if path[-1] == "kernel":
            return rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        if path[-1] in ("scale", "var"):
            return rng.uniform(0.5, 2.0, shape)
        return rng.normal(size=shape) * (0.5 if path[-1] == "mean" else 0.1)

    variables = {}
    for collection, tree in shapes.items():
        leaves = flat(tree)
        if leaves:
            make = (lambda p, s: np.ones(s)) if collection == "quant" else value
            variables[collection] = unflat({p: jnp.asarray(make(p, v.shape).astype(np.float32))  # a cast on the host
                                            for p, v in leaves.items()})  # compiles nothing per shape
    return variables


def export_size_case(model_name="binarynet", dataset="cifar10", target=1.01) -> Result:
    """File bytes of a random-valued export, written as `bnnx export` writes one (the folded BNs'
    thresholds included), against `bnnx.summary`'s packed bytes plus what inference needs beyond
    the parameters the summary counts: the BN running statistics and the fold thresholds; and
    where the rest goes: quant scalars, word padding (each conv tap's channels start a word), the
    manifest and the zip/npy headers."""
    from bnnx.export import export_with_folds, tensor_entries
    from bnnx.models import ModelConfig, build_model
    from bnnx.summary import summarize

    config = ModelConfig(name=model_name)
    summary = summarize(config, dataset)
    model = build_model(config, summary.num_classes)
    variables = random_variables(model, jnp.zeros((1, *summary.input_shape), jnp.float32))
    info = {"model": {"name": model_name}, "num_classes": summary.num_classes, "input_shape": list(summary.input_shape)}
    data, manifest = export_with_folds(tensor_entries(variables, model.policy), info)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        manifest_bytes = archive.getinfo("manifest.npy").file_size
    file_bytes, summary_bytes = len(data), summary.packed_bits // 8
    by_collection = {c: sum(4 * math.prod(np.shape(v)) for v in jax.tree.leaves(variables.get(c, {})))
                     for c in ("batch_stats", "quant")}
    fold_bytes = sum(8 * math.prod(t["shape"]) for t in manifest["tensors"] if t["name"].startswith("fold/"))
    words = manifest["bytes"]["stored"] - fold_bytes - sum(4 * math.prod(t["shape"]) for t in manifest["tensors"]
                                                           if t["encoding"] == "float32")
    padding = words - sum(layer.params * (2 if layer.precision == "ternary" else 1) // 8
                          for layer in summary.layers if layer.precision != "real")
    ratio = file_bytes / (summary_bytes + by_collection["batch_stats"] + fold_bytes)
    return Result(f"export-size-{model_name}-{dataset}", round(ratio, 5), "x", target, "lower", {
        "file_bytes": file_bytes, "summary_packed_bytes": summary_bytes, "overhead_bytes": file_bytes - summary_bytes,
        "batch_stats_bytes": by_collection["batch_stats"], "fold_threshold_bytes": fold_bytes,
        "quant_bytes": by_collection["quant"], "word_padding_bytes": padding, "manifest_bytes": manifest_bytes,
        "zip_and_npy_headers_bytes": file_bytes - manifest["bytes"]["stored"] - manifest_bytes,
        "figure": "export file bytes / (summary packed bytes + BN running statistics + fold thresholds)"})


def _random_export(model_name: str, dataset: str, batch: int, folder: str):
    """(model, random variables, a random batch, the path of their export in `folder`)."""
    from bnnx.export import tensor_entries, write_export
    from bnnx.models import ModelConfig, build_model
    from bnnx.summary import summarize

    summary = summarize(ModelConfig(name=model_name), dataset)
    model = build_model(ModelConfig(name=model_name), summary.num_classes)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(batch, *summary.input_shape)), jnp.float32)
    variables = random_variables(model, x[:1])
    path = Path(folder) / "export.npz"
    write_export(path, tensor_entries(variables, model.policy), {
        "model": {"name": model_name}, "num_classes": summary.num_classes, "input_shape": list(summary.input_shape)})
    return model, variables, x, path


def model_case(model_name="binarynet", dataset="cifar10", batch=64, target=1.0, repeats=5) -> Result:
    """A whole model's eval forward pass: the float model (as training evaluates it) against the
    packed engine on its export (BN folded where it can be). No target in the issue; ≥ 1 says
    packing does not lose time around the layers (first/last layers and pooling stay float)."""
    from bnnx.packed.engine import load, packed_apply

    with tempfile.TemporaryDirectory() as folder:
        model, variables, x, path = _random_export(model_name, dataset, batch, folder)
        packed_model, packed, _ = load(path)
    float_forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    packed_forward = jax.jit(lambda p, x: packed_apply(packed_model, p, x))
    result = _speed_row(f"packed-model-{model_name}-{dataset}-b{batch}", lambda: float_forward(variables, x),
                        lambda: packed_forward(packed, x), target, repeats, batch=batch)
    # logits go through float BN and real layers: equal up to rounding, and the same classes
    expected, got = np.asarray(float_forward(variables, x)), np.asarray(packed_forward(packed, x))
    result.figures["outputs_equal"] = bool(np.allclose(got, expected, rtol=1e-5, atol=1e-4)
                                           and np.array_equal(got.argmax(-1), expected.argmax(-1)))
    return result


def fold_case(model_name="binarynet", dataset="cifar10", batch=64, target=None, repeats=11) -> Result:
    """The packed engine with BN folded into integer thresholds against the same engine and export
    running every BN in float: what folding buys in one run (no target in the issue). The folded
    layers' input bits are the same, so the logits are too."""
    from bnnx.packed.engine import load, packed_apply

    with tempfile.TemporaryDirectory() as folder:
        _, _, x, path = _random_export(model_name, dataset, batch, folder)
        packed_model, folded, _ = load(path)
        unfolded = load(path, fold=False)[1]
    forward = jax.jit(lambda p, x: packed_apply(packed_model, p, x))
    return _speed_row(f"packed-fold-{model_name}-{dataset}-b{batch}", lambda: forward(unfolded, x),
                      lambda: forward(folded, x), target, repeats, labels=("unfolded", "folded"), batch=batch,
                      folded_layers=sorted(folded.folds))


CASES = {"packed-dense": dense_case, "packed-conv": conv_case, "packed-model": model_case,
         "packed-fold": fold_case, "export-size": export_size_case}


def run_packed_cases(only: str | None = None) -> list[Result]:
    return [case() for name, case in CASES.items() if only is None or only in name]
