"""The packed engine: kernels against float references, and whole zoo models against their
training model's eval forward pass."""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.bench.packed import random_variables
from bnnx.export import tensor_entries, write_export
from bnnx.layers import flat, unflat
from bnnx.models import ModelConfig, build_model
from bnnx.packed import kernels
from bnnx.packed.bits import pack_kernel, pack_rows, unpack_rows_np
from bnnx.packed.engine import load, packed_apply

RNG = np.random.default_rng(0)
NHWC = ("NHWC", "HWIO", "NHWC")


def levels(shape, ternary=False):
    values = np.where(RNG.random(shape) < 0.5, -1.0, 1.0)
    if ternary:
        values = np.where(RNG.random(shape) < 0.3, 0.0, values)
    return values.astype(np.float32)


def planes_of(kernel, ternary):
    return {name: jnp.asarray(words) for name, words in pack_kernel(kernel, ternary).items()}


def test_activation_bits_pack_like_the_kernels_and_back():
    bits = RNG.random((3, 70)) < 0.5
    words = np.asarray(pack_rows(jnp.asarray(bits)))
    assert words.shape == (3, 3) and words.dtype == np.uint32
    np.testing.assert_array_equal(unpack_rows_np(words, 70), bits)
    np.testing.assert_array_equal(words[:, 0], (bits[:, :32] * (1 << np.arange(32, dtype=np.uint64))).sum(-1))


@pytest.mark.parametrize("ternary", [False, True])
@pytest.mark.parametrize("k", [1, 31, 70, 256])
def test_dense_kernels_equal_the_float_dot(ternary, k):
    w = levels((k, 5), ternary)
    x = RNG.normal(size=(9, k)).astype(np.float32)
    x[0, 0] = 0.0  # sign(0) = +1
    signs = np.where(x >= 0, 1.0, -1.0)
    got = np.asarray(jax.jit(lambda b, p: kernels.xnor_dense(b, p, k))(jnp.asarray(x >= 0), planes_of(w, ternary)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, (signs @ w).astype(np.int32))  # integer arithmetic: exact
    np.testing.assert_allclose(np.asarray(kernels.select_dense(jnp.asarray(x), planes_of(w, ternary))), x @ w,
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("ternary", [False, True])
@pytest.mark.parametrize("padding,strides", [("SAME", (1, 1)), ((1, 1), (2, 2)), ("VALID", (1, 1)), ("SAME", (2, 2))])
def test_conv_kernels_equal_the_float_conv_with_zero_padding(ternary, padding, strides):
    w = levels((3, 3, 40, 6), ternary)
    x = RNG.normal(size=(2, 7, 6, 40)).astype(np.float32)
    pads = kernels.conv_pads((7, 6), (3, 3), strides, padding)
    signs = np.where(x >= 0, 1.0, -1.0).astype(np.float32)
    reference = jax.lax.conv_general_dilated(signs, w, strides, pads, dimension_numbers=NHWC)
    got = kernels.xnor_conv(jnp.asarray(x >= 0), planes_of(w, ternary), w.shape, strides, pads)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(reference).astype(np.int32))
    reference = jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=NHWC)
    got = kernels.select_conv(jnp.asarray(x), planes_of(w, ternary), w.shape, strides, pads)
    np.testing.assert_allclose(np.asarray(got), np.asarray(reference), rtol=1e-5, atol=1e-4)


# ---- whole models ------------------------------------------------------------------------

CIFAR = (32, 32, 3)
FAMILIES = {  # small variants; input shape and model options
    "mlp": ((8, 8, 1), {"hidden": (40, 33, 16)}),
    "convnet": ((8, 8, 1), {"widths": (8, 12, 8)}),
    "binarynet": ((16, 16, 3), {"width_multiplier": 1 / 16}),
    "resnet20": ((16, 16, 3), {"width_multiplier": 0.25}),
    "resnet18": (CIFAR, {"width_multiplier": 1 / 16}),
    "resnet50": (CIFAR, {"width_multiplier": 1 / 16}),
    "googlenet": ((16, 16, 3), {"width_multiplier": 1 / 16}),
    "birealnet18": (CIFAR, {"width_multiplier": 1 / 16}),
    "reactnet_a": (CIFAR, {"width_multiplier": 1 / 8}),
}
VARIANTS = {  # quantization settings, each on the cheap families
    "w1a1": {},
    "w1a32": {"binary_activations": False},
    "ternary": {"kernel_quantizer": "ternary"},
    "mean_abs": {"scaling": "mean_abs"},
    "learned": {"scaling": "learned", "kernel_quantizer": "approx_sign"},
}
CASES = [(family, "w1a1") for family in FAMILIES] + [
    (family, variant) for family in ("mlp", "convnet") for variant in VARIANTS if variant != "w1a1"]
