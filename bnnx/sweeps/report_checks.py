"""Confidence intervals and a sweep's checks: the premises its analog needs for the paper's
effect to be able to appear, and the effects themselves, each tested on its 95 % interval.

A check is one metric of one cell, or the per-seed difference of two cells (paired by seed);
its verdict comes from the interval, never from the mean alone: "holds" when the whole interval
clears the bound, "does not hold" when the whole interval misses it, "inconclusive" otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from bnnx.sweeps.parse import expand_check
from bnnx.sweeps.spec import Check

LEVEL = 0.95


def interval(values: list[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The Student-t confidence interval of the mean (None for fewer than two values)."""
    if len(values) < 2:
        return None
    from scipy import stats

    mean, sem = statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * sem
    return mean - half, mean + half


@dataclasses.dataclass
class CheckResult:
    check: Check
    cell: str
    minus: str | None
    values: list[float]  # per seed (the difference when `minus` is set)
    seeds: list[int]

    @property
    def bound(self) -> tuple[str, float]:
        c = self.check
        if c.at_least is not None:
            return "≥", c.at_least
        assert c.at_most is not None  # a check states one of the two (bnnx.sweeps.parse)
        return "≤", c.at_most

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return interval(self.values)

    @property
    def verdict(self) -> str:
        if not self.values:
            return "not measured"
        sign, bound = self.bound
        mean = statistics.fmean(self.values)
        low, high = self.interval or (mean, mean)
        clears = low >= bound if sign == "≥" else high <= bound
        misses = high < bound if sign == "≥" else low > bound
        suffix = "" if self.interval else " (one seed, no interval)"
        if clears:
            return "holds" + suffix
        if misses:
            return "does not hold" + suffix
        return f"inconclusive (the interval contains {bound:g})"


def check_results(spec, stats: dict) -> list[CheckResult]:
    """Every check of the sweep, expanded over its `{axis}` values, on the collected per-seed values."""
    out = []
    for item in spec.checks:
        for cell, minus in expand_check(spec, item):
            own = _by_seed(stats.get((cell, item.metric)))
            other = _by_seed(stats.get((minus, item.metric))) if minus else None
            seeds = sorted(s for s in own if other is None or s in other)
            values = [own[s] - (other[s] if other is not None else 0.0) for s in seeds]
            out.append(CheckResult(item, cell, minus, values, seeds))
    return out


def _by_seed(stats) -> dict[int, float]:
    return dict(zip(stats.seeds, stats.values)) if stats is not None else {}


def _number(value: float, digits: int) -> str:
    text = f"{value:.{digits}f}"
    if float(text) == 0:
        text = text.lstrip("-")  # no "−0.0"
    return text.replace("-", "−")


def format_interval(mean: float | None, bounds: tuple[float, float] | None, digits: int) -> str:
    if mean is None:
        return ""
    text = _number(mean, digits)
    if bounds is not None:
        text += f" [{_number(bounds[0], digits)}, {_number(bounds[1], digits)}]"
    return text


def checks_markdown(results: list[CheckResult], digits: dict[str, int]) -> str:
    if not results:
        return ""
    lines = ["## Premises and effects", "",
             "Each check on its per-seed values (a difference of two cells is paired by seed): mean "
             f"[{LEVEL:.0%} Student-t confidence interval]; it holds only when the whole interval clears the bound.",
             "",
             "| role | check | measured | mean [95 % CI] | per seed | criterion | verdict |",
             "|---|---|---|---|---|---|---|"]
    previous = None
    for r in results:
        measured = f"{r.check.metric}: {r.cell}" + (f" − {r.minus}" if r.minus else "")
        places = digits.get(r.check.metric, 2)
        per_seed = ", ".join(_number(v, places) for v in r.values)
        sign, bound = r.bound
        what, previous = ("" if r.check is previous else r.check.what), r.check  # once per check
        lines.append(f"| {r.check.role} | {what} | {measured} | {format_interval(r.mean, r.interval, places)} "
                     f"| {per_seed} | {sign} {bound:g} | {r.verdict} |")
    return "\n".join(lines)


def checks_csv_rows(results: list[CheckResult]) -> list[list]:
    rows: list[list] = [["role", "check", "metric", "cell", "minus", "n", "mean", "ci95_low", "ci95_high", "bound",
                         "verdict", "seeds", "values"]]
    for r in results:
        low, high = r.interval or ("", "")
        sign, bound = r.bound
        rows.append([r.check.role, r.check.what, r.check.metric, r.cell, r.minus or "", len(r.values),
                     "" if r.mean is None else r.mean, low, high, f"{sign} {bound:g}", r.verdict,
                     ";".join(map(str, r.seeds)), ";".join(f"{v:.6g}" for v in r.values)])
    return rows
