"""The sweep's live view: runs done / running / failed and an ETA (a no-op when quiet), in one
line of at most 80 columns: long names and run labels are cut with an ellipsis."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

WIDTH = 80
NAME, BAR, STATS = 16, 12, 22  # columns for the sweep's name, the bar and the running/failed text


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def columns() -> tuple:
    """Name, bar, done/total, stats, elapsed, ETA: 16 + 12 + 9 + 22 + 7 + 7 and 1 between each: 78."""
    return (TextColumn("[bold]{task.description}"), BarColumn(bar_width=BAR), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn())


class SweepProgress:
    def __init__(self, name: str, total: int, done: int, quiet: bool):
        self.name, self.total, self.quiet = name, total, quiet
        self.counts = Counter({"done": done})
        self.running = 0
        self.current = ""
        self._bar = None

    def __enter__(self):
        if not self.quiet:
            self._bar = Progress(*columns(), console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(_cut(self.name, NAME), total=self.total, completed=self.counts["done"],
                                            stats="")
            self._refresh()
        return self

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def started(self, label: str) -> None:
        self.running += 1
        self.current = label
        self._refresh()

    def finished(self, status: str) -> None:
        self.running = max(0, self.running - 1)
        self.counts["done"] += 1
        if status not in ("completed", "provided"):
            self.counts[status] += 1
        self._refresh(advance=1)

    def stats(self) -> str:
        """`running 2 failed 1`, or `running 1 (cell/seed0)` with the one run's label, cut to fit."""
        problems = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()) if k != "done")
        stats = f"running {self.running}" + (f" {problems}" if problems else "")
        if self.running == 1 and self.current and len(stats) + 3 < STATS:
            stats += f" ({_cut(self.current, STATS - len(stats) - 3)})"
        return _cut(stats, STATS)

    def _refresh(self, advance: int = 0) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=advance, stats=self.stats())
