"""A rich progress bar for training (a no-op when quiet)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, epochs: int, steps_per_epoch: int, quiet: bool, refresh_s: float = 0.5):
        self.epochs, self.steps, self.quiet, self.refresh_s = epochs, steps_per_epoch, quiet, refresh_s
        self._last = 0.0
        self._bar = None

    def __enter__(self):
        if not self.quiet:
            self._bar = RichProgress(TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.steps, epoch=0, epochs=self.epochs, stats="")
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def due(self) -> bool:
        """Whether to sync with the device for a display update (also the NaN check)."""
        now = time.time()
        if now - self._last >= self.refresh_s:
            self._last = now
            return True
        return False

    def start_epoch(self, epoch: int, step: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, epoch=epoch + 1)

    def update(self, step: int, loss: float, accuracy: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, stats=f"loss {loss:.4f} acc {accuracy:.3f}")

    def end_epoch(self, row: dict) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.steps,
                             stats=f"loss {row['train_loss']:.4f} test acc {row['test_accuracy']:.4f}")
