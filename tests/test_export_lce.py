"""`bnnx export RUN --format lce`: the .tflite runs in Larq Compute Engine's own interpreter (its
x86 reference kernels, in the NumPy 1.x environment `make lce-env` builds) with bnnx eval's logits:
trained runs through the CLI, and the residual families from random values (BN statistics, shifts
and PReLU slopes included), which reach every op in seconds without training."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.bench.packed import random_variables
from bnnx.errors import ConfigError
from bnnx.export import export_run, exported, tensor_entries, unpack
from bnnx.export.lce import lce_bytes
from bnnx.layers import record_layers
from bnnx.models import build_model
from tests.shared_runs import CONVNET, trained

ROOT = Path(__file__).resolve().parents[1]
LCE_PYTHON = ROOT / ".venv-lce" / "bin" / "python"
RUNNER = ROOT / "bnnx" / "export" / "lce_interpreter.py"


@pytest.fixture(scope="module")
def lce_python():
    """LCE's interpreter environment: made here when missing (pip, ~10 s from the cache), then reused."""
    venv_bin = Path(sys.executable).parent
    subprocess.run(["make", "-s", "lce-env", f"BIN={venv_bin}"], cwd=ROOT, check=True, capture_output=True)
    return LCE_PYTHON


def lce_logits(lce_python, model: Path, inputs: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "x.npy", inputs)
    subprocess.run([str(lce_python), str(RUNNER), str(model), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                   check=True, capture_output=True)
    return np.load(tmp_path / "y.npy")


TRAINING = ("epochs=2", "batch_size=32", "method.lr=0.01")


def expected_bytes(manifest: dict) -> int:
    """Packed bits (one bit per binary weight, channels padded to 32) plus the real parameters
    (float32, a BatchNorm as its two affine factors)."""
    packed = sum(4 * sum(np.prod(where[3]) for where in t["arrays"].values())
                 for t in manifest["tensors"] if t["encoding"] == "sign_words")
    real = sum(4 * np.prod(t["shape"]) for t in manifest["tensors"] if t["encoding"] == "float32"
               and t["name"].startswith("params/") and not t.get("derived"))
    return int(packed + real)


# The flatbuffer's own tables (tensor shapes, ops, the custom ops' FlexBuffer options, 16-byte aligned
# buffers) take ~100 bytes a tensor: under 5 % of the 88 KB MLP, ~3 KB over the ConvNet's weights,
# ~6 KB over the 11 KB BinaryNet's, ~14 KB over the 19 KB ResNet-20's (153 tensors).
@pytest.mark.parametrize("overrides, metadata", [
    (("model=mlp", *TRAINING), 0),
    (CONVNET, 4096),  # the digits ConvNet the other export tests train (tests/shared_runs.py)
    (("model=binarynet", "model.width_multiplier=0.0625", *TRAINING), 8192),
    # W1A1 (the zoo's ResNets keep real activations by default); hardtanh, as ReLU would make every sign +1
    (("model=resnet20", "model.binary_activations=true", "model.width_multiplier=0.5", "model.activation=hardtanh",
      *TRAINING), 16384)], ids=["mlp", "convnet", "binarynet", "resnet20"])
def test_lce_flatbuffer_reproduces_bnnx_eval_in_lces_interpreter(overrides, metadata, digits, run_cli, lce_python,
                                                                 tmp_path):
    config, result = trained(digits, *overrides)  # read-only: every output goes to tmp_path
    run_dir = result.run_dir
    model = tmp_path / "m.tflite"
    code, text = run_cli("export", str(run_dir), "--format", "lce", "--out", str(model))
    assert code == 0, text

    exported = unpack(export_run(config, run_dir, tmp_path / "export.npz")[0])
    x = np.asarray(digits.normalize(digits.test_images), np.float32)
    reference = np.asarray(jax.jit(exported.model().apply)(exported.variables(), x))
    assert np.mean(np.argmax(reference, -1) == digits.test_labels) > 0.3  # it learned: chance is 0.1

    logits = lce_logits(lce_python, model, x, tmp_path)
    assert logits.shape == reference.shape
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.argmax(logits, -1), np.argmax(reference, -1))
    expected = expected_bytes(exported.manifest)
    size = model.stat().st_size
    assert expected <= size <= 1.05 * expected + metadata, (size, expected)


