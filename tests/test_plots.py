"""Figures read like curves.png: constant schedules as a note, log axes with several labels."""

from types import SimpleNamespace

import numpy as np

from bnnx.analysis.plots import _percent_axis
from bnnx.sweeps.report_plots import constant_note, plot_schedules, schedule_series


def test_constant_schedules_become_a_note_grouped_by_value():
    results = SimpleNamespace(schedules={
        "bop/a": [{"threshold": [1e-8] * 3, "gamma": [0.002] * 3, "flip_ratio": [0.05, 0.03, 0.02]}] * 2,
        "bop/b": [{"threshold": [1e-8] * 3, "gamma": [0.0005] * 3, "flip_ratio": [0.04, 0.03, 0.03]}],
        "ste/a": [{"lr": [1e-3, 5e-4, 1e-4]}],
    })
    assert constant_note("threshold", schedule_series(results, "threshold")) == "threshold = 1e-08 (bop/a, bop/b)"
    assert constant_note("gamma", schedule_series(results, "gamma")) == "gamma = 0.002 (bop/a); 0.0005 (bop/b)"
    assert constant_note("flip_ratio", schedule_series(results, "flip_ratio")) is None
    assert np.allclose(schedule_series(results, "flip_ratio")["bop/a"], [5.0, 3.0, 2.0])  # a fraction, in %


def test_schedules_figure_is_written(tmp_path):
    results = SimpleNamespace(schedules={f"cell{i}": [{"lr": [1e-3, 1e-4], "threshold": [1e-8] * 2}]
                                         for i in range(18)})
    assert plot_schedules(results, tmp_path / "schedules.png")
    assert (tmp_path / "schedules.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_percent_axis_over_two_decades_labels_several_ticks():
    from matplotlib.figure import Figure

    axes = Figure().add_subplot()
    axes.plot([1, 2, 3], [5.3, 1.0, 0.09])
    _percent_axis(axes)
    low, high = axes.get_ylim()
    labels = [t.get_text() for t in axes.yaxis.get_ticklabels() if t.get_text() and low <= t.get_position()[1] <= high]
    assert axes.get_yscale() == "log" and len(labels) >= 5, labels

    axes = Figure().add_subplot()
    axes.plot([1, 2], [1.0, 2.0])
    _percent_axis(axes)
    assert axes.get_yscale() == "linear"
