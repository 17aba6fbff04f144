"""A sweep's table beside the paper's: `bnnx report <sweep dir>`.

Reads the sweep folder (sweep.yaml, sweep.json and each run's files), and writes
- report.md: the command, date, machine and preset, then the table with the paper's rows and
  columns, each cell "mean ± std (n)" over seeds beside the paper's number and the difference;
- report.csv: the same table as numbers (per column: mean, std, n, paper, diff, the 95 %
  confidence interval and the per-seed values);
- the sweep's checks (premises of the analog, the paper's effects) on their 95 % intervals, in
  report.md and checks.csv (bnnx/sweeps/report_checks.py);
- curves.png: test accuracy per epoch, mean over seeds with a ±1 std band, per cell;
- schedules.png: each scheduled value the runs logged per epoch (lr, BMD's β, BNEW's λ and
  expansion, Bop's γ, RPR's freezing fraction, …), mean over seeds, per cell.
Only completed runs count; a partial sweep reports what is done and marks the rest.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

from bnnx.errors import check
from bnnx.io import read_json_object, write_text
from bnnx.sweeps.metrics import accuracy_curve, run_value, scheduled_rows
from bnnx.sweeps.parse import load_spec
from bnnx.sweeps.report_checks import check_results, checks_csv_rows, checks_markdown, format_interval, interval
from bnnx.sweeps.report_plots import plot_curves, plot_schedules
from bnnx.sweeps.runner import INDEX_FILE, SPEC_FILE
from bnnx.sweeps.spec import Metric, SweepSpec

MISSING, NOT_RECORDED, EXCLUDED = "missing", "not recorded", "—"
NOT_REACHED = "target not reached"  # a speedup whose run never reached the reference's target


@dataclasses.dataclass
class CellStats:
    """One metric of one cell over its seeds (values already scaled for display)."""

    values: list[float]
    planned: int  # runs of the cell in the sweep
    done: int  # of which completed
    problems: Counter  # runs that are not completed, by status
    no_value: str = NOT_RECORDED  # what a completed run without a value means
    seeds: list[int] = dataclasses.field(default_factory=list)  # the seed of each value

    @property
    def valueless(self) -> int:
        """Completed runs without a value (left out of mean and std)."""
        return self.done - self.n

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclasses.dataclass
class SweepResults:
    sweep_dir: Path
    spec: SweepSpec
    preset: str
    index: dict
    stats: dict[tuple[str, str], CellStats]  # (cell key, metric name)
    curves: dict[str, list[list[float]]]  # cell key -> one accuracy curve per completed run
    schedules: dict[str, list[dict[str, list[float]]]] = dataclasses.field(default_factory=dict)
    # cell key -> per completed run, each scheduled value's per-epoch series
    commits: Counter = dataclasses.field(default_factory=Counter)  # code commit -> completed runs


def _run_commit(run_dir: Path) -> str:
    git = read_json_object(run_dir / "summary.json").get("versions", {}).get("git")
    if not isinstance(git, dict) or not git.get("commit"):
        return "unknown (installed package)"
    return str(git["commit"])[:12] + (" with uncommitted changes" if git.get("dirty") else "")


def _run_status(run_dir: Path) -> str:
    summary = run_dir / "summary.json"
    return str(read_json_object(summary).get("status")) if summary.exists() else "not run"


def collect(sweep_dir: Path | str) -> SweepResults:
    sweep_dir = Path(sweep_dir)
    check((sweep_dir / INDEX_FILE).is_file() and (sweep_dir / SPEC_FILE).is_file(),
          f"{sweep_dir} is not a sweep folder (no {INDEX_FILE}); run `bnnx sweep` first")
    index, spec = read_json_object(sweep_dir / INDEX_FILE, ("runs",)), load_spec(sweep_dir / SPEC_FILE)
    runs = {(e["cell"], e["seed"]): sweep_dir / e["run_dir"] for e in index["runs"]}
    status = {key: _run_status(path) for key, path in runs.items()}
    check(any(s == "completed" for s in status.values()), f"no finished runs in {sweep_dir} yet")
    stats, curves, schedules = {}, {}, {}
    commits = Counter(_run_commit(path) for key, path in runs.items() if status[key] == "completed")
    for cell in sorted({c for c, _ in runs}):
        seeds = sorted(s for c, s in runs if c == cell)
        done = [s for s in seeds if status[cell, s] == "completed"]
        problems = Counter(status[cell, s] for s in seeds if status[cell, s] != "completed")
        curves[cell] = [accuracy_curve(runs[cell, s]) for s in done]
        schedules[cell] = [scheduled_rows(runs[cell, s]) for s in done]
        for metric in spec.metrics:
            values = [(s, _value(spec, metric, cell, s, runs, status)) for s in done]
            values = [(s, v * metric.scale) for s, v in values if v is not None]
            stats[cell, metric.name] = CellStats([v for _, v in values], len(seeds), len(done), problems,
                                                 _no_value(metric), [s for s, _ in values])
    return SweepResults(sweep_dir, spec, index["preset"], index, stats, curves, schedules, commits)


def _no_value(metric: Metric) -> str:
    return NOT_REACHED if metric.source == "speedup" else NOT_RECORDED


def _value(spec: SweepSpec, metric: Metric, cell: str, seed: int, runs: dict, status: dict) -> float | None:
    reference = None
    if metric.reference:
        key = (spec.reference_key(metric.reference, spec.cell(cell)), seed)
        if status.get(key) != "completed":
            return None
        reference = runs[key]
    return run_value(runs[cell, seed], metric, reference)


# ---- the table ----------------------------------------------------------------------------

def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}".replace("-", "−")


def _paper(value, digits: int) -> tuple[str, float | None, float | None]:
    """(text, mean, std) of a paper entry: a number, [mean, std] or a text."""
    if value is None:
        return "", None, None
    if isinstance(value, list):
        return f"{value[0]} ± {value[1]}", float(value[0]), float(value[1])
    if isinstance(value, (int, float)):
        return f"{value}", float(value), None
    return str(value), None, None


def _ours(stats: CellStats | None, digits: int, with_interval: bool = False) -> str:
    if stats is None:
        return "not run"
    if not stats.n:
        if stats.done:
            return f"{stats.no_value} ({stats.done})"
        problems = ", ".join(f"{n} {s}" for s, n in sorted(stats.problems.items()))
        return MISSING + (f" ({problems})" if stats.problems else "")
    count = f"{stats.n}" if stats.n == stats.planned else f"{stats.n}/{stats.planned}"
    if stats.valueless:
        count += f"; {stats.valueless} {stats.no_value}"
    if with_interval:
        return f"{format_interval(stats.mean, interval(stats.values), digits)} ({count})"
    spread = f" ± {_fmt(stats.std, digits)}" if stats.std is not None else ""
    return f"{_fmt(stats.mean, digits)}{spread} ({count})"


def _is_analog(values, preset: str) -> bool:
    """A cell whose preset renames one of its axis values runs a small analog of the paper's
    setting (e.g. Fashion-MNIST for CIFAR-10): its numbers are not comparable with the paper's."""
    return any(value.label(preset) != value.name for _, value in values)


