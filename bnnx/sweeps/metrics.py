"""A sweep metric's value for one finished run, read from the files the run left behind.

`speedup` metrics are bnnx.sweeps.timing's time-to-accuracy figures against the reference cell's run of
the same seed (`key`: epoch_speedup or time_speedup; `margin`: below the reference's plateau)."""

from __future__ import annotations

import math
from pathlib import Path

from bnnx.errors import CheckpointError
from bnnx.io import read_json, read_jsonl
from bnnx.sweeps.spec import Metric
from bnnx.sweeps.timing import load_curve, speedup


def accuracy_curve(run_dir: Path) -> list[float]:
    """Test accuracy after each epoch ([] when the run has no metrics.jsonl rows)."""
    try:
        return list(load_curve(run_dir).accuracy)
    except CheckpointError:
        return []


# per-epoch row keys that are measurements, not scheduled values
MEASURED = {"epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy", "test_top5_accuracy",
            "epoch_time_s", "compile_time_s"}


def scheduled_rows(run_dir: Path) -> dict[str, list[float]]:
    """Each scheduled value a run logged per epoch (lr, β, γ, λ, freezing fraction, …), by name;
    only values that are numbers in every row."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = read_jsonl(path) if path.exists() else []
    keys = {key for row in rows for key in row} - MEASURED
    series = {key: [_number(row.get(key)) for row in rows] for key in sorted(keys)}
    return {key: [v for v in values if v is not None] for key, values in series.items()
            if values and None not in values}


def _dig(data, dotted: str):
    for part in dotted.split("."):
        if isinstance(data, list):
            try:
                data = data[int(part)]
            except (ValueError, IndexError):
                return None
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return None
    return data


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def run_value(run_dir: Path, metric: Metric, reference_dir: Path | None = None) -> float | None:
    """The metric of one run, unscaled; None when the run did not record it."""
    run_dir = Path(run_dir)
    if metric.source == "speedup":
        if reference_dir is None:
            return None
        return _number(speedup(reference_dir, run_dir, metric.margin).get(metric.key))
    if metric.source == "last_epoch":
        rows = read_jsonl(run_dir / "metrics.jsonl")
        return _number(rows[-1].get(metric.key)) if rows else None
    name = "summary.json" if metric.source == "summary" else metric.source
    path = run_dir / name
    return _number(_dig(read_json(path), metric.key)) if path.exists() else None
