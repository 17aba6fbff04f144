"""The report's figures: accuracy curves and scheduled values per epoch, one line per cell."""

from __future__ import annotations

from pathlib import Path


def plot_curves(results, path: Path) -> None:
    """Test accuracy per epoch: one panel per table column, one line per table row (mean ± std
    over the completed seeds, cut to the shortest curve)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
        axes.set_xlabel("epoch")
        axes.set_ylabel("test accuracy (%)")
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7)
    _save(figure, path)


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(path)


def schedule_keys(results) -> list[str]:
    """Every scheduled value some completed run logged, lr first."""
    keys = {key for runs in results.schedules.values() for run in runs for key in run}
    return sorted(keys, key=lambda key: (key != "lr", key))


def plot_schedules(results, path: Path) -> bool:
    """One panel per scheduled value, one line per cell that logged it (mean over its seeds,
    log scale where the value spans more than two decades); nothing when no run logged one."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = schedule_keys(results)
    if not keys:
        return False
    ncols = min(len(keys), 3)
    figure = Figure(figsize=(5 * ncols, 3.6 * -(-len(keys) // ncols)))
    FigureCanvasAgg(figure)
    for i, key in enumerate(keys):
        axes = figure.add_subplot(-(-len(keys) // ncols), ncols, i + 1)
        for color, (cell, runs) in enumerate(sorted(results.schedules.items())):
            series = [run[key] for run in runs if run.get(key)]
            if not series:
                continue
            length = min(len(s) for s in series)
            mean = np.mean([s[:length] for s in series], axis=0)
            axes.plot(np.arange(1, length + 1), mean, color=f"C{color % 10}", label=f"{cell} ({len(series)})")
        positive = [v for line in axes.lines for v in np.asarray(line.get_ydata()) if v > 0]
        if positive and max(positive) > 100 * min(positive):
            axes.set_yscale("log")
        axes.set_title(key, fontsize=9)
        axes.set_xlabel("epoch")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=6)
    _save(figure, path)
    return True