FOLDED = {  # the layers whose input bits come from a BN folded into integer thresholds
    "mlp": r"^QuantDense_2$",  # dense → BN → hardtanh → dense; QuantDense_1 takes the real first layer's
    "convnet": r"^QuantConv_2$",  # through hardtanh and a max-pool
    "binarynet": r"^(QuantConv_[2-5]|QuantDense_[01])$",  # max-pools before the BN too
    "resnet20": r"/QuantConv_1$",  # the block's second conv; the first takes the residual sum
    "resnet18": r"/QuantConv_1$",
    "resnet50": r"/QuantConv_[12]$",
    "googlenet": r"^(conv3|inception3a)/|/ConvBN_[13]/",  # not the convs that take a concatenation
    "birealnet18": None,  # every binary conv takes a residual sum
    "reactnet_a": None,  # ... through a learned shift
}


def test_explicit_zero_padding_is_valid_padding():
    """Explicit pads reach the kernels as the same pads a padding name gives (so the conv cases
    above, which run on the pads, need not repeat VALID as ((0, 0), (0, 0)))."""
    assert kernels.conv_pads((7, 6), (3, 3), (1, 1), ((0, 0), (0, 0))) == [(0, 0), (0, 0)]
    assert kernels.conv_pads((7, 6), (3, 3), (1, 1), (0, 0)) == kernels.conv_pads((7, 6), (3, 3), (1, 1), "VALID")
    assert kernels.conv_pads((7, 6), (3, 3), (2, 2), (1, 1)) == [(1, 1), (1, 1)]


def export_model(config: ModelConfig, shape, tmp_path, seed=0):
    model = build_model(config, num_classes=10)
    x = jnp.asarray(np.random.default_rng(seed + 1).normal(size=(6, *shape)), jnp.float32)
    variables = random_variables(model, x, seed)
    fields = dataclasses.asdict(config)
    info = {"model": {**{k: v for k, v in fields.items() if k != "options"}, **fields["options"]},
            "num_classes": 10, "input_shape": list(shape)}
    write_export(tmp_path / "model.npz", tensor_entries(variables, model.policy), info)
    return model, variables, x


