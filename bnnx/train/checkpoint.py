"""Orbax checkpoints of the train state plus the loop's position (epoch, batch, running sums)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bnnx.errors import CheckpointError

STATE_FIELDS = ("step", "params", "batch_stats", "quant", "trainable", "opt_state", "rng")
# `checkpoint_every=null`: a save costs ~0.1 s of a 2-core CPU, more than a digits epoch, so
# short epochs save at most this often; an epoch of a paper run is longer and saves every time
CHECKPOINT_SECONDS = 30.0


def checkpoint_due(epochs_done: int, epochs: int, every: int | None, seconds_since_save: float) -> bool:
    """Save after this epoch? Every `every` epochs, or (None) once CHECKPOINT_SECONDS have passed;
    always after the last one."""
    if epochs_done == epochs:
        return True
    return seconds_since_save >= CHECKPOINT_SECONDS if every is None else epochs_done % every == 0


def _quiet_orbax():
    """Orbax reports damaged files through absl logging too; bnnx reports them as one line."""
    for name in ("absl", "orbax", "jax._src.distributed"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.FATAL)
    except ImportError:
        pass


def state_tree(state) -> dict:
    return {name: getattr(state, name) for name in STATE_FIELDS}


class Checkpoints:
    """Checkpoints under `<run_dir>/checkpoints`, written atomically by orbax (temp dir + rename).

    A save returns once the state is on the host and orbax writes it in a background thread,
    overlapping the next epoch (about 100 ms a save on a 2-core CPU); the next save, a restore
    and `close` wait for it, so a finished or interrupted run has its checkpoint on disk."""

    def __init__(self, run_dir: Path, max_to_keep: int = 2):
        import orbax.checkpoint as ocp

        _quiet_orbax()
        self._ocp = ocp
        self.directory = Path(run_dir).absolute() / "checkpoints"
        self._manager = None
        self._max_to_keep = max_to_keep
        self._saved_at = time.monotonic()  # the run's start counts as a save for `checkpoint_due`

    def seconds_since_save(self) -> float:
        return time.monotonic() - self._saved_at

    @property
    def manager(self):
        if self._manager is None:
            options = self._ocp.CheckpointManagerOptions(max_to_keep=self._max_to_keep, create=True,
                                                         enable_async_checkpointing=True)
            self._manager = self._ocp.CheckpointManager(self.directory, options=options)
        return self._manager

    def exists(self) -> bool:
        return self.directory.is_dir() and any(p.name.isdigit() for p in self.directory.iterdir())

    def wait(self) -> None:
        """Until the checkpoint being written (if any) is on disk."""
        if self._manager is not None:
            self._manager.wait_until_finished()

    def save(self, state, position: dict) -> None:
        ocp = self._ocp
        tree = jax.device_get(state_tree(state))
        step = int(tree["step"])
        self.manager.wait_until_finished()
        if step in self.manager.all_steps():
            self.manager.delete(step)
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                         position=ocp.args.JsonSave(position)))
        self._saved_at = time.monotonic()

    def restore(self, state) -> tuple[Any, dict]:
        """Restore the latest checkpoint into the structure of `state`."""
        target = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), state_tree(state))
        tree, position = self._restore_latest(target)
        _check_same_structure(target, tree)
        return state.replace(**tree), position

    def restore_tree(self) -> tuple[dict, dict]:
        """The latest checkpoint as saved (a dict of STATE_FIELDS, NumPy leaves) and its position:
        its structure comes from the checkpoint itself, so nothing has to be built to read it."""
        tree, position = self._restore_latest(None)
        missing = [name for name in STATE_FIELDS if name not in tree]
        if missing:
            raise CheckpointError(f"checkpoint in {self.directory} lacks {', '.join(missing)}")
        return tree, position

    def _restore_latest(self, target) -> tuple[dict, dict]:
        ocp = self._ocp
        if not self.exists():
            raise CheckpointError(f"no checkpoint to resume in {self.directory.parent}")
        self.manager.wait_until_finished()
        step = self.manager.latest_step()
        state_args = ocp.args.StandardRestore(target) if target is not None else ocp.args.StandardRestore()
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(
                state=state_args, position=ocp.args.JsonRestore()))
            return dict(restored["state"]), dict(restored["position"])
        except Exception as error:  # orbax raises many types for damaged files
            first_line = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"checkpoint {self.directory / str(step)} is corrupt or incompatible: {first_line}")

    def close(self):
        if self._manager is not None:
            self._manager.wait_until_finished()
            self._manager.close()
            self._manager = None


def _check_same_structure(target, restored) -> None:
    want = jax.tree_util.tree_structure(target)
    got = jax.tree_util.tree_structure(restored)
    if want != got:
        raise CheckpointError("checkpoint does not match this model/method (different parameter structure)")
    for a, b in zip(jax.tree.leaves(target), jax.tree.leaves(restored)):
        if np.shape(a) != np.shape(b):
            raise CheckpointError(f"checkpoint does not match this model/method (shape {np.shape(b)} vs {np.shape(a)})")

