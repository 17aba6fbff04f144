"""Time to accuracy: how fast a run reaches the accuracy a from-scratch BNN plateaus at
(the measure of partial pre-training, Renda & Fromm).

Definitions, for one run with per-epoch test accuracies a_1..a_E (metrics.jsonl
`test_accuracy`) and per-epoch wall seconds s_1..s_E (`epoch_time_s` − `compile_time_s`:
training plus that epoch's evaluation, without JAX's one-off tracing and compilation, see
bnnx/train/compile_clock.py; set-up before the first epoch, e.g. ILB's sensitivity runs, is
not counted):

- epochs to target:  e*(target) = min{e : a_e ≥ target and epoch e evaluated the binarized
  network}, a 1-based count of epochs trained: PPT's full-precision epochs count in the time but
  cannot reach the target (their accuracy is the FP twin's; metrics.jsonl `binary` < 1 marks
  them, a run without that key is binary throughout); None if the run never reaches it;
- seconds to target: s_1 + … + s_{e*};
- plateau of a from-scratch BNN: its best accuracy over the full budget, max_e a_e (binarized
  epochs only);
- target: plateau − margin (margin 0.005 = 0.5 points by default);
- speedup: scratch's epochs (seconds) to target ÷ the other run's epochs (seconds) to target,
  with the target taken from the scratch run of the same seed.

A run's summary.json records its own figures (`time_to_plateau`: its plateau, target, epochs
and seconds to target). `speedup(scratch_dir, ppt_dir)` computes one seed's speedups;
`speedup_stats(pairs)` their mean, standard deviation and range over seeds.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Sequence

from bnnx.errors import CheckpointError
from bnnx.io import read_json, read_jsonl
from bnnx.train.plateau import DEFAULT_MARGIN, Curve, curve_from_rows, to_target


def load_curve(run_dir: str | Path) -> Curve:
    """A run's curve from its metrics.jsonl."""
    rows = read_jsonl(Path(run_dir) / "metrics.jsonl")
    if not rows:
        raise CheckpointError(f"{run_dir} has no metrics.jsonl rows: not a trained bnnx run")
    return curve_from_rows(rows)


def _ratio(numerator, denominator) -> float | None:
    return None if numerator is None or denominator is None else numerator / denominator


def compare(scratch: Curve, other: Curve, margin: float = DEFAULT_MARGIN) -> dict:
    """Epochs and seconds each run needs to reach the scratch plateau − margin, and the speedups."""
    target = scratch.plateau - margin
    (scratch_epochs, scratch_s), (other_epochs, other_s) = to_target(scratch, target), to_target(other, target)
    return {"plateau": scratch.plateau, "target": target,
            "scratch_epochs": scratch_epochs, "epochs": other_epochs,
            "epoch_speedup": _ratio(scratch_epochs, other_epochs),
            "scratch_seconds": scratch_s, "seconds": other_s, "time_speedup": _ratio(scratch_s, other_s)}


def speedup(scratch_run_dir: str | Path, ppt_run_dir: str | Path, margin: float = DEFAULT_MARGIN) -> dict:
    """`compare` on two runs' directories (see the module docstring for the definitions)."""
    result = compare(load_curve(scratch_run_dir), load_curve(ppt_run_dir), margin)
    summary = Path(ppt_run_dir) / "summary.json"
    seed = read_json(summary).get("seed") if summary.exists() else None
    return {**result, "scratch_run": str(scratch_run_dir), "run": str(ppt_run_dir), "seed": seed}


def _spread(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "values": []}
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def speedup_stats(pairs: Sequence[tuple[str | Path, str | Path]], margin: float = DEFAULT_MARGIN) -> dict:
    """Speedups over seeds: `pairs` is [(scratch_run_dir, ppt_run_dir), ...], one per seed.

    Mean, sample standard deviation and range of the epoch and time speedups over the pairs
    where the run reached its target; `unreached` counts the others."""
    runs = [speedup(scratch, other, margin) for scratch, other in pairs]
    reached = [r for r in runs if r["epoch_speedup"] is not None]
    return {"margin": margin, "pairs": len(runs), "unreached": len(runs) - len(reached),
            "epoch_speedup": _spread([r["epoch_speedup"] for r in reached]),
            "time_speedup": _spread([r["time_speedup"] for r in reached]), "runs": runs}
