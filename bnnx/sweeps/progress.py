"""The sweep's live view: runs done / running / failed and an ETA (a no-op when quiet)."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class SweepProgress:
    def __init__(self, name: str, total: int, done: int, quiet: bool):
        self.name, self.total, self.quiet = name, total, quiet
        self.counts = Counter({"done": done})
        self.running = 0
        self.current = ""
        self._bar = None

    def __enter__(self):
        if not self.quiet:
            self._bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.name, total=self.total, completed=self.counts["done"], stats="")
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

    def _refresh(self, advance: int = 0) -> None:
        if self._bar is None:
            return
        problems = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()) if k != "done")
        stats = f"running {self.running}" + (f" ({self.current})" if self.running == 1 and self.current else "")
        stats += f" [red]{problems}[/red]" if problems else ""
        self._bar.update(self._task, advance=advance, stats=stats)
