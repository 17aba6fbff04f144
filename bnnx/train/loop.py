"""The one training loop, for every method.

Per epoch: the method's epoch hook, jitted train steps, evaluation, one row in
metrics.jsonl, a checkpoint. Ctrl-C (or SIGTERM) checkpoints mid-epoch and marks the run
interrupted; `resume` continues from the exact batch, so the numbers equal an
uninterrupted run's. A NaN/inf loss stops the run as diverged and keeps the last good
checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.config import TrainConfig
from bnnx.data import load_dataset
from bnnx.io import check_writable
from bnnx.lock import FolderLock
from bnnx.methods.base import scheduled_values
from bnnx.summary import run_precision
from bnnx.train.checkpoint import Checkpoints, checkpoint_due
from bnnx.train.compile_clock import compile_seconds
from bnnx.train.diagnose import chance_warning, check_first_batch, recorded_warnings, warn
from bnnx.train.experiment import Experiment, build_experiment
from bnnx.train.loggers import build_observers
from bnnx.train.progress import Progress
from bnnx.train.provenance import versions
from bnnx.train.rundir import RunDir, RunResult, prepare_run_dir, run_summary  # noqa: F401 (API: prepare_run_dir)
from bnnx.train.seeds import NotVectorisable, check_vectorisable, program_for
from bnnx.train.step import zero_sums


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
    with _claimed([config]) as run_dirs:
        experiment = build_experiment(config, run_dirs[0], dataset, train_run=train)
        return Trainer(experiment, run_dirs[0], quiet).run()


def train_seeds(configs: list[TrainConfig], *, quiet: bool = True, dataset=None) -> list[RunResult]:
    """Train runs that differ only in their seed as one vectorised program (bnnx.train.seeds),
    each into its own ordinary run folder. Raises NotVectorisable, having written no run file,
    when they cannot share one program (or do not start from the same epoch and batch)."""
    with _claimed(configs) as run_dirs:
        dataset = dataset if dataset is not None else load_dataset(configs[0].dataset)
        experiments = [build_experiment(c, d, dataset, train_run=train) for c, d in zip(configs, run_dirs)]
        return Trainer(experiments, run_dirs, quiet, vectorise=True).run_all()


@contextmanager
def _claimed(configs: list[TrainConfig]):
    """The runs' folders, checked, created and locked (in the configs' order) for the block."""
    run_dirs = [RunDir.of(c).path for c in configs]
    created = []
    try:
        with ExitStack() as locks:
            for config, run_dir in zip(configs, run_dirs):
                RunDir(run_dir).check(config)
                check_writable(run_dir, "out_dir")
                if not run_dir.exists():
                    created.append(run_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                locks.enter_context(FolderLock(run_dir))
                RunDir(run_dir).check(config)  # again, now that no one else can write it
            yield run_dirs
    except BaseException:
        for run_dir in created:
            if run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()  # leave no empty folder behind a run that never started
        raise


@dataclasses.dataclass
class _Member:
    """One run the loop drives: its experiment, folder and record so far."""

    exp: Experiment
    run_dir: Path
    checkpoints: Checkpoints
    observers: list
    rows: list = dataclasses.field(default_factory=list)
    position: dict = dataclasses.field(default_factory=dict)
    status: str = "completed"
    warnings: list = dataclasses.field(default_factory=list)

    @property
    def config(self) -> TrainConfig:
        return self.exp.config

    @property
    def record(self) -> RunDir:
        return RunDir(self.run_dir)


class Trainer:
    """The loop over epochs for one run, or for the seeds of a cell stepped together (a
    `SeedGroup`: `Trainer(experiments, run_dirs, quiet, vectorise=True)`); every run keeps its
    own folder, checkpoints, observers and host-side hooks."""

    def __init__(self, experiments, run_dirs, quiet: bool, vectorise: bool = False):
        if isinstance(experiments, Experiment):
            experiments, run_dirs = [experiments], [run_dirs]
        self.members = [_Member(e, Path(d), Checkpoints(d), [])
                        for e, d in zip(experiments, run_dirs)]
        self.vectorise = vectorise
        self.quiet = quiet
        self.config = experiments[0].config
        self.program = program_for(experiments)

    def run(self) -> RunResult:
        (result,) = self.run_all()
        return result

    def run_all(self) -> list[RunResult]:
        started = time.time()
        self.versions = versions()  # the code that runs: a commit made during the run is not it
        try:
            states = [self.start(member) for member in self.members]
            if self.vectorise:
                check_vectorisable([m.exp for m in self.members], states)
                if any((m.position["epoch"], m.position["batch"]) != (self.members[0].position["epoch"],
                       self.members[0].position["batch"]) for m in self.members):
                    raise NotVectorisable("its seeds would resume from different epochs or batches")
        except BaseException:
            self._close()
            raise
        for member in self.members:  # after the checks: a refused resume writes nothing
            member.observers = build_observers(member.config, member.run_dir, member.exp)
            member.record.write_config(member.config)
            if member.config.resume:  # the record of the epochs resumed, without rows or lines past them
                member.record.write_rows(member.rows)
        if not self.config.resume and (message := check_first_batch(self.members[0].exp, states[0])):
            for member in self.members:  # the runs share their model: one line for all
                member.warnings.append(message)
            warn(message)
        state = self.program.stack(states)
        try:
            with _catch_interrupts() as interrupt, Progress(self.config.epochs, self.members[0].exp.steps_per_epoch,
                                                            self.quiet) as bar:
                while self._active() and self._active()[0].position["epoch"] < self.config.epochs:
                    state = self._epoch(state, interrupt, bar)
        finally:
            self._close()
        return [self._finish(m, own, started) for m, own in zip(self.members, self.program.unstack(state))]

    def start(self, member: _Member):
        """The member's state to run from, its position and rows set: the checkpoint's, with
        metrics.jsonl's rows of the epochs it has done, or a fresh start. Reads only: a refused
        resume changes no file."""
        state = member.exp.state
        if member.config.resume:
            state, member.position = member.checkpoints.restore(state)
            member.rows = member.record.rows_before(member.position["epoch"])
            member.warnings = recorded_warnings(member.run_dir)
            return state
        member.position = {"epoch": 0, "batch": 0, "sums": zero_sums(), "wall_time_s": 0.0}
        return member.exp.recipe.prepare(state)

    def _active(self) -> list[_Member]:
        return [m for m in self.members if m.status == "completed"]

    def _active_rows(self) -> np.ndarray:
        return np.asarray([m.status == "completed" for m in self.members])

    def _close(self) -> None:
        for member in self.members:
            member.checkpoints.close()

    def _hooks(self, state, hook: Callable):
        """`hook(member, its state)` on every run's own host-side state."""
        states = self.program.unstack(state)
        return self.program.stack([hook(m, s) for m, s in zip(self.members, states)])

    def _epoch(self, state, interrupt, bar):
        members = self.members
        epoch, start = self._active()[0].position["epoch"], self._active()[0].position["batch"]
        if start == 0 and any(m.exp.recipe.has_epoch_hook for m in members):
            state = self._hooks(state, lambda m, s: m.exp.recipe.on_epoch(s, epoch))
        # the epoch's apply function and optimizer are static fields, and a stacked state's are its
        # first run's (SeedGroup.stack): set them as they are, not by a round trip through the runs
        state = members[0].exp.for_epoch(state, epoch)  # also when resuming mid-epoch
        sums = self.program.stack([{k: jnp.asarray(v, jnp.float32) for k, v in m.position["sums"].items()}
                                   for m in members])
        began, compiled = time.time(), compile_seconds()
        bar.start_epoch(epoch, start)
        for index, batch in enumerate(self.program.train_batches(epoch, start), start=start):
            state, batch_sums = self.program.train_step(state, batch)
            sums = {k: sums[k] + batch_sums[k] for k in sums}
            self._log_step(epoch * members[0].exp.steps_per_epoch + index + 1, state, batch_sums)
            if bar.due():
                counts = np.maximum(np.atleast_1d(sums["count"]), 1.0)
                losses = (np.atleast_1d(sums["loss"]) / counts)[self._active_rows()]
                if not np.isfinite(losses).any():
                    break
                accuracies = (np.atleast_1d(sums["correct"]) / counts)[self._active_rows()]
                bar.update(index + 1, float(np.mean(losses)), float(np.mean(accuracies)))
            if interrupt.requested:
                for member, own, own_sums in zip(members, self.program.unstack(state), self.program.split(_host(sums))):
                    if member.status == "completed":
                        member.position = {**member.position, "batch": index + 1, "sums": own_sums}
                        member.checkpoints.save(own, member.position)
                        member.status = "interrupted"
                return state
        evaluations = self.program.evaluate(state)
        for member, own, train, test in zip(members, self.program.unstack(state), self.program.split(_host(sums)),
                                            evaluations):
            if member.status == "completed":
                self._end_epoch(member, own, epoch, train, test, began, compiled, bar)
        return state

    def _end_epoch(self, member: _Member, state, epoch: int, train: dict, test: dict, began: float,
                   compiled: float, bar) -> None:
        count = max(train["count"], 1.0)
        if not math.isfinite(train["loss"]):
            member.status = "diverged"
            return
        row = {"epoch": epoch, "train_loss": train["loss"] / count, "train_accuracy": train["correct"] / count,
               **test, **scheduled_values(state.opt_state), **member.exp.recipe.metrics(state)}
        member.checkpoints.wait()  # the last epoch's, written while this one trained: observers may look for it
        for observer in member.observers:
            row.update(observer.epoch_end(state, epoch))
        row["epoch_time_s"] = time.time() - began
        row["compile_time_s"] = min(compile_seconds() - compiled, row["epoch_time_s"])
        member.rows.append(row)
        member.record.write_rows(member.rows)
        for observer in member.observers:
            observer.row((epoch + 1) * member.exp.steps_per_epoch, row)
        if member is self._active()[0]:
            bar.end_epoch(row)
        if message := chance_warning(member.rows, member.config.epochs, member.exp.dataset.num_classes,
                                     member.warnings, member.config.method.chance_hint):
            member.warnings.append(warn(message))
        member.position = {**member.position, "epoch": epoch + 1, "batch": 0, "sums": zero_sums()}
        if checkpoint_due(epoch + 1, member.config.epochs, member.config.checkpoint_every,
                          member.checkpoints.seconds_since_save()):
            member.checkpoints.save(state, member.position)

    def _log_step(self, step: int, state, batch_sums) -> None:
        """Every `log_every_steps` steps: each run's loss and scheduled values at this step, to its
        observers (the only host syncs it adds, at that interval)."""
        if not self.config.log_every_steps or step % self.config.log_every_steps:
            return
        for member, own, sums in zip(self.members, self.program.unstack(state), self.program.split(_host(batch_sums))):
            if member.status != "completed":
                continue
            values = {"train_loss": sums["loss"] / max(sums["count"], 1.0), **scheduled_values(own.opt_state)}
            for observer in member.observers:
                observer.step(step, values)

    def _finish(self, member: _Member, state, started: float) -> RunResult:
        member.position["wall_time_s"] = member.position.get("wall_time_s", 0.0) + time.time() - started
        summary = self._summary(member, state)
        member.record.write_summary(summary)
        for observer in member.observers:
            observer.finish(member.run_dir, summary)
        return RunResult(member.run_dir, summary, member.rows)

    def _summary(self, member: _Member, state) -> dict:
        config = member.config
        summary = run_summary(config, member.rows, status=member.status, wall_time_s=member.position["wall_time_s"],
                              parameters=run_precision(member.exp.layers, config.trained_model, state.params,
                                                       state.quant), versions=self.versions,
                              warnings=list(member.warnings))
        if member.exp.start:  # the run it started from (method.init_from)
            summary["init_from"] = member.exp.start
        if len(self.members) > 1:  # its times are the group's: K seeds trained in one program
            summary["vmapped_seeds"] = [m.config.seed for m in self.members]
        return summary


def _host(sums) -> dict:
    return jax.device_get(sums)