def test_a_family_lce_does_not_cover_is_refused_in_one_line(compose, run_cli, tmp_path):
    from omegaconf import OmegaConf

    from bnnx.config import config_to_dict
    from bnnx.io import write_text

    config = dataclasses.replace(compose("model=googlenet"), out_dir=str(tmp_path))
    write_text(tmp_path / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config_to_dict(config))))
    out = tmp_path / "m.tflite"
    code, text = run_cli("export", str(tmp_path), "--format", "lce", "--out", str(out))
    assert code == 2 and text.strip().count("\n") == 0 and "mlp, convnet" in text and "'googlenet'" in text, text
    assert not out.exists()


def random_export(compose, overrides, shape, seed: int = 0):
    """(model, variables, inputs, export) of a random-valued model, exported as `bnnx export`
    stores a run of it (without the folded BNs' thresholds, which LCE does not read)."""
    config = compose(*overrides).model
    model = build_model(config, num_classes=10)
    x = np.random.default_rng(seed + 1).normal(size=(8, *shape)).astype(np.float32)
    variables = random_variables(model, jnp.asarray(x), seed)
    fields = dataclasses.asdict(config)
    layers = record_layers(model, jnp.asarray(x[:1]))
    info = {"model": {**{k: v for k, v in fields.items() if k != "options"}, **fields["options"]},
            "num_classes": 10, "input_shape": list(shape), "binary_inputs": [r.name for r in layers if r.binary_inputs]}
    return model, variables, x, exported(tensor_entries(variables, model.policy), info)


W1A1 = "model.binary_activations=true"
# small variants: overrides, input shape, the flatbuffer tables' bytes allowed over 5 % (as above).
# 32×32 inputs take the ImageNet stems' strided convs and pools through even sizes (8 → 4 → 2 → 1),
# where TFLite's SAME pads otherwise than the zoo, and through 1 → 1, where it pads alike.
RESIDUAL = {
    "resnet20": (("model=resnet20", W1A1, "model.width_multiplier=0.25"), (16, 16, 3), 16384),  # relu
    "resnet18": (("model=resnet18", W1A1, "model.width_multiplier=0.125", "model.activation=hardtanh"), (32, 32, 3),
                 16384),
    "resnet50": (("model=resnet50", W1A1, "model.width_multiplier=0.0625", "model.activation=prelu"), (32, 32, 3),
                 40960),
    "birealnet18": (("model=birealnet18", "model.width_multiplier=0.125"), (32, 32, 3), 16384),
    "reactnet_a": (("model=reactnet_a", "model.width_multiplier=0.125"), (32, 32, 3), 40960),
}


@pytest.mark.parametrize("family", RESIDUAL)
def test_residual_families_reproduce_the_models_eval_logits_in_lces_interpreter(family, compose, lce_python,
                                                                                 tmp_path):
    overrides, shape, metadata = RESIDUAL[family]
    model, variables, x, export = random_export(compose, overrides, shape)
    reference = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    path = tmp_path / "m.tflite"
    path.write_bytes(lce_bytes(export))

    logits = lce_logits(lce_python, path, x, tmp_path)
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(np.argmax(logits, -1), np.argmax(reference, -1))
    expected = expected_bytes(export.manifest)
    assert expected <= path.stat().st_size <= 1.05 * expected + metadata, (path.stat().st_size, expected)


@pytest.mark.parametrize("overrides", [("model=resnet18", W1A1), ("model=birealnet18",)],
                         ids=["resnet18", "birealnet18"])
def test_a_full_width_flatbuffer_is_within_5_percent_of_its_packed_bits_and_real_parameters(overrides, compose):
    export = random_export(compose, overrides, (32, 32, 3))[3]
    expected = expected_bytes(export.manifest)
    assert expected <= len(lce_bytes(export)) <= 1.05 * expected, (len(lce_bytes(export)), expected)


def test_binary_weights_with_real_activations_are_refused_in_one_line(compose):
    # binary weights, real ReLU activations: the ResNets' default (BWN)
    export = random_export(compose, ("model=resnet20", "model.width_multiplier=0.25"), (16, 16, 3))[3]
    with pytest.raises(ConfigError) as refusal:
        lce_bytes(export)
    message = str(refusal.value)
    assert "\n" not in message and "BasicBlock_0/QuantConv_0" in message and "W1A1" in message, message