def _diff(stats: CellStats | None, paper_mean: float | None, digits: int) -> tuple[str, float | None]:
    if stats is None or stats.mean is None or paper_mean is None:
        return "", None
    diff = stats.mean - paper_mean
    return ("+" if diff >= 0 else "") + _fmt(diff, digits), diff


def column_labels(results: SweepResults) -> list[tuple[str, tuple, Metric]]:
    spec, preset = results.spec, results.preset
    out = []
    for column in spec.combos(spec.columns):
        for metric in spec.metrics:
            named = len(spec.metrics) > 1 or not column
            parts = [value.label(preset) for _, value in column] + ([metric.name] if named else [])
            out.append((" · ".join(parts), column, metric))
    return out


def build_table(results: SweepResults) -> tuple[list[str], list[list[str]], list[str], list[list]]:
    """(markdown header, markdown rows, csv header, csv rows), rows and columns as in the paper."""
    spec, preset = results.spec, results.preset
    columns = column_labels(results)
    md_header = [spec.axis(a).name for a in spec.rows]
    csv_header = list(md_header)
    for label, _, _ in columns:
        md_header += [f"{label}: ours", "paper", "Δ"]
        csv_header += [f"{label} {part}" for part in CSV_PARTS]
    md_rows, csv_rows = [], []
    for row in spec.combos(spec.rows):
        names = [value.label(preset) for _, value in row]
        md_row, csv_row = list(names), list(names)
        for _, column, metric in columns:
            key = spec.cell_key(row, column)
            if key is None:
                md_row += [EXCLUDED, EXCLUDED, ""]
                csv_row += [""] * len(CSV_PARTS)
                continue
            stats = results.stats.get((key, metric.name))
            paper_text, paper_mean, _ = _paper(spec.paper.get(key, {}).get(metric.name), metric.digits)
            comparable = not _is_analog(row + column, preset)
            diff_text, diff = _diff(stats, paper_mean if comparable else None, metric.digits)
            md_row += [_ours(stats, metric.digits, metric.interval), paper_text, diff_text]
            bounds = interval(stats.values) if stats else None
            csv_row += [_csv_number(stats.mean if stats else None), _csv_number(stats.std if stats else None),
                        stats.n if stats else 0, paper_text, _csv_number(diff),
                        *(_csv_number(b) for b in (bounds or (None, None))),
                        ";".join(f"{s}:{v:.6g}" for s, v in zip(stats.seeds, stats.values)) if stats else ""]
        md_rows.append(md_row)
        csv_rows.append(csv_row)
    return md_header, md_rows, csv_header, csv_rows


