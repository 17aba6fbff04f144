"""Acceptance: models written as flax's examples write them (tests/models_flax_examples.py, no bnnx
imports, unmodified) train from the command line through `model=external` with binary weights and
real activations (W1A32), learn the digits, export, and run packed at the run's own accuracy.

- the NNX CNN of flax's examples/mnist, on one device;
- examples/imagenet's linen ResNet named by a `functools.partial` (`TinyResNet`), with
  `BatchNorm(axis_name='batch')` and a `conv_proj` shortcut, on two (host) devices.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W1A32 = ["model.binary_activations=false", "dataset=digits", "epochs=3", "batch_size=32", "method.lr=0.003"]


def _packed_accuracy(run_cli, run: Path) -> float:
    code, text = run_cli("export", str(run))
    assert code == 0, text
    code, text = run_cli("eval", str(run / "export.npz"))
    assert code == 0, text
    found = re.search(r"test_accuracy=([0-9.]+)", text)
    assert found is not None, text
    return float(found.group(1))


def _run_accuracy(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["test_accuracy"]


def test_nnx_cnn_from_flax_mnist_example_learns_exports_and_runs_packed(run_cli, tmp_path):
    run = tmp_path / "cnn"
    code, text = run_cli("train", "model=external", "model.target=tests.models_flax_examples:CNN", *W1A32,
                         f"out_dir={run}")
    assert code == 0, text
    assert _run_accuracy(run) > 0.6  # 3 epochs of W1A32 (conv2, linear1 binary): 0.92; chance is 0.1
    binary = json.loads((run / "summary.json").read_text())["parameters"]["binary_params"]
    assert binary == 3 * 3 * 32 * 64 + 256 * 256  # conv2 and linear1; conv1 and linear2 real
    assert _packed_accuracy(run_cli, run) == _run_accuracy(run)


def test_imagenet_resnet_partial_with_named_batch_axis_on_two_devices(run_cli, tmp_path):
    run = tmp_path / "resnet"
    command = [sys.executable, "-m", "bnnx.cli", "train", "model=external",
               "model.target=tests.models_flax_examples:TinyResNet", *W1A32, "devices=2", f"out_dir={run}"]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert _run_accuracy(run) > 0.6  # chance is 0.1
    binary = json.loads((run / "summary.json").read_text())["parameters"]["binary_params"]
    assert binary == 3 * 3 * (16 * 16 * 2 + 16 * 32 + 32 * 32)  # the blocks' 3×3 convs; conv_proj (1×1) real
    assert _packed_accuracy(run_cli, run) == _run_accuracy(run)


def _readme_commands() -> list[list[str]]:
    """The `bnnx train` commands of the README's section on external models, as a shell splits them."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # wherever the section lives
    text = next(t for t in (p.read_text() for p in pages) if "## Your own Flax model" in t)
    section = text[text.index("## Your own Flax model"):]
    section = section[:section.index("\n## ", 3)]
    found = re.search(r"```bash\n(.*?)```", section, re.S)
    assert found is not None, "the README's section has no bash block"
    block = found.group(1).replace("\\\n", " ")
    return [shlex.split(line, comments=True)[2:] for line in block.splitlines() if line.startswith("bnnx train")]


def test_readme_external_model_commands_run_as_written(run_cli, tmp_path):
    first, second = _readme_commands()
    code, text = run_cli("train", *first, "epochs=1", f"out_dir={tmp_path / 'readme'}")
    assert code == 0 and "completed" in text, text
    # the second: the class's own options as one mapping (the form conf/model/external.yaml shows) and a rule
    code, text = run_cli("train", *second, "epochs=1", f"out_dir={tmp_path / 'mine'}")
    assert code == 0 and "completed" in text, text
