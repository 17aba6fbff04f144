"""Parse and validate a sweep file (YAML) into a `SweepSpec`: every problem is one ConfigError line
naming the key, e.g. "unknown key 'colums' in the sweep file; valid keys: ..."."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from bnnx.errors import ConfigError, check
from bnnx.sweeps.spec import (
    CELL_REFERENCE,
    KEY_PATTERN,
    METRIC_SOURCES,
    Axis,
    AxisValue,
    Cell,
    Check,
    Deviation,
    Metric,
    Preset,
    SweepSpec,
)


def _keys(data: Any, where: str, required: tuple[str, ...], optional: tuple[str, ...]) -> dict:
    check(isinstance(data, dict), f"{where} must be a mapping (got {type(data).__name__})")
    valid = required + optional
    for key in data:
        check(key in valid, f"unknown key '{key}' in {where}; valid keys: {', '.join(valid)}")
    for key in required:
        check(key in data, f"{where} is missing '{key}'")
    return data


def _strings(data: Any, where: str) -> tuple[str, ...]:
    data = [] if data is None else data
    check(isinstance(data, list) and all(isinstance(s, str) for s in data), f"{where} must be a list of strings")
    for override in data:
        check(_is_override(override), f"{where}: '{override}' is not an override (key=value)")
    return tuple(data)


def _is_override(text: str) -> bool:
    key, equal, _ = text.partition("=")
    return (bool(equal) and bool(key.lstrip("+~"))) or (text.startswith("~") and len(text) > 1)


def _axis_value(data: Any, where: str, presets: dict) -> AxisValue:
    data = _keys(data, where, ("key", "name"), ("overrides", "presets"))
    key = str(data["key"])
    check(bool(KEY_PATTERN.match(key)), f"{where}: key '{key}' may use only letters, digits and _ . + -")
    overrides, names = {}, {}
    for preset, extra in (data.get("presets") or {}).items():
        check(preset in presets, f"{where}: unknown preset '{preset}'; valid presets: {', '.join(presets)}")
        extra = _keys(extra, f"{where}.presets.{preset}", (), ("name", "overrides"))
        overrides[preset] = _strings(extra.get("overrides"), f"{where}.presets.{preset}.overrides")
        if "name" in extra:
            names[preset] = str(extra["name"])
    return AxisValue(key, str(data["name"]), _strings(data.get("overrides"), f"{where}.overrides"), overrides, names)


def _axes(data: Any, presets: dict) -> tuple[Axis, ...]:
    check(isinstance(data, list) and bool(data), "axes must be a non-empty list of {name, values}")
    axes = []
    for i, axis in enumerate(data):
        axis = _keys(axis, f"axes[{i}]", ("name", "values"), ())
        name = str(axis["name"])
        check(isinstance(axis["values"], list) and bool(axis["values"]),
              f"axis '{name}' needs a non-empty list of values")
        values = tuple(_axis_value(v, f"axis '{name}' value {j}", presets) for j, v in enumerate(axis["values"]))
        keys = [v.key for v in values]
        check(len(set(keys)) == len(keys), f"axis '{name}' repeats a value key: {keys}")
        axes.append(Axis(name, values))
    names = [a.name for a in axes]
    check(len(set(names)) == len(names), f"axis names repeat: {names}")
    return tuple(axes)


def _metric(data: Any, where: str) -> Metric:
    data = _keys(data, where, ("name",), ("key", "source", "scale", "digits", "reference", "margin", "interval"))
    try:
        metric = Metric(**data)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None
    check(metric.source in METRIC_SOURCES or metric.source.endswith(".json"),
          f"{where}: unknown source '{metric.source}'; "
          f"valid: {', '.join(METRIC_SOURCES)} or a .json file in the run dir")
    check(metric.source != "speedup" or bool(metric.reference), f"{where}: a speedup metric needs a reference cell")
    numbers = {"scale": metric.scale, "margin": metric.margin}
    for name, value in numbers.items():
        check(isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {name} must be a number")
    check(isinstance(metric.digits, int) and 0 <= metric.digits <= 6, f"{where}: digits must be an integer in [0, 6]")
    check(isinstance(metric.interval, bool), f"{where}: interval must be true or false")
    return metric


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        check(value >= 1, f"{where}: seeds must be >= 1 (got {value})")
        return tuple(range(value))
    if not (isinstance(value, list) and value and all(isinstance(s, int) for s in value)):
        raise ConfigError(f"{where}: seeds must be a count or a list of integers")
    return tuple(value)


def _preset(name: str, data: Any) -> Preset:
    data = _keys(data, f"preset '{name}'", (), ("description", "seeds", "overrides", "resources"))
    resources = _keys(dict(data.get("resources") or {}), f"preset '{name}'.resources", (),
                      ("gpus", "cpus", "mem_gb", "timeout_min"))
    return Preset(name, str(data.get("description", "")).strip(), _seeds(data.get("seeds", 1), f"preset '{name}'"),
                  _strings(data.get("overrides"), f"preset '{name}'.overrides"), resources)


def _paper_value(value: Any, where: str):
    ok = isinstance(value, (int, float, str)) or (
        isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value))
    check(ok and not isinstance(value, bool), f"{where}: a paper number is a number, [mean, std] or a text")
    return value


def _paper(data: Any, cells: list[Cell], metrics: tuple[Metric, ...]) -> dict[str, dict[str, Any]]:
    data = data or {}
    check(isinstance(data, dict), "paper must map cell keys to numbers")
    keys, names = {c.key for c in cells}, [m.name for m in metrics]
    out = {}
    for cell, value in data.items():
        check(cell in keys, f"paper: no cell '{cell}'; cells: {', '.join(sorted(keys))}")
        if not isinstance(value, dict):
            value = {names[0]: value}
        for metric in value:
            check(metric in names, f"paper['{cell}']: no metric '{metric}'; metrics: {', '.join(names)}")
        out[cell] = {m: _paper_value(v, f"paper['{cell}']['{m}']") for m, v in value.items()}
    return out


def _layout(data: dict, axes: tuple[Axis, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    rows, columns = tuple(data.get("rows") or ()), tuple(data.get("columns") or ())
    names = [a.name for a in axes]
    placed = list(rows) + list(columns)
    for name in placed:
        check(name in names, f"layout names axis '{name}', which does not exist; axes: {', '.join(names)}")
    check(sorted(placed) == sorted(names),
          f"rows + columns must place every axis exactly once (axes: {', '.join(names)})")
    check(bool(rows), "rows must name at least one axis")
    return rows, columns


def _exclude(data: Any, axes: tuple[Axis, ...]) -> tuple[dict, ...]:
    data = data or []
    check(isinstance(data, list), "exclude must be a list of {axis: value key}")
    for rule in data:
        check(isinstance(rule, dict) and bool(rule), "each exclude rule is a non-empty {axis: value key} mapping")
        for axis, key in rule.items():
            check(axis in [a.name for a in axes], f"exclude names unknown axis '{axis}'")
            next(a for a in axes if a.name == axis).value(str(key))
    return tuple({str(k): str(v) for k, v in rule.items()} for rule in data)


def _deviations(data: Any) -> tuple[Deviation, ...]:
    data = data or []
    check(isinstance(data, list), "deviations must be a list of {what, source}")
    out = []
    for i, item in enumerate(data):
        item = _keys(item, f"deviations[{i}]", ("what", "source"), ())
        what, source = str(item["what"]).strip(), str(item["source"]).strip()
        check(bool(what) and bool(source), f"deviations[{i}]: what and source must not be empty")
        out.append(Deviation(what, source))
    return tuple(out)


CHECK_ROLES = ("premise", "effect")


def _checks(data: Any, metrics: tuple[Metric, ...]) -> tuple[Check, ...]:
    data = data or []
    check(isinstance(data, list), "checks must be a list of {role, what, metric, cell, minus, at_least | at_most}")
    names, out = [m.name for m in metrics], []
    for i, item in enumerate(data):
        where = f"checks[{i}]"
        item = _keys(item, where, ("role", "what", "metric", "cell"), ("minus", "at_least", "at_most"))
        check(item["role"] in CHECK_ROLES, f"{where}: unknown role '{item['role']}'; valid: {', '.join(CHECK_ROLES)}")
        check(item["metric"] in names, f"{where}: no metric '{item['metric']}'; metrics: {', '.join(names)}")
        bounds = [b for b in ("at_least", "at_most") if item.get(b) is not None]
        check(len(bounds) == 1, f"{where}: give exactly one of at_least, at_most")
        bound = item[bounds[0]]
        check(isinstance(bound, (int, float)) and not isinstance(bound, bool) and math.isfinite(bound),
              f"{where}: {bounds[0]} must be a finite number")
        out.append(Check(str(item["role"]), str(item["what"]).strip(), str(item["metric"]), str(item["cell"]),
                         str(item["minus"]) if item.get("minus") is not None else None,
                         item.get("at_least"), item.get("at_most")))
    return tuple(out)


TOP_LEVEL = ("name", "title", "source", "axes", "rows", "presets")
OPTIONAL = ("columns", "metrics", "base", "exclude", "paper", "notes", "deviations", "checks")


def spec_from_dict(data: Any, default_name: str = "sweep") -> SweepSpec:
    data = _keys(data, "the sweep file", TOP_LEVEL, OPTIONAL)
    check(isinstance(data["presets"], dict) and data["presets"], "presets must map names to settings")
    presets = {str(n): _preset(str(n), p or {}) for n, p in data["presets"].items()}
    axes = _axes(data["axes"], presets)
    rows, columns = _layout(data, axes)
    metrics_data = data.get("metrics") or [{"name": "accuracy"}]
    check(isinstance(metrics_data, list), "metrics must be a list")
    metrics = tuple(_metric(m, f"metrics[{i}]") for i, m in enumerate(metrics_data))
    names = [m.name for m in metrics]
    check(len(set(names)) == len(names), f"metric names repeat: {names}")
    spec = SweepSpec(name=str(data["name"] or default_name), title=str(data["title"]), source=str(data["source"]),
                     axes=axes, rows=rows, columns=columns, metrics=metrics, presets=presets,
                     base=_strings(data.get("base"), "base"), exclude=_exclude(data.get("exclude"), axes),
                     notes=str(data.get("notes") or "").strip(), deviations=_deviations(data.get("deviations")),
                     checks=_checks(data.get("checks"), metrics))
    cells = spec.cells()
    check(bool(cells), "every cell of the grid is excluded")
    spec = dataclasses.replace(spec, paper=_paper(data.get("paper"), cells, metrics))
    _check_references(spec, cells)
    return spec


def _check_references(spec: SweepSpec, cells: list[Cell]) -> None:
    keys = {c.key for c in cells}
    for item in spec.checks:
        for pair in expand_check(spec, item):
            for key in pair:
                check(key is None or key in keys, f"sweep '{spec.name}' check '{item.what}': no cell '{key}'")
    for cell in cells:
        for preset in spec.presets:
            for override in spec.cell_overrides(cell, preset):
                for pattern in CELL_REFERENCE.findall(override):
                    target = spec.reference_key(pattern, cell)
                    check(target in keys,
                          f"sweep '{spec.name}' cell {cell.key}: '${{cell:{pattern}}}' names no cell ('{target}')")
        for metric in spec.metrics:
            if metric.reference:
                target = spec.reference_key(metric.reference, cell)
                check(target in keys, f"sweep '{spec.name}' metric '{metric.name}': reference '{target}' is not a cell")


def expand_check(spec: SweepSpec, item: Check) -> list[tuple[str, str | None]]:
    """The (cell, minus) key pairs of a check, one per value of each `{axis}` it names."""
    import string

    patterns = [item.cell] + ([item.minus] if item.minus else [])
    fields = sorted({f for p in patterns for _, f, _, _ in string.Formatter().parse(p) if f})
    axes = [a.name for a in spec.axes]
    for field in fields:
        check(field in axes,
              f"sweep '{spec.name}' check '{item.what}': '{{{field}}}' is not an axis; axes: {', '.join(axes)}")
    out = []
    for combo in spec.combos(tuple(fields)):
        keys = {axis: value.key for axis, value in combo}
        pair = (item.cell.format(**keys), item.minus.format(**keys) if item.minus else None)
        if all(p is None or not spec.is_excluded(dict(zip(axes, p.split("/")))) for p in pair):
            out.append(pair)
    return out


def load_spec(path: Path | str) -> SweepSpec:
    """Parse and validate a sweep file; any problem is one ConfigError line."""
    import yaml

    path = Path(path)
    check(path.is_file(), f"no sweep file {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {' '.join(str(error).split())[:200]}") from None
    try:
        return spec_from_dict(data, path.stem)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
