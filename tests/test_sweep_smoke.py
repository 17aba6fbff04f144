"""Every shipped paper table's smoke preset runs end to end through `bnnx sweep` and `bnnx report`
(stable_signs.yaml, with a kill and resume on top, is in test_report.py)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from bnnx.io import read_json
from bnnx.sweeps import load_spec
from bnnx.sweeps.report import collect
from bnnx.sweeps.timing import speedup

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def run_smoke(run_cli, tmp_path: Path, name: str):
    path, out = SWEEPS / f"{name}.yaml", tmp_path / name
    spec = load_spec(path)
    code, output = run_cli("sweep", str(path), "--preset", "smoke", "--out", str(out), "-q")
    assert code == 0, output
    runs = len(spec.cells()) * len(spec.preset("smoke").seeds)
    assert f"{runs} runs ({runs} completed)" in output, output
    code, output = run_cli("report", str(out))
    assert code == 0, output
    assert (out / "report.md").exists() and (out / "curves.png").exists()
    return spec, out, collect(out)


@pytest.mark.parametrize("name", ["bnew_cifar", "rpr_imagenet", "ppt_speedup", "ilb_order"])
def test_smoke_preset_runs_every_cell_and_reports_its_accuracy(run_cli, tmp_path, name):
    spec, out, results = run_smoke(run_cli, tmp_path, name)
    assert spec.preset("smoke").seeds == (0,)
    accuracy = spec.metrics[0]
    assert accuracy.key == "test_accuracy"
    for cell in spec.cells():
        stats = results.stats[cell.key, accuracy.name]
        assert stats.done == stats.planned == stats.n == 1
        summary = read_json(out / cell.key / "seed0" / "summary.json")
        assert stats.values[0] == pytest.approx(accuracy.scale * summary["test_accuracy"])
    table = list(csv.reader(open(out / "report.csv")))
    paper_rows = math.prod(len(spec.axis(a).values) for a in spec.rows)
    assert len(table) == 1 + paper_rows  # the header, then the paper's rows
    EXTRA_CHECKS.get(name, lambda *_: None)(spec, out, results)


def ppt_speedups_are_against_the_same_seeds_scratch_run(spec, out, results):
    for setting in ("cifar10", "cifar100"):
        # the reference cell against itself is exactly 1x; a PPT cell is its own run against it (none if unreached)
        assert results.stats[f"scratch/{setting}", "speedup x"].values == [1.0]
        scratch_dir = out / f"scratch/{setting}/seed0"
        for ppt in ("ppt10", "ppt25", "ppt50"):
            expected = speedup(scratch_dir, out / f"{ppt}/{setting}/seed0")["epoch_speedup"]
            assert results.stats[f"{ppt}/{setting}", "speedup x"].values == ([] if expected is None else [expected])
        # the premise cell: the FP twin's epochs to its own plateau, as its summary records them
        own = read_json(out / f"fp/{setting}/seed0/summary.json")["time_to_plateau"]["epochs"]
        assert results.stats[f"fp/{setting}", "epochs to own plateau"].values == [own]


def ilb_orders_end_as_binary_as_the_baseline(spec, out, results):
    for setting in ("mlp_mnist", "resnet20_cifar10"):
        counts = {order.key: results.stats[f"{order.key}/{setting}", "binary params"].values
                  for order in spec.axis("Order").values}
        baseline = counts.pop("scratch")
        assert baseline[0] > 0 and all(c == baseline for c in counts.values()), counts
        assert (out / f"sensitivity/{setting}/seed0/sensitivity.json").exists()


EXTRA_CHECKS = {"ppt_speedup": ppt_speedups_are_against_the_same_seeds_scratch_run,
                "ilb_order": ilb_orders_end_as_binary_as_the_baseline}