CSV_PARTS = ("mean", "std", "n", "paper", "diff", "ci95_low", "ci95_high", "per-seed (seed:value)")


def _csv_number(value: float | None):
    return "" if value is None or not math.isfinite(value) else value


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, rows)])


def _header(results: SweepResults, command: str) -> str:
    index, spec = results.index, results.spec
    machine = index.get("machine", {})
    counts = Counter(_run_status(results.sweep_dir / e["run_dir"]) for e in index["runs"])
    runs = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    preset = spec.presets.get(results.preset)
    return "\n".join([
        f"# {spec.title}", "",
        f"- Command: `{index.get('command') or 'bnnx sweep'}`, then `{command}`",
        f"- Date: {datetime.now().isoformat(timespec='seconds')} (sweep started {index.get('created')}, "
        f"last update {index.get('updated')})",
        f"- Machine: {machine.get('platform')}; CPU: {machine.get('cpu')} ({machine.get('cpu_count')} cores); "
        f"jax device: {machine.get('jax_device')}",
        f"- Preset: **{results.preset}**" + (f": {preset.description}" if preset and preset.description else ""),
        f"- Source: {spec.source}",
        f"- Code: commit {', '.join(f'{c} ({n} runs)' for c, n in results.commits.most_common()) or 'unknown'}",
        f"- Runs: {len(index['runs'])} planned: {runs}", ""])


def _footer(spec: SweepSpec) -> str:
    text = ("Each cell: mean ± sample std over seeds (n completed runs; n/N when some are not done), "
            "the paper's number and Δ = ours − paper, left blank where the preset runs a small analog "
            "in place of the paper's setting (a renamed row or column). `—`: no such cell in the paper. ")
    if spec.deviations:
        text += "\n\nDeviations from the paper (and where each choice comes from):\n\n" + "\n".join(
            f"- {d.what} (source: {d.source})" for d in spec.deviations)
    return text + (f"\n\n{spec.notes}" if spec.notes else "")


def _csv_text(rows: list[list]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def write_report(sweep_dir: Path | str, command: str = "bnnx report") -> tuple[SweepResults, str]:
    """Write report.md, report.csv, curves.png and (when the runs logged any) schedules.png into
    the sweep folder; returns the table text."""
    results = collect(sweep_dir)
    md_header, md_rows, csv_header, csv_rows = build_table(results)
    table = markdown_table(md_header, md_rows)
    checks = check_results(results.spec, results.stats)
    checks_text = checks_markdown(checks, {m.name: m.digits for m in results.spec.metrics})
    write_text(results.sweep_dir / "report.md", f"{_header(results, command)}\n{table}\n\n{_footer(results.spec)}\n"
               + (f"\n{checks_text}\n" if checks_text else ""))
    write_text(results.sweep_dir / "report.csv", _csv_text([csv_header, *csv_rows]))
    if checks:
        write_text(results.sweep_dir / "checks.csv", _csv_text(checks_csv_rows(checks)))
    plot_curves(results, results.sweep_dir / "curves.png")
    plot_schedules(results, results.sweep_dir / "schedules.png")
    return results, table
