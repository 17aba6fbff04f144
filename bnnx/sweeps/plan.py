"""From a sweep spec to runs: cells × seeds, cell references resolved, dependencies ordered.

Each run lives in `<sweep dir>/<cell key>/seed<N>`. A reference `${cell:KEY}` becomes the run
dir of cell KEY with the same seed (or the folder the user provided for that cell with
`--use KEY=DIR`), and makes the referring run depend on it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from pathlib import Path
from typing import Callable

from bnnx.errors import BnnxError, ConfigError, check
from bnnx.sweeps.spec import CELL_REFERENCE, Cell, SweepSpec

SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:+-]*$")


@dataclasses.dataclass(frozen=True)
class Run:
    cell: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]  # everything but out_dir and resume
    depends: tuple[tuple[str, int], ...] = ()  # (cell, seed) of the runs it needs
    provided: bool = False  # a folder the user gave for this cell: never run

    @property
    def id(self) -> tuple[str, int]:
        return self.cell, self.seed

    @property
    def label(self) -> str:
        return f"{self.cell} seed {self.seed}"


def run_dir_of(sweep_dir: Path, cell: str, seed: int) -> Path:
    return Path(sweep_dir) / cell / f"seed{seed}"


def _quoted(path: Path) -> str:
    text = str(path)
    return text if SAFE_VALUE.match(text) else "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _resolve(override: str, cell: Cell, seed: int, spec: SweepSpec,
             dirs: Callable[[str, int], Path]) -> tuple[str, list]:
    needs = []

    def replace(match):
        target = spec.reference_key(match.group(1), cell)
        needs.append((target, seed))
        return _quoted(dirs(target, seed))

    return CELL_REFERENCE.sub(replace, override), needs


def select_cells(spec: SweepSpec, only: list[str] | None) -> list[Cell]:
    """The cells matching any glob in `only` (all when empty), plus every cell they reference."""
    cells = spec.cells()
    if not only:
        return cells
    chosen = {c.key for c in cells if any(fnmatch.fnmatchcase(c.key, pattern) for pattern in only)}
    check(bool(chosen), f"--only {' '.join(only)} matches no cell; cells: {', '.join(c.key for c in cells)}")
    frontier = list(chosen)
    while frontier:
        cell = spec.cell(frontier.pop())
        for preset in spec.presets:
            for override in spec.cell_overrides(cell, preset):
                for pattern in CELL_REFERENCE.findall(override):
                    target = spec.reference_key(pattern, cell)
                    if target not in chosen:
                        chosen.add(target)
                        frontier.append(target)
    return [c for c in cells if c.key in chosen]


def plan_runs(spec: SweepSpec, preset: str, sweep_dir: Path, seeds: tuple[int, ...] | None = None,
              only: list[str] | None = None, provided: dict[str, Path] | None = None) -> list[Run]:
    """Every run of the sweep under `preset`, dependencies before the runs that need them."""
    spec.preset(preset)
    seeds = tuple(seeds) if seeds else spec.preset(preset).seeds
    provided = {k: Path(v).absolute() for k, v in (provided or {}).items()}
    keys = {c.key for c in spec.cells()}
    for key, folder in provided.items():
        check(key in keys, f"--use: sweep '{spec.name}' has no cell '{key}'")
        check((folder / "config.yaml").is_file(), f"--use {key}={folder}: not a bnnx run (no config.yaml)")
    sweep_dir = Path(sweep_dir).absolute()

    def dirs(cell: str, seed: int) -> Path:
        return provided.get(cell) or run_dir_of(sweep_dir, cell, seed)

    runs = []
    for cell in select_cells(spec, only):
        for seed in seeds:
            if cell.key in provided:
                runs.append(Run(cell.key, seed, provided[cell.key], (), (), provided=True))
                continue
            overrides, depends = [], []
            for override in spec.cell_overrides(cell, preset):
                resolved, needs = _resolve(override, cell, seed, spec, dirs)
                overrides.append(resolved)
                depends += [n for n in needs if n[0] not in provided]
            overrides.append(f"seed={seed}")
            runs.append(Run(cell.key, seed, dirs(cell.key, seed), tuple(overrides), tuple(dict.fromkeys(depends))))
    return order_runs(runs)


def order_runs(runs: list[Run]) -> list[Run]:
    """Runs in dependency waves (stable within a wave); a cycle is a ConfigError."""
    return [run for wave in waves(runs) for run in wave]


def waves(runs: list[Run]) -> list[list[Run]]:
    """Groups of runs that can run together: each wave needs only runs of earlier waves."""
    by_id = {run.id: run for run in runs}
    level: dict[tuple, int] = {}

    def depth(run: Run, seen: tuple = ()) -> int:
        if run.id in level:
            return level[run.id]
        check(run.id not in seen,
              f"cells reference each other in a cycle: {' -> '.join(c for c, _ in seen + (run.id,))}")
        needed = [by_id[d] for d in run.depends if d in by_id]
        level[run.id] = 1 + max((depth(d, seen + (run.id,)) for d in needed), default=-1)
        return level[run.id]

    for run in runs:
        depth(run)
    out: list[list[Run]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for run in runs:
        out[level[run.id]].append(run)
    return out


def compose_runs(runs: list[Run], spec_name: str) -> dict:
    """The typed config of every run (out_dir set), or a ConfigError naming the cell; runs nothing.
    A cell's seeds share one Hydra composition (`sweep_composer`)."""
    from bnnx.config.compose import sweep_composer

    composer = sweep_composer()
    configs = {}
    for run in runs:
        if run.provided:
            continue
        try:
            configs[run.id] = composer([*run.overrides, f"out_dir={_quoted(run.run_dir)}"])
        except BnnxError as error:
            raise ConfigError(f"sweep '{spec_name}' cell {run.cell}: {error}") from None
        except ImportError as error:  # a method or model registered but not importable
            raise ConfigError(f"sweep '{spec_name}' cell {run.cell}: cannot import {error.name} ({error})") from None
    return configs
