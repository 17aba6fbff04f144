"""When the loop saves a checkpoint: every `checkpoint_every` epochs, or by default once
CHECKPOINT_SECONDS have passed since the last save; always after the last epoch."""

from __future__ import annotations

import pytest

import bnnx.train.checkpoint as checkpoint
from bnnx.train.checkpoint import checkpoint_due
from bnnx.train.loop import train


@pytest.mark.parametrize("done, every, since, expected", [
    (1, 1, 0.0, True), (1, 2, 99.0, False), (2, 2, 0.0, True), (3, 2, 0.0, False),
    (1, None, 0.0, False), (1, None, 29.9, False), (1, None, 30.0, True), (2, None, 45.0, True),
    (5, None, 0.0, True), (5, 3, 0.0, True),  # the last epoch (5 of 5) always saves
])
def test_due_after_the_last_epoch_every_n_epochs_or_after_30_seconds(done, every, since, expected):
    assert checkpoint.CHECKPOINT_SECONDS == 30.0
    assert checkpoint_due(done, 5, every, since) is expected


def saved_steps(run_dir) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())


def test_a_short_run_saves_once_at_its_end_unless_told_otherwise(compose, digits, tmp_path, monkeypatch):
    tiny = ("model.hidden=[32,32]", "epochs=3")
    steps = digits.steps_per_epoch(compose(*tiny).batch_size)
    quick = train(compose(*tiny, f"out_dir={tmp_path / 'default'}"), dataset=digits)
    assert saved_steps(quick.run_dir) == [3 * steps]  # epochs of well under 30 s: no save before the end
    every = train(compose(*tiny, "checkpoint_every=1", f"out_dir={tmp_path / 'every'}"), dataset=digits)
    assert saved_steps(every.run_dir) == [2 * steps, 3 * steps]  # orbax keeps the last two
    monkeypatch.setattr(checkpoint, "CHECKPOINT_SECONDS", 0.0)  # as if each epoch took longer than the bound
    slow = train(compose(*tiny, f"out_dir={tmp_path / 'slow'}"), dataset=digits)
    assert saved_steps(slow.run_dir) == [2 * steps, 3 * steps]
    assert numbers(quick) == numbers(every) == numbers(slow)  # saving never changes the numbers


def numbers(result) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in result.metrics]  # not the timings
