"""A run's folder: where it goes, whether it may be written, and what a resume reads back."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

from bnnx.config import TrainConfig
from bnnx.errors import ConfigError, CorruptFileError
from bnnx.io import read_jsonl_rows

EXIT_OK, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 3, 130
RESULT_FILES = ("summary.json", "metrics.jsonl", "checkpoints")


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    summary: dict
    metrics: list[dict]

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def exit_code(self) -> int:
        return {"completed": EXIT_OK, "diverged": EXIT_DIVERGED}.get(self.status, EXIT_INTERRUPTED)


def default_run_dir(config: TrainConfig, root: Path = Path("runs")) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = root / f"{stamp}-{config.method.name}-{config.model.name}-{config.dataset.name}"
    candidate, n = base, 1
    while candidate.exists():
        candidate, n = Path(f"{base}-{n}"), n + 1
    return candidate


def holds_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and any((run_dir / name).exists() for name in RESULT_FILES)


def check_run_dir(config: TrainConfig, run_dir: Path) -> None:
    """May this config write `run_dir`? (Checks only: nothing is created.)"""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"out_dir {run_dir} is a file, not a folder")
    has_results = holds_run(run_dir)
    if config.resume and not has_results:
        raise ConfigError(f"nothing to resume in {run_dir}: it holds no run")
    if has_results and not config.resume:
        raise ConfigError(f"out_dir {run_dir} already holds a run; "
                          "pass resume=true to continue it or choose another out_dir")


def rows_before(run_dir: Path, epoch: int) -> list[dict]:
    """metrics.jsonl's rows of epochs 0..epoch-1, the epochs the checkpoint being resumed has
    done. Rows after them (written before a later, lost checkpoint) and damaged lines among them
    are dropped; a resume cannot invent a missing epoch's numbers, so one missing is refused."""
    path = run_dir / "metrics.jsonl"
    rows, _ = read_jsonl_rows(path)
    by_epoch = {row["epoch"]: row for row in rows if isinstance(row.get("epoch"), int) and 0 <= row["epoch"] < epoch}
    missing = [e for e in range(epoch) if e not in by_epoch]
    if missing:
        shown = ", ".join(str(e) for e in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise CorruptFileError(f"{path} lacks the rows of epochs {shown} that the checkpoint has done "
                              f"(the file is damaged); the run cannot be resumed with a complete record: "
                              f"train it again in another out_dir")
    return [by_epoch[e] for e in range(epoch)]


def prepare_run_dir(config: TrainConfig) -> Path:
    """The run's folder, checked and created (for callers that drive a Trainer themselves)."""
    run_dir = Path(config.out_dir) if config.out_dir else default_run_dir(config)
    check_run_dir(config, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