@pytest.mark.parametrize("family,variant", CASES)
def test_packed_logits_equal_the_training_models_eval_logits(family, variant, tmp_path):
    shape, options = FAMILIES[family]
    config = ModelConfig(name=family, options=options, **VARIANTS[variant])
    model, variables, x = export_model(config, shape, tmp_path)
    expected = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))

    packed_model, packed, manifest = load(tmp_path / "model.npz")
    assert packed.layers, "no layer was packed"
    pattern = FOLDED[family] if config.binary_activations else None
    assert set(packed.folds) == {layer for layer in packed.layers if pattern and re.search(pattern, layer)}
    assert not any(path[-1] == "kernel" and "/".join(path[:-1]) in packed.layers
                   for path in flat(packed.variables["params"]))  # packed kernels never become floats
    got = np.asarray(jax.jit(lambda p, x: packed_apply(packed_model, p, x))(packed, x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(np.argmax(got, -1), np.argmax(expected, -1))


def compiled_batch_norms(model, packed, x) -> set[str]:
    """The BatchNorms whose rsqrt is still in the optimized program."""
    text = jax.jit(lambda p, x: packed_apply(model, p, x)).lower(packed, x).compile().as_text()
    return set(re.findall(r'rsqrt\(.*op_name="[^/"]*/[^/"]*/([^"]*BatchNorm_\d+)/rsqrt"', text))  # jit(f)/Model/path


def test_a_folded_batch_norm_leaves_the_compiled_program(tmp_path):
    shape, options = FAMILIES["binarynet"]
    _, _, x = export_model(ModelConfig(name="binarynet", options=options), shape, tmp_path)
    model, folded, _ = load(tmp_path / "model.npz")
    unfolded = load(tmp_path / "model.npz", fold=False)[1]
    dropped = {fold.batch_norm for fold in folded.folds.values()}
    assert len(dropped) == 6
    assert dropped <= compiled_batch_norms(model, unfolded, x)
    assert not dropped & compiled_batch_norms(model, folded, x)


def test_folding_is_refused_where_the_sign_cannot_be_traced_to_a_batch_norm(tmp_path):
    """PReLU's slope is a learned parameter, so the bit is not proven to be the BN's; a BN whose
    bit depends on FMA contraction is refused with its reason; both still equal the float model."""
    from bnnx.packed.engine import fold_thresholds
    from tests.test_fold import fma_dependent_channel

    shape, options = FAMILIES["mlp"]
    model, variables, x = export_model(ModelConfig(name="mlp", options={**options, "activation": "prelu"}),
                                       shape, tmp_path)
    packed_model, packed, _ = load(tmp_path / "model.npz")
    assert not packed.folds
    expected = model.apply(variables, x, train=False)
    got = jax.jit(lambda p, x: packed_apply(packed_model, p, x))(packed, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-5, atol=1e-4)

    model, variables, x = export_model(ModelConfig(name="mlp", options=options), shape, tmp_path)
    scale, gamma, beta, mean, var = fma_dependent_channel()
    params, stats = dict(flat(variables["params"])), dict(flat(variables["batch_stats"]))
    for tree, name, value in (
        (params, "scale", gamma),
        (params, "bias", beta),
        (stats, "mean", mean),
        (stats, "var", var),
    ):
        tree[("BatchNorm_1", name)] = tree[("BatchNorm_1", name)].at[0].set(value)
    variables = {**variables, "params": unflat(params), "batch_stats": unflat(stats)}
    fields = dataclasses.asdict(ModelConfig(name="mlp", options=options))
    write_export(tmp_path / "model.npz", tensor_entries(variables, model.policy),
                 {"model": {"name": "mlp", **fields["options"]}, "num_classes": 10})
    packed_model, packed, _ = load(tmp_path / "model.npz")
    folds, refused = fold_thresholds(packed_model, packed, shape)
    assert not folds and "FMA" in refused["QuantDense_2"]


# ---- the bench's packed cases (their figures go to bench.json; here only their accounting) ----

def test_export_size_is_the_summarys_packed_bytes_plus_accounted_extras():
    from bnnx.bench.packed import export_size_case

    result = export_size_case("convnet", "digits")
    row = result.row()
    extras = ("batch_stats_bytes", "fold_threshold_bytes", "quant_bytes", "word_padding_bytes", "manifest_bytes",
              "zip_and_npy_headers_bytes")
    assert row["file_bytes"] == row["summary_packed_bytes"] + sum(row[key] for key in extras)
    # 3×3 taps of 16 and 32 channels: each tap's channels start a 32-bit word (16 → 32 bits wasted)
    assert row["word_padding_bytes"] == 32 * 9 * 16 // 8
    # as `bnnx export` writes it: the BN between the two binary convs folds, an int32 multiplier
    # and threshold for each of the 32 output channels of its producer
    assert row["fold_threshold_bytes"] == 32 * 2 * 4
    assert row["unit"] == "x" and row["met"] == (row["measured"] <= row["target"]) == result.met


def test_speed_rows_time_layers_whose_outputs_are_equal():
    from bnnx.bench.packed import conv_case, dense_case, fold_case

    for result in (dense_case(batch=2, features=64, repeats=1), conv_case(batch=1, size=4, channels=32, repeats=1)):
        row = result.row()
        assert row["outputs_equal"] is True
        assert row["float32_ms"] > 0 and row["packed_ms"] > 0 and row["met"] == (row["measured"] >= row["target"])
    row = fold_case("convnet", "digits", batch=2, repeats=1).row()  # the same engine and export, BN folded or not
    assert row["outputs_equal"] is True and row["folded_layers"] == ["QuantConv_2"]
    assert row["unfolded_ms"] > 0 and row["folded_ms"] > 0 and row["target"] is None and row["met"] is None


def test_layers_with_masks_off_run_as_the_training_model_runs_them(tmp_path):
    """Input mask 0 (PPT's and ILB's real phases): real inputs, sign-select; a per-weight kernel
    mask (RPR's relaxed weights): stored as float, run by the float layer inside the packed model."""
    from bnnx.layers import set_quant

    config = ModelConfig(name="mlp", options={"hidden": (24, 24, 24, 24)})
    model = build_model(config, num_classes=10)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 8, 8, 1)), jnp.float32)
    variables = random_variables(model, x, seed=2)
    relaxed = (np.random.default_rng(3).random((24, 24)) < 0.5).astype(np.float32)
    quant = set_quant(variables["quant"], "input_mask", 0.0, layers=[("QuantDense_1",)])
    variables["quant"] = set_quant(quant, "kernel_mask", relaxed, layers=[("QuantDense_2",)])
    write_export(
        tmp_path / "m.npz",
        tensor_entries(variables, model.policy),
        {"model": {"name": "mlp", "hidden": [24] * 4}, "num_classes": 10},
    )
    packed_model, packed, _ = load(tmp_path / "m.npz")
    assert set(packed.layers) == {"QuantDense_1", "QuantDense_3"}
    assert not packed.layers["QuantDense_1"].binary_inputs and packed.layers["QuantDense_3"].binary_inputs
    expected = np.asarray(model.apply(variables, x, train=False))
    got = np.asarray(jax.jit(lambda p, x: packed_apply(packed_model, p, x))(packed, x))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
