"""Bit-packed export: exact round trips, and an exported run that scores the run's own accuracy."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.errors import CheckpointError
from bnnx.export import tensor_entries, unpack, write_export
from bnnx.layers import flat, set_quant, unflat
from bnnx.models import ModelConfig, build_model
from bnnx.packed.bits import pack_kernel, unpack_kernel
from bnnx.packed.engine import load
from tests.shared_runs import CONVNET, trained


def test_sign_words_hold_bit_k_of_the_reduction_axis_in_word_k_div_32():
    kernel = np.ones((40, 2), np.float32)
    kernel[[1, 33], 0] = -1.0  # output 0: every bit set but bit 1 of word 0 and bit 1 of word 1
    planes = pack_kernel(kernel, ternary=False)
    assert planes["sign"].dtype == np.uint32 and planes["sign"].shape == (2, 2)
    np.testing.assert_array_equal(planes["sign"], [[0xFFFFFFFD, 0xFD], [0xFFFFFFFF, 0xFF]])


def test_sign_words_round_trip_with_an_odd_size():
    rng = np.random.default_rng(0)
    levels = np.where(rng.random((3, 3, 5, 7)) < 0.5, -1.0, 1.0).astype(np.float32)
    planes = pack_kernel(levels, ternary=False)
    assert set(planes) == {"sign"}
    assert planes["sign"].shape == (7, 9)  # each 3×3 tap's 5 input channels start a word
    np.testing.assert_array_equal(unpack_kernel(planes, levels.shape), levels)


def test_ternary_planes_round_trip_with_exact_zeros():
    levels = np.array([[-1, 0, 1], [0, 0, -1], [1, 1, 0]], np.float32)
    planes = pack_kernel(levels, ternary=True)
    assert set(planes) == {"sign", "nonzero"}
    decoded = unpack_kernel(planes, levels.shape)
    np.testing.assert_array_equal(decoded, levels)
    assert not np.signbit(decoded[levels == 0]).any()  # zeros come back as +0.0


def mlp_variables(config: ModelConfig, seed: int = 0):
    model = build_model(config, num_classes=10)
    x = jnp.asarray(np.random.default_rng(seed).normal(size=(16, 8, 8, 1)), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
    rng = np.random.default_rng(seed)
    variables = jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), jnp.float32), shapes)
    variables["batch_stats"] = jax.tree.map(lambda v: jnp.abs(v) + 0.5, variables["batch_stats"])
    variables["quant"] = jax.tree.map(jnp.ones_like, variables["quant"])
    return model, x, variables


def test_binary_kernels_are_their_signs_with_sign_zero_plus_one(tmp_path):
    config = ModelConfig(name="mlp", options={"hidden": (8, 8)})
    model, _, variables = mlp_variables(config)
    params = dict(flat(variables["params"]))
    kernel = np.array(params[("QuantDense_1", "kernel")])
    kernel[0, :3] = 0.0
    params[("QuantDense_1", "kernel")] = jnp.asarray(kernel)
    variables["params"] = unflat(params)

    manifest = write_export(tmp_path / "e.npz", tensor_entries(variables, model.policy), {"note": "x"})
    exported = unpack(tmp_path / "e.npz")
    encodings = {t["name"]: t["encoding"] for t in manifest["tensors"]}
    assert encodings["params/QuantDense_1/kernel"] == "sign_words"
    assert encodings["params/QuantDense_0/kernel"] == encodings["params/QuantDense_2/kernel"] == "float32"
    np.testing.assert_array_equal(exported.decoded("params/QuantDense_1/kernel"), np.where(kernel >= 0, 1.0, -1.0))
    assert (exported.decoded("params/QuantDense_1/kernel")[0, :3] == 1.0).all()
    for path, value in flat(variables["params"]).items():
        if path != ("QuantDense_1", "kernel"):
            np.testing.assert_array_equal(exported.decoded("/".join(("params", *path))), np.asarray(value))
    assert manifest["note"] == "x" and manifest["bytes"]["stored"] < manifest["bytes"]["float32"]


def test_exported_variables_reproduce_the_forward_pass(tmp_path):
    """Ternary kernels with mean|w| scales, one binary-bound layer relaxed per weight (RPR's masks)."""
    config = ModelConfig(name="mlp", options={"hidden": (8, 8, 8)}, kernel_quantizer="ternary", scaling="mean_abs")
    model, x, variables = mlp_variables(config, seed=3)
    relaxed = np.zeros((8, 8), np.float32)
    relaxed[::2] = 1.0  # half of this layer's weights quantized, half real
    variables["quant"] = set_quant(variables["quant"], "kernel_mask", relaxed, layers=[("QuantDense_2",)])

    manifest = write_export(tmp_path / "e.npz", tensor_entries(variables, model.policy), {})
    encodings = {t["name"]: t["encoding"] for t in manifest["tensors"]}
    assert encodings["params/QuantDense_1/kernel"] == "ternary_words"
    assert encodings["params/QuantDense_2/kernel"] == "float32"
    exported = unpack(tmp_path / "e.npz")
    assert set(np.unique(exported.decoded("params/QuantDense_1/kernel"))) <= {-1.0, 0.0, 1.0}

    np.testing.assert_array_equal(np.asarray(model.apply(exported.variables(), x)),
                                  np.asarray(model.apply(variables, x)))


def test_unpack_rejects_a_file_that_is_no_export(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError):
        unpack(bad)


def test_exported_run_scores_the_runs_final_test_accuracy(digits, run_cli, tmp_path):
    config, result = trained(digits, *CONVNET)  # shared, read-only: the export goes to tmp_path

    out = tmp_path / "convnet.npz"
    code, text = run_cli("export", str(result.run_dir), "--out", str(out))
    assert code == 0, text
    exported = unpack(out)
    binary = [t for t in exported.manifest["tensors"] if t["encoding"] == "sign_words"]
    assert len(binary) == 2  # the two hidden 3×3 convs
    for tensor in binary:
        assert set(np.unique(exported.decoded(tensor["name"]))) == {-1.0, 1.0}

    logits = jax.jit(exported.model().apply)(exported.variables(), digits.normalize(digits.test_images))
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == digits.test_labels))
    assert accuracy == result.summary["test_accuracy"]
    assert accuracy > 0.3  # it learned something (chance is 0.1), so the match is not by luck

    # the BN between the two binary convs, as int32 thresholds on QuantConv_1's sums: the engine's own
    folds = load(out)[1].folds
    assert list(exported.thresholds) == list(folds) == ["QuantConv_2"]
    fold = next(t for t in exported.manifest["tensors"] if t["name"] == "fold/QuantConv_2")
    width = config.model.options["widths"][1]  # QuantConv_1's output channels
    assert (fold["producer"], fold["batch_norm"], fold["shape"]) == ("QuantConv_1", "BatchNorm_1", [width])
    for name in ("multiplier", "threshold"):
        assert exported.thresholds["QuantConv_2"][name].dtype == np.int32
        np.testing.assert_array_equal(exported.thresholds["QuantConv_2"][name], getattr(folds["QuantConv_2"], name))


