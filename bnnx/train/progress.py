"""What a training run shows while it runs (nothing when quiet).

One line per epoch (epoch, losses, accuracies, time) on stdout, flushed as the epoch ends, so it
stays in a terminal and reaches a file or a pipe while the run goes on; a live rich bar over
the epoch's steps only when both stdout and stderr are terminals (the lines print above it).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


def epoch_line(row: dict, epochs: int) -> str:
    """`epoch 3/10 train_loss 0.4123 train_acc 0.8810 test_loss 0.3990 test_acc 0.8912 time 1.2s`."""
    return (f"epoch {row['epoch'] + 1}/{epochs} train_loss {row['train_loss']:.4f} "
            f"train_acc {row['train_accuracy']:.4f} test_loss {row['test_loss']:.4f} "
            f"test_acc {row['test_accuracy']:.4f} time {row['epoch_time_s']:.1f}s")


def _terminal() -> bool:
    return all(getattr(stream, "isatty", lambda: False)() for stream in (sys.stdout, sys.stderr))


class Progress:
    def __init__(self, epochs: int, steps_per_epoch: int, quiet: bool, refresh_s: float = 0.5):
        self.epochs, self.steps, self.quiet, self.refresh_s = epochs, steps_per_epoch, quiet, refresh_s
        self._last = 0.0
        self._bar = None

    def __enter__(self):
        if not self.quiet and _terminal():
            self._bar = RichProgress(TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(),
                                     MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeElapsedColumn(),
                                     TimeRemainingColumn(), console=Console(stderr=True), transient=True)
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
            self._bar.update(self._task, completed=step, epoch=epoch + 1, stats="")

    def update(self, step: int, loss: float, accuracy: float) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=step, stats=f"loss {loss:.4f} acc {accuracy:.3f}")

    def end_epoch(self, row: dict) -> None:
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.steps)
        print(epoch_line(row, self.epochs), flush=True)  # above the live bar: rich redirects stdout
