"""A sweep file: one paper table as a grid of training runs.

A sweep file (`sweeps/*.yaml`) states the table and its source (the paper by title, authors,
venue and arXiv id), its deviations from the paper (each with the source of the choice), the base overrides, the grid
axes (each value a named list of Hydra overrides), the metrics, the paper's numbers per cell,
the layout (which axes are rows, which are columns, as in the paper) and presets that rescale
the same grid (`smoke`, `cpu`, `paper`). This module holds it as typed, frozen dataclasses
(bnnx/sweeps/parse.py reads and validates the file); nothing here runs or composes anything.

The overrides of a run, later ones winning: base < preset < each axis value (in axis order) <
that axis value's own overrides for the preset < seed and out_dir. An override may name
another cell's run dir as `${cell:KEY}`, KEY a cell key ("real/nokd/cifar10") in which
`{axis}` stands for this cell's value on that axis; the runner runs that cell first, with the
same seed. `checks` state the analog's premises and the paper's effects as criteria the report
tests with confidence intervals.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from typing import Any

from bnnx.errors import ConfigError

METRIC_SOURCES = ("summary", "last_epoch", "speedup")  # or a JSON file in the run dir, e.g. signs.json
CELL_REFERENCE = re.compile(r"\$\{cell:((?:[^{}]|\{[^{}]*\})*)\}")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclasses.dataclass(frozen=True)
class AxisValue:
    """One value of an axis: `key` names it in cell keys and run dirs, `name` in the table."""

    key: str
    name: str
    overrides: tuple[str, ...] = ()
    preset_overrides: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    preset_names: dict[str, str] = dataclasses.field(default_factory=dict)

    def label(self, preset: str) -> str:
        return self.preset_names.get(preset, self.name)


@dataclasses.dataclass(frozen=True)
class Axis:
    name: str
    values: tuple[AxisValue, ...]

    def value(self, key: str) -> AxisValue:
        for value in self.values:
            if value.key == key:
                return value
        raise ConfigError(f"axis '{self.name}' has no value '{key}'; valid: {', '.join(v.key for v in self.values)}")


@dataclasses.dataclass(frozen=True)
class Metric:
    """What a cell reports. `source`: summary.json, the last metrics.jsonl row, a JSON file in the
    run dir (`key` a dotted path, `-1` = last item of a list), or `speedup` (bnnx.sweeps.timing's time
    to accuracy against the `reference` cell of the same seed: target = its plateau − `margin`;
    `key` epoch_speedup or time_speedup)."""

    name: str
    key: str = "best_test_accuracy"
    source: str = "summary"
    scale: float = 1.0
    digits: int = 1
    reference: str | None = None
    margin: float = 0.005
    interval: bool = False  # the table shows mean [95 % CI] instead of mean ± std


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    description: str = ""
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()
    resources: dict = dataclasses.field(default_factory=dict)  # gpus, cpus, mem_gb, timeout_min


@dataclasses.dataclass(frozen=True)
class Deviation:
    """One way the sweep departs from (or fills a gap in) the paper: `what` we run instead, and
    `source`, where that choice comes from (the official code, the most common published choice,
    the CPU analog's budget, ...)."""

    what: str
    source: str


@dataclasses.dataclass(frozen=True)
class Check:
    """A premise of the analog (`role: premise`: what must hold for the paper's effect to be able
    to appear) or the paper's effect itself (`role: effect`), as a criterion on one metric: the
    value of `cell` (minus that of `minus`, paired by seed) is at least `at_least` or at most
    `at_most`. The report gives its mean with a 95 % confidence interval and says whether the
    interval clears the bound. `cell` and `minus` may hold `{axis}`: one check per value of it."""

    role: str
    what: str
    metric: str
    cell: str
    minus: str | None = None
    at_least: float | None = None
    at_most: float | None = None


@dataclasses.dataclass(frozen=True)
class Cell:
    """One combination of axis values, e.g. key "ste/kd/cifar10"."""

    key: str
    values: tuple[tuple[str, AxisValue], ...]  # (axis name, value) in axis order

    def value(self, axis: str) -> AxisValue:
        return dict(self.values)[axis]


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    name: str
    title: str
    source: str
    axes: tuple[Axis, ...]
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    metrics: tuple[Metric, ...]
    presets: dict[str, Preset]
    base: tuple[str, ...] = ()
    exclude: tuple[dict, ...] = ()
    paper: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # cell -> metric -> value
    notes: str = ""
    deviations: tuple[Deviation, ...] = ()
    checks: tuple[Check, ...] = ()

    def axis(self, name: str) -> Axis:
        return next(a for a in self.axes if a.name == name)

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ConfigError(f"sweep '{self.name}' has no preset '{name}'; valid presets: {', '.join(self.presets)}")
        return self.presets[name]

    def is_excluded(self, values: dict[str, str]) -> bool:
        return any(all(values.get(axis) == key for axis, key in rule.items()) for rule in self.exclude)

    def cells(self) -> list[Cell]:
        """Every combination of axis values that is not excluded, in axis order."""
        out = []
        for combo in itertools.product(*(axis.values for axis in self.axes)):
            keys = {axis.name: value.key for axis, value in zip(self.axes, combo)}
            if not self.is_excluded(keys):
                out.append(Cell("/".join(v.key for v in combo), tuple((a.name, v) for a, v in zip(self.axes, combo))))
        return out

    def combos(self, axes: tuple[str, ...]) -> list[tuple[tuple[str, AxisValue], ...]]:
        """Every combination of the values of `axes` (table rows or columns), as (axis, value) pairs."""
        return [tuple(zip(axes, values)) for values in itertools.product(*(self.axis(a).values for a in axes))]

    def cell_key(self, row, column) -> str | None:
        """The key of the cell at a table row and column (None where excluded)."""
        keys = {axis: value.key for axis, value in row + column}
        return None if self.is_excluded(keys) else "/".join(keys[a.name] for a in self.axes)

    def cell(self, key: str) -> Cell:
        for cell in self.cells():
            if cell.key == key:
                return cell
        raise ConfigError(f"sweep '{self.name}' has no cell '{key}'")

    def cell_overrides(self, cell: Cell, preset: str) -> list[str]:
        """The overrides of a cell under a preset (before seed, out_dir and cell references)."""
        out = [*self.base, *self.preset(preset).overrides]
        for _, value in cell.values:
            out += value.overrides
        for _, value in cell.values:
            out += value.preset_overrides.get(preset, ())
        return out

    def reference_key(self, pattern: str, cell: Cell) -> str:
        """A cell reference with `{axis}` filled in from `cell`."""
        keys = {name: value.key for name, value in cell.values}
        try:
            return pattern.format(**keys)
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(f"sweep '{self.name}': bad cell reference '{pattern}' ({error}); "
                              f"use {{axis}} with an axis of {', '.join(keys)}") from None