def test_an_export_of_the_previous_format_still_reads(tmp_path):
    import io
    import json

    from bnnx.export import MANIFEST_KEY, export_bytes

    model, x, variables = mlp_variables(ModelConfig(name="mlp", options={"hidden": (8, 8)}))
    with np.load(io.BytesIO(export_bytes(tensor_entries(variables, model.policy), {})[0])) as data:
        arrays = {key: data[key] for key in data.files}
    manifest = json.loads(arrays.pop(MANIFEST_KEY).tobytes())
    assert "ints" not in arrays  # no folds, no int32 entry: the layout of bnnx-export/2
    manifest["format"] = "bnnx-export/2"
    np.savez(tmp_path / "old.npz", **arrays, **{MANIFEST_KEY: np.frombuffer(json.dumps(manifest).encode(), np.uint8)})
    exported = unpack(tmp_path / "old.npz")
    assert not exported.thresholds
    np.testing.assert_array_equal(
        np.asarray(model.apply(exported.variables(), x)), np.asarray(model.apply(variables, x))
    )


def test_export_of_a_folder_without_a_run_is_one_line(run_cli, tmp_path):
    code, text = run_cli("export", str(tmp_path))
    assert code == 2 and text.strip().count("\n") == 0 and "not a bnnx run" in text


def test_export_without_checkpoint_is_one_line(compose, run_cli, tmp_path):
    from omegaconf import OmegaConf

    from bnnx.config import config_to_dict
    from bnnx.io import write_text

    config = dataclasses.replace(compose("model=mlp", "model.hidden=[8]"), out_dir=str(tmp_path))
    write_text(tmp_path / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config_to_dict(config))))
    code, text = run_cli("export", str(tmp_path))
    assert code == 2 and "no checkpoint" in text


def test_export_needs_only_the_checkpoint_not_the_data_set(compose, run_cli, tmp_path):
    from bnnx.data.base import ArrayDataset
    from bnnx.train.loop import train

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (96, 28, 28, 1)).astype(np.uint8)
    labels = (images[:, :14].mean(axis=(1, 2, 3)) > images[:, 14:].mean(axis=(1, 2, 3))).astype(np.int32)
    data = ArrayDataset("mnist", images[:64], labels[:64], images[64:], labels[64:], 10)
    run_dir = tmp_path / "run"
    config = compose("dataset=mnist", f"dataset.data_dir={tmp_path / 'not_prepared'}", "model.hidden=[16]",
                     "epochs=1", "batch_size=32", f"out_dir={run_dir}")
    result = train(config, dataset=data)

    code, text = run_cli("export", str(run_dir))  # MNIST is not prepared anywhere here
    assert code == 0, text
    exported = unpack(run_dir / "export.npz")
    assert exported.manifest["input_shape"] == [28, 28, 1] and exported.manifest["num_classes"] == 10
    logits = exported.model().apply(exported.variables(), data.normalize(data.test_images))
    accuracy = float(np.mean(np.argmax(np.asarray(logits), -1) == data.test_labels))
    assert accuracy == result.summary["test_accuracy"]
