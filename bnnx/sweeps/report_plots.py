"""The report's figures: accuracy curves and scheduled values per epoch, one line per cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_curves(results, path: Path) -> None:
    """Test accuracy per epoch: one panel per table column, one line per table row (mean ± std
    over the completed seeds, cut to the shortest curve)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    spec, preset = results.spec, results.preset
    panels = spec.combos(spec.columns)
    ncols = min(len(panels), 2)
    nrows = -(-len(panels) // ncols)
    figure = Figure(figsize=(6 * ncols, 4 * nrows))
    FigureCanvasAgg(figure)
    for i, column in enumerate(panels):
        axes = figure.add_subplot(nrows, ncols, i + 1)
        for color, row in enumerate(spec.combos(spec.rows)):  # one colour per table row in every panel
            key = spec.cell_key(row, column)
            curves = [c for c in results.curves.get(key, []) if c] if key else []
            if not curves:
                continue
            length = min(len(c) for c in curves)
            data = np.array([c[:length] for c in curves]) * 100
            mean, std = data.mean(axis=0), data.std(axis=0)
            epochs = np.arange(1, length + 1)
            label = " · ".join(v.label(preset) for _, v in row) + f" ({len(curves)})"
            axes.plot(epochs, mean, color=f"C{color % 10}", label=label)
            axes.fill_between(epochs, mean - std, mean + std, color=f"C{color % 10}", alpha=0.2)
        axes.set_title(" · ".join(v.label(preset) for _, v in column) or spec.name, fontsize=9)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # one value per whole epoch
        axes.set_xlabel("epoch")
        axes.set_ylabel("test accuracy (%)")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7)
    _save(figure, path)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    _write(figure, path)


def _write(figure, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(path)


def schedule_keys(results) -> list[str]:
    """Every scheduled value some completed run logged, lr first."""
    keys = {key for runs in results.schedules.values() for run in runs for key in run}
    return sorted(keys, key=lambda key: (key != "lr", key))


# y labels with units; values whose key is in PERCENT are fractions, drawn as percentages
SCHEDULE_LABELS = {
    "lr": "learning rate (per step)", "beta": "β, tanh mirror sharpness", "gamma": "γ, Bop momentum rate (per step)",
    "threshold": "τ, Bop flip threshold", "lam": "λ, BNEW binarization weight", "expansion": "λ growth (× start)",
    "flip_ratio": "weights flipped per step (%)", "binary_fraction": "weights at ±1 (%)",
    "freezing_fraction": "frozen weights (%)", "binary": "binary-masked weights (%)",
    "num_binary_layers": "binary layers (count)",
}
PERCENT = ("flip_ratio", "binary_fraction", "freezing_fraction", "binary")


def schedule_series(results, key: str) -> dict[str, np.ndarray]:
    """Per cell that logged `key`: its mean over seeds per epoch (cut to the shortest run)."""
    out = {}
    for cell, runs in sorted(results.schedules.items()):
        series = [run[key] for run in runs if run.get(key)]
        if series:
            length = min(len(s) for s in series)
            out[cell] = np.mean([s[:length] for s in series], axis=0) * (100 if key in PERCENT else 1)
    return out


def constant_note(key: str, series: dict[str, np.ndarray]) -> str | None:
    """`threshold = 1e-08 (4 cells)` when every cell's series is constant, else None."""
    if not series or any(np.ptp(s) > 1e-12 * max(np.max(np.abs(s)), 1e-30) for s in series.values()):
        return None
    by_value: dict[str, list[str]] = {}
    for cell, values in series.items():
        by_value.setdefault(f"{values[0]:.3g}", []).append(cell)
    parts = [f"{value} ({', '.join(cells) if len(cells) <= 2 else f'{len(cells)} cells'})"
             for value, cells in by_value.items()]
    return f"{key} = " + "; ".join(parts)


def plot_schedules(results, path: Path) -> bool:
    """One panel per scheduled value that changes, one line per cell that logged it (mean over
    its seeds; log scale where it spans more than two decades), one legend for the figure beside
    the panels, and values constant in every cell as a note below them; nothing when no run
    logged a value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    keys = schedule_keys(results)
    if not keys:
        return False
    cells = sorted(results.schedules)
    colors = {cell: _color(i, len(cells)) for i, cell in enumerate(cells)}
    series = {key: schedule_series(results, key) for key in keys}
    notes = [note for key in keys if (note := constant_note(key, series[key]))]
    varying = [key for key in keys if constant_note(key, series[key]) is None]
    ncols = max(1, min(len(varying), 3))
    nrows = max(1, -(-len(varying) // ncols))
    figure = Figure(figsize=(4.6 * ncols + 2.6, 3.4 * nrows + 0.3 * len(notes) + 0.3))
    FigureCanvasAgg(figure)
    for i, key in enumerate(varying):
        axes = figure.add_subplot(nrows, ncols, i + 1)
        for cell, mean in series[key].items():
            axes.plot(np.arange(1, len(mean) + 1), mean, color=colors[cell])
        positive = [v for line in axes.lines for v in np.asarray(line.get_ydata(), float).ravel() if v > 0]
        if positive and max(positive) > 100 * min(positive):
            axes.set_yscale("log")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # one value per whole epoch
        axes.set_xlabel("epoch")
        axes.set_ylabel(SCHEDULE_LABELS.get(key, key), fontsize=8)
        axes.grid(alpha=0.3)
    panels_right = 1 - 2.5 / figure.get_figwidth()
    figure.tight_layout(rect=(0, (0.3 * len(notes) + 0.1) / figure.get_figheight() if notes else 0, panels_right, 1))
    handles = [Line2D([], [], color=colors[cell]) for cell in cells]
    figure.legend(handles, [_cell_label(results, cell) for cell in cells], loc="center left", fontsize=7,
                  bbox_to_anchor=(panels_right, 0.5), title="cell (seeds)", title_fontsize=7, frameon=False)
    if notes:
        figure.text(0.01, 0.01, "constant over the run: " + "\n".join(notes), fontsize=7, va="bottom")
    _write(figure, path)
    return True


def _color(index: int, count: int):
    from matplotlib import colormaps

    return f"C{index}" if count <= 10 else colormaps["tab20"](index % 20)


def _cell_label(results, cell: str) -> str:
    return f"{cell} ({len(results.schedules[cell])})"
