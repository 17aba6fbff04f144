"""`bnnx export RUN --format lce`: the .tflite runs in Larq Compute Engine's own interpreter (its
x86 reference kernels, in the NumPy 1.x environment `make lce-env` builds) with bnnx eval's logits."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from bnnx.export import export_run, unpack

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


def trained(compose, digits, tmp_path, *overrides):
    from bnnx.train.loop import train

    run_dir = tmp_path / "run"
    config = compose(*overrides, "epochs=2", "batch_size=32", "method.lr=0.01", f"out_dir={run_dir}")
    result = train(config, dataset=digits)
    assert result.status == "completed"
    return config, run_dir


def expected_bytes(manifest: dict) -> int:
    """Packed bits (one bit per binary weight, channels padded to 32) plus the real parameters
    (float32, a BatchNorm as its two affine factors)."""
    packed = sum(4 * sum(np.prod(where[3]) for where in t["arrays"].values())
                 for t in manifest["tensors"] if t["encoding"] == "sign_words")
    real = sum(4 * np.prod(t["shape"]) for t in manifest["tensors"] if t["encoding"] == "float32"
               and t["name"].startswith("params/") and not t.get("derived"))
    return int(packed + real)


# The flatbuffer's own tables (tensor shapes, ops, the custom ops' FlexBuffer options, 16-byte aligned
# buffers) take ~100 bytes a tensor: under 5 % of the 88 KB MLP, ~3 KB over the 8.7 KB ConvNet's weights,
# ~6 KB over the 11 KB BinaryNet's.
@pytest.mark.parametrize("overrides, metadata", [(("model=mlp",), 0),
                                                 (("model=convnet", "model.widths=[16,32,32]"), 4096),
                                                 (("model=binarynet", "model.width_multiplier=0.0625"), 8192)],
                         ids=["mlp", "convnet", "binarynet"])
def test_lce_flatbuffer_reproduces_bnnx_eval_in_lces_interpreter(overrides, metadata, compose, digits, run_cli,
                                                                 lce_python, tmp_path):
    config, run_dir = trained(compose, digits, tmp_path, *overrides)
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

    config = dataclasses.replace(compose("model=resnet20"), out_dir=str(tmp_path))
    write_text(tmp_path / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config_to_dict(config))))
    out = tmp_path / "m.tflite"
    code, text = run_cli("export", str(tmp_path), "--format", "lce", "--out", str(out))
    assert code == 2 and text.strip().count("\n") == 0 and "mlp, convnet" in text and "'resnet20'" in text, text
    assert not out.exists()
