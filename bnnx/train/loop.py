"""The one training loop, for every method.

Per epoch: the method's epoch hook, jitted train steps, evaluation, one row in
metrics.jsonl, a checkpoint. Ctrl-C (or SIGTERM) checkpoints mid-epoch and marks the run
interrupted; `resume` continues from the exact batch, so the numbers equal an
uninterrupted run's. A NaN/inf loss stops the run as diverged and keeps the last good
checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import jax
import jax.numpy as jnp

from bnnx.config import TrainConfig, config_to_dict
from bnnx.io import check_writable, write_json, write_jsonl, write_text
from bnnx.lock import FolderLock
from bnnx.methods.base import scheduled_values
from bnnx.train.checkpoint import Checkpoints
from bnnx.train.compile_clock import compile_seconds
from bnnx.train.experiment import Experiment, build_experiment
from bnnx.train.loggers import build_observers
from bnnx.train.progress import Progress
from bnnx.train.rundir import RunResult, check_run_dir, default_run_dir, prepare_run_dir, rows_before  # noqa: F401 (API)
from bnnx.train.step import evaluate, zero_sums
from bnnx.summary import run_precision
from bnnx.train.provenance import versions
from bnnx.timing import curve_from_rows, time_to_plateau


class _Interrupt:
    requested = False


@contextmanager
def _catch_interrupts():
    flag = _Interrupt()

    def handler(signum, frame):
        flag.requested = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(config: TrainConfig, *, quiet: bool = True, dataset=None) -> RunResult:
    """Train one run as configured; returns its summary. The Python API behind `bnnx train`.

    The process holds the run folder's lock (bnnx.lock) from before its first check to its
    last write, so a second writer of the same folder is refused while this one lives."""
    run_dir = Path(config.out_dir) if config.out_dir else default_run_dir(config)
    check_run_dir(config, run_dir)
    check_writable(run_dir, "out_dir")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(run_dir):
            check_run_dir(config, run_dir)  # again, now that no one else can write it
            experiment = build_experiment(config, run_dir, dataset, train_run=train)
            return Trainer(experiment, run_dir, quiet).run()
    except BaseException:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()  # leave no empty folder behind a run that never started
        raise


class Trainer:
    def __init__(self, experiment: Experiment, run_dir: Path, quiet: bool):
        self.exp = experiment
        self.config = experiment.config
        self.run_dir = run_dir
        self.quiet = quiet
        self.checkpoints = Checkpoints(run_dir)
        self.observers = []

    def run(self) -> RunResult:
        started = time.time()
        try:
            state, position, rows = self.start()
        except BaseException:
            self.checkpoints.close()
            raise
        self.observers = build_observers(self.config, self.run_dir, self.exp)  # after it: a refused resume writes nothing
        write_text(self.run_dir / "config.yaml", _yaml(config_to_dict(self.config)))
        if self.config.resume:  # the record of the epochs resumed, without rows or lines past them
            write_jsonl(self.run_dir / "metrics.jsonl", rows)
        status = "completed"
        try:
            with _catch_interrupts() as interrupt, Progress(self.config.epochs, self.exp.steps_per_epoch, self.quiet) as bar:
                while position["epoch"] < self.config.epochs:
                    state, position, status = self._epoch(state, position, rows, interrupt, bar)
                    if status != "completed":
                        break
        finally:
            self.checkpoints.close()
        position["wall_time_s"] = position.get("wall_time_s", 0.0) + time.time() - started
        summary = self._summary(status, rows, position, state)
        write_json(self.run_dir / "summary.json", summary)
        for observer in self.observers:
            observer.finish(self.run_dir, summary)
        return RunResult(self.run_dir, summary, rows)

    def start(self):
        """(state, position, rows) to run from: the checkpoint's, with metrics.jsonl's rows of the
        epochs it has done, or a fresh start. Reads only: a refused resume changes no file."""
        state = self.exp.state
        if self.config.resume:
            state, position = self.checkpoints.restore(state)
            return state, position, rows_before(self.run_dir, position["epoch"])
        state = self.exp.recipe.prepare(state)
        return state, {"epoch": 0, "batch": 0, "sums": zero_sums(), "wall_time_s": 0.0}, []

    def _epoch(self, state, position, rows, interrupt, bar):
        epoch, start = position["epoch"], position["batch"]
        if start == 0:
            state = self.exp.recipe.on_epoch(state, epoch)
        state = self.exp.for_epoch(state, epoch)  # also when resuming mid-epoch
        sums = {k: jnp.asarray(v, jnp.float32) for k, v in position["sums"].items()}
        began, compiled = time.time(), compile_seconds()
        bar.start_epoch(epoch, start)
        batches = self.exp.dataset.train_batches(epoch, self.config.batch_size, self.config.seed, start)
        for index, batch in enumerate(batches, start=start):
            state, batch_sums = self.exp.train_step(state, batch, self.exp.loss)
            sums = {k: sums[k] + batch_sums[k] for k in sums}
            self._log_step(epoch * self.exp.steps_per_epoch + index + 1, state, batch_sums)
            if bar.due():
                loss = float(sums["loss"]) / max(float(sums["count"]), 1.0)
                if not math.isfinite(loss):
                    break
                bar.update(index + 1, loss, float(sums["correct"]) / max(float(sums["count"]), 1.0))
            if interrupt.requested:
                position = {**position, "batch": index + 1, "sums": _host(sums)}
                self.checkpoints.save(state, position)
                return state, position, "interrupted"
        train = _host(sums)
        count = max(train["count"], 1.0)
        if not math.isfinite(train["loss"]):
            return state, position, "diverged"
        row = {"epoch": epoch, "train_loss": train["loss"] / count, "train_accuracy": train["correct"] / count,
               **evaluate(self.exp, state), **scheduled_values(state.opt_state), **self.exp.recipe.metrics(state)}
        for observer in self.observers:
            row.update(observer.epoch_end(state, epoch))
        row["epoch_time_s"] = time.time() - began
        row["compile_time_s"] = min(compile_seconds() - compiled, row["epoch_time_s"])
        rows.append(row)
        write_jsonl(self.run_dir / "metrics.jsonl", rows)
        for observer in self.observers:
            observer.row((epoch + 1) * self.exp.steps_per_epoch, row)
        bar.end_epoch(row)
        position = {**position, "epoch": epoch + 1, "batch": 0, "sums": zero_sums()}
        if (epoch + 1) % self.config.checkpoint_every == 0 or epoch + 1 == self.config.epochs:
            self.checkpoints.save(state, position)
        return state, position, "completed"

    def _log_step(self, step: int, state, batch_sums) -> None:
        """Every `log_every_steps` steps: this step's loss and scheduled values, to the observers
        (the only host syncs it adds, at that interval)."""
        if not self.config.log_every_steps or step % self.config.log_every_steps:
            return
        values = {"train_loss": float(batch_sums["loss"]) / max(float(batch_sums["count"]), 1.0),
                  **scheduled_values(state.opt_state)}
        for observer in self.observers:
            observer.step(step, values)

    def _summary(self, status: str, rows: list[dict], position: dict, state) -> dict:
        accuracies = [r["test_accuracy"] for r in rows]
        return {
            "status": status,
            "test_accuracy": accuracies[-1] if accuracies else None,
            "best_test_accuracy": max(accuracies) if accuracies else None,
            "epochs_done": len(rows),
            "epochs": self.config.epochs,
            "wall_time_s": position["wall_time_s"],
            "train_time_s": sum(r["epoch_time_s"] for r in rows),
            "test_accuracy_curve": accuracies,
            "compile_time_s": sum(r.get("compile_time_s", 0.0) for r in rows),
            "time_to_plateau": time_to_plateau(curve_from_rows(rows)) if rows else None,
            "parameters": run_precision(self.exp.layers, self.config.trained_model, state.params, state.quant),
            "seed": self.config.seed,
            "method": self.config.method.name,
            "model": self.config.model.name,
            "dataset": self.config.dataset.name,
            "versions": versions(),
        }


def _host(sums) -> dict[str, float]:
    return {k: float(v) for k, v in jax.device_get(sums).items()}


def _yaml(data: dict) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(data))
