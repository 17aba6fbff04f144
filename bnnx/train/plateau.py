"""A run's own time to accuracy: its plateau (best binarized test accuracy), the target
(plateau − margin) and the epochs and wall seconds it takes to reach it, recorded in its
summary.json as `time_to_plateau`. The definitions, and the speedups of one run against another
built on them, are in `bnnx.sweeps.timing`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

DEFAULT_MARGIN = 0.005


@dataclasses.dataclass(frozen=True)
class Curve:
    """One run's test accuracy and wall seconds per epoch."""

    accuracy: tuple[float, ...]
    seconds: tuple[float, ...]
    binarized: tuple[bool, ...] | None = None  # per epoch; None: every epoch

    @property
    def bnn_accuracy(self) -> tuple[float, ...]:
        """The accuracies that count towards a target: -inf where the network was not binarized."""
        if self.binarized is None:
            return self.accuracy
        return tuple(a if b else -math.inf for a, b in zip(self.accuracy, self.binarized))

    @property
    def plateau(self) -> float:
        return max(self.bnn_accuracy)


def epochs_to_target(curve: Sequence[float], target: float) -> int | None:
    """The first epoch (1-based) whose accuracy is ≥ target, or None."""
    return next((epoch for epoch, accuracy in enumerate(curve, start=1) if accuracy >= target), None)


def seconds_to_target(curve: Sequence[float], epoch_seconds: Sequence[float], target: float) -> float | None:
    """Wall seconds of the epochs up to and including the first one that reaches the target."""
    epochs = epochs_to_target(curve, target)
    return None if epochs is None else float(sum(epoch_seconds[:epochs]))


def curve_from_rows(rows: Sequence[dict]) -> Curve:
    """The curve of metrics.jsonl rows; compilation is left out of the seconds."""
    rows = sorted(rows, key=lambda row: row["epoch"])
    seconds = tuple(float(r["epoch_time_s"]) - float(r.get("compile_time_s", 0.0)) for r in rows)
    binarized = tuple(float(r.get("binary", 1.0)) >= 1.0 for r in rows)
    return Curve(tuple(float(r["test_accuracy"]) for r in rows), seconds, binarized)


def to_target(curve: Curve, target: float) -> tuple[int | None, float | None]:
    return epochs_to_target(curve.bnn_accuracy, target), seconds_to_target(curve.bnn_accuracy, curve.seconds, target)


def time_to_plateau(curve: Curve, margin: float = DEFAULT_MARGIN) -> dict:
    """A run's own plateau (best accuracy), target (plateau − margin) and epochs and seconds to
    that target: for a from-scratch BNN, the reference figures of every speedup against it."""
    if not math.isfinite(curve.plateau):  # no binarized epoch yet
        return {"plateau": None, "target": None, "margin": margin, "epochs": None, "seconds": None}
    target = curve.plateau - margin
    epochs, seconds = to_target(curve, target)
    return {"plateau": curve.plateau, "target": target, "margin": margin, "epochs": epochs, "seconds": seconds}
