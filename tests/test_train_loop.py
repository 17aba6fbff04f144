"""The one training loop: outputs, determinism, resume after a signal, divergence, acceptance bars."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optax
import pytest

from bnnx.io import read_json, read_jsonl
from bnnx.methods.base import Recipe, adam
from bnnx.methods.fp import FP
from bnnx.train.checkpoint import Checkpoints
from bnnx.train.loop import train

BNNX = [sys.executable, "-m", "bnnx.cli.__main__"]
NUMBERS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")


def numbers(rows):
    return [{k: row[k] for k in NUMBERS} for row in rows]


def test_run_writes_its_records(compose, digits, tmp_path):
    config = compose("epochs=2", f"out_dir={tmp_path / 'run'}")
    result = train(config, dataset=digits)
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints"} <= {p.name for p in run.iterdir()}
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]
    for key in ("epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_top5_accuracy",
                "lr", "epoch_time_s"):
        assert key in rows[0]
    assert all(r["test_accuracy"] <= r["test_top5_accuracy"] <= 1.0 for r in rows)
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["epochs_done"] == 2
    assert summary["test_accuracy"] == rows[-1]["test_accuracy"]
    assert summary["best_test_accuracy"] == max(r["test_accuracy"] for r in rows)
    for key in ("wall_time_s", "seed", "method", "model", "dataset", "versions"):
        assert key in summary
    assert summary["versions"]["jax"] and result.exit_code == 0
    assert not list(run.glob(".*.tmp"))  # atomic writes leave no temp files


def test_top_k_correct_matches_numpy():
    import jax.numpy as jnp
    import numpy as np

    from bnnx.train.step import top_k_correct

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(64, 10)).astype(np.float32), rng.integers(0, 10, 64)
    weights = (rng.random(64) > 0.2).astype(np.float32)  # padded examples weigh 0
    ranks = (logits > logits[np.arange(64), labels][:, None]).sum(1)  # how many logits beat the label's
    for k, expected in ((1, ((ranks < 1) * weights).sum()), (5, ((ranks < 5) * weights).sum()), (50, weights.sum())):
        assert float(top_k_correct(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(weights), k)) == expected


def test_same_config_and_seed_give_identical_numbers(compose, digits, tmp_path):
    runs = [train(compose("epochs=3", "seed=7", f"out_dir={tmp_path / name}"), dataset=digits) for name in "ab"]
    assert numbers(runs[0].metrics) == numbers(runs[1].metrics)
    other = train(compose("epochs=3", "seed=8", f"out_dir={tmp_path / 'c'}"), dataset=digits)
    assert numbers(other.metrics) != numbers(runs[0].metrics)


def test_default_quick_training_reaches_the_bars(compose, digits, tmp_path):
    """`make train` (STE) must reach 0.93 on digits and the FP twin 0.97."""
    ste = train(compose(f"out_dir={tmp_path / 'ste'}"), dataset=digits)
    fp = train(compose("method=fp", f"out_dir={tmp_path / 'fp'}"), dataset=digits)
    assert ste.summary["test_accuracy"] >= 0.93
    assert fp.summary["test_accuracy"] >= 0.97


def _wait_for_epochs(path: Path, count: int, process, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"training exited early with {process.returncode}")
        if path.exists() and len(read_jsonl(path)) >= count:
            return
        time.sleep(0.05)
    pytest.fail("training made no progress")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_resumes_to_the_uninterrupted_numbers(compose, digits, tmp_path, sig):
    args = ["epochs=12", "batch_size=8", "seed=3"]
    reference = train(compose(*args, f"out_dir={tmp_path / 'ref'}"), dataset=digits)
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(BNNX + ["train", *args, f"out_dir={run}", "--quiet"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for_epochs(run / "metrics.jsonl", 3, process)
    process.send_signal(sig)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    summary = read_json(run / "summary.json")
    assert summary["status"] == "interrupted" and summary["epochs_done"] < 12
    resumed = subprocess.run(BNNX + ["train", "resume=true", f"out_dir={run}", "--quiet"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(run / "summary.json")["status"] == "completed"
    assert numbers(read_jsonl(run / "metrics.jsonl")) == numbers(reference.metrics)


@dataclasses.dataclass
class ExplodingFP(FP):
    """FP whose learning rate jumps to 1e35 after `good_steps` steps: a run that diverges late."""

    good_steps: int = 0

    @property
    def name(self):
        return "fp"

    def build(self, ctx):
        schedule = optax.join_schedules(
            [optax.constant_schedule(1e-3), optax.constant_schedule(1e35)], [self.good_steps]
        )
        return Recipe(tx=adam(schedule))


def test_divergence_stops_with_status_and_keeps_last_good_checkpoint(compose, digits, tmp_path):
    config = compose("method=fp", "epochs=6", "checkpoint_every=1", f"out_dir={tmp_path / 'run'}")
    steps_per_epoch = digits.steps_per_epoch(config.batch_size)
    config = dataclasses.replace(config, method=ExplodingFP(good_steps=2 * steps_per_epoch))
    result = train(config, dataset=digits)
    assert result.status == "diverged" and result.exit_code == 3
    assert result.summary["epochs_done"] == 2
    checkpoints = Checkpoints(tmp_path / "run")
    assert checkpoints.manager.latest_step() == 2 * steps_per_epoch
    checkpoints.close()


def test_cli_train_help_lists_groups_and_cfg_prints_config(run_cli):
    code, output = run_cli("train", "--help")
    assert code == 0
    for option in ("ste", "fp", "mlp", "digits", "fashion_mnist"):
        assert option in output
    code, output = run_cli("train", "--cfg", "job", "method=fp", "epochs=3")
    assert code == 0 and "name: fp" in output and "epochs: 3" in output
    code, output = run_cli("list")
    assert code == 0 and output.startswith("method:")
