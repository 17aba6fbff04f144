"""Data-parallel training (`devices`): each batch split over a 1-D mesh of local devices, params
replicated. Runs in a subprocess with two host CPU devices (XLA_FLAGS): the epoch's training
metrics equal one device's within 1e-5 relative (BatchNorm's batch statistics are the whole
batch's, computed across the devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model=mlp", "model.hidden=[32,32]", "epochs=1", "batch_size=64"]

SCRIPT = """
import json, sys
from bnnx.config.compose import compose_config
from bnnx.train.loop import train, train_seeds
out, tiny = sys.argv[1], json.loads(sys.argv[2])
rows = {}
# bop with the paper's gamma = 1e-4: at the default horizon (gamma = 1/steps, 0.02 here) its flips
# amplify the split sums' rounding within the epoch, which says nothing about the sharding
for method, extra in (("fp", []), ("bop", ["method.gamma=1e-4"])):
    for devices in ("1", "2", "all"):
        config = compose_config([*tiny, f"method={method}", *extra, f"devices={devices}",
                                 f"out_dir={out}/{method}-{devices}"])
        rows[f"{method}-{devices}"] = train(config).metrics[0]
configs = [compose_config([*tiny, "method=fp", "devices=2", f"seed={s}", f"out_dir={out}/group-{s}"]) for s in (0, 1)]
rows["group"] = [r.metrics[0] for r in train_seeds(configs)]
print(json.dumps(rows))
"""


def two_devices(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONPATH": str(ROOT),
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=900)


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def test_one_epoch_on_two_devices_equals_one_device(tmp_path):
    done = two_devices("-c", SCRIPT, str(tmp_path), json.dumps(TINY))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    for method in ("fp", "bop"):
        one = rows[f"{method}-1"]
        for devices in ("2", "all"):
            for key in ("train_loss", "train_accuracy"):
                assert relative(rows[f"{method}-{devices}"][key], one[key]) <= 1e-5, (method, devices, key)
            # after the epoch: the split sums round differently, which Adam amplifies where a
            # gradient is mathematically zero (see test_vmap_seeds.py)
            assert relative(rows[f"{method}-{devices}"]["test_loss"], one["test_loss"]) <= 1e-3
    assert relative(rows["group"][0]["train_loss"], rows["fp-1"]["train_loss"]) <= 1e-5


@pytest.mark.parametrize("value, message", [
    ("0", "devices must be >= 1 (got 0)"),
    ("some", "devices must be an integer or 'all' (got 'some')"),
    ("3", "devices=3 but this machine has 2 local device(s)"),
])
def test_a_bad_devices_value_is_one_line_and_exit_2(tmp_path, value, message):
    done = two_devices("-m", "bnnx.cli.__main__", "train", *TINY, "method=ste", f"devices={value}",
                       f"out_dir={tmp_path / 'run'}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    done = two_devices("-m", "bnnx.cli.__main__", "train", *TINY[:-1], "batch_size=63", "method=ste", "devices=2",
                       f"out_dir={tmp_path / 'run'}")
    message = "batch_size=63 must be a multiple of devices (2)"
    assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
