"""What the bench cases share: their one result type, one timing helper and a synthetic data set."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.data.base import ArrayDataset

DIRECTIONS = ("higher", "lower")


@dataclasses.dataclass(frozen=True)
class Result:
    """One measured figure of a bench case against its target. `direction`: which side of the
    target meets it; `target` None: reported only (the issue sets none, or none can be met here);
    `figures`: what the figure is made of, written beside it in bench.json."""

    case: str
    measured: float
    unit: str  # "img/s", "x" (a ratio of two times), "s"
    target: float | None
    direction: str = "higher"
    figures: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        assert self.direction in DIRECTIONS, self.direction

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        return self.measured >= self.target if self.direction == "higher" else self.measured <= self.target

    def row(self) -> dict:
        """The result as one bench.json row."""
        return {"case": self.case, "measured": self.measured, "unit": self.unit, "target": self.target,
                "direction": self.direction, "met": self.met, **self.figures}


def seconds_per_call(call: Callable, repeats: int = 1, keep: Callable | None = None) -> float:
    """Wall seconds per call of `call` over `repeats` calls, its last output waited for (JAX
    dispatches asynchronously); `keep(output)` after each call carries a state to the next one,
    as a training loop does."""
    out, began = None, time.perf_counter()
    for _ in range(repeats):
        out = call()
        if keep is not None:
            keep(out)
    jax.block_until_ready(out)
    return (time.perf_counter() - began) / repeats


def synthetic_dataset(shape, batch_size: int, num_classes: int = 10) -> ArrayDataset:
    rng = np.random.default_rng(0)
    n = batch_size * 4
    images = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    return ArrayDataset("synthetic", images, labels, images[:batch_size], labels[:batch_size], num_classes,
                        normalize=lambda x: x.astype(jnp.float32) / 255.0)
