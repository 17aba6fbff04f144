"""`bnnx report`: numbers equal mean/std computed by hand on fake run folders, the layout is the
paper's, partial sweeps are marked; and one shipped sweep file's smoke preset end to end."""

from __future__ import annotations

import csv
import re
import shutil
import statistics
from pathlib import Path

import pytest
import yaml

from bnnx.errors import ConfigError
from bnnx.io import read_json, read_jsonl, write_json, write_jsonl
from bnnx.sweeps.report import build_table, collect, write_report

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"

FAKE = {
    "name": "fake",
    "title": "Fake table",
    "source": "a paper",
    "metrics": [
        {"name": "top-1", "key": "test_accuracy", "scale": 100, "digits": 1},
        {"name": "speedup", "source": "speedup", "key": "epoch_speedup", "reference": "scratch/{data}", "digits": 2},
        {"name": "flips", "source": "signs.json", "key": "all.flip_ratio.-1", "scale": 100, "digits": 2},
    ],
    "axes": [
        {
            "name": "method",
            "values": [
                {"key": "scratch", "name": "Scratch"},
                {"key": "ppt", "name": "PPT"},
                {"key": "bop", "name": "Bop"},
            ],
        },
        {"name": "data", "values": [{"key": "a", "name": "Data A"}, {"key": "b", "name": "Data B"}]},
    ],
    "rows": ["method"],
    "columns": ["data"],
    "paper": {"scratch/a": {"top-1": [90.0, 0.5]}, "ppt/a": {"top-1": 88, "speedup": "1.26-1.61"}},
    "presets": {"cpu": {"description": "the fake preset", "seeds": 2}},
}
# cell -> seed -> (status, test accuracy curve, flip ratios)
RUNS = {
    "scratch/a": {
        0: ("completed", [0.5, 0.7, 0.8, 0.9], [0.2, 0.1]),
        1: ("completed", [0.4, 0.6, 0.82, 0.84], [0.3, 0.05]),
    },
    "ppt/a": {
        0: ("completed", [0.6, 0.85, 0.9, 0.9], [0.1, 0.02]),
        1: ("completed", [0.7, 0.84, 0.84, 0.83], [0.1, 0.04]),
    },
    "scratch/b": {0: ("completed", [0.3, 0.5], [0.5, 0.1]), 1: ("completed", [0.35, 0.55], [0.4, 0.2])},
    "ppt/b": {0: ("completed", [0.5, 0.6], [0.3, 0.1]), 1: ("interrupted", [0.45], [0.3])},
    "bop/a": {},
    "bop/b": {},  # planned, never run
}


def fake_sweep(root: Path, spec: dict = FAKE, runs: dict = RUNS, preset: str = "cpu", seeds=(0, 1)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sweep.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    entries = []
    for cell, by_seed in runs.items():
        for seed in seeds:
            entries.append({"cell": cell, "seed": seed, "run_dir": f"{cell}/seed{seed}", "status": "?", "error": None})
            if seed not in by_seed:
                continue
            status, curve, flips = by_seed[seed]
            run_dir = root / cell / f"seed{seed}"
            write_jsonl(
                run_dir / "metrics.jsonl",
                [{"epoch": e, "test_accuracy": a, "epoch_time_s": 1.0} for e, a in enumerate(curve)],
            )
            write_json(run_dir / "summary.json", {"status": status, "test_accuracy": curve[-1], "seed": seed})
            write_json(run_dir / "signs.json", {"all": {"flip_ratio": flips, "epochs_until_95pct_fixed": 1}})
    write_json(
        root / "sweep.json",
        {
            "sweep": spec["name"],
            "preset": preset,
            "command": f"bnnx sweep x.yaml --preset {preset}",
            "created": "2024-01-01T00:00:00",
            "updated": "2024-01-01T01:00:00",
            "machine": {"platform": "Linux-test", "cpu": "Test CPU", "cpu_count": 2, "jax_device": "cpu ×1"},
            "runs": entries,
        },
    )
    return root


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path) as f:
        return {row["method"]: row for row in csv.DictReader(f)}


def test_report_numbers_equal_mean_and_std_by_hand(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    _, table = write_report(root, command="bnnx report sweep")
    rows = csv_rows(root / "report.csv")
    top1 = [0.9 * 100, 0.84 * 100]  # final accuracies of scratch/a
    assert float(rows["Scratch"]["Data A · top-1 mean"]) == pytest.approx(statistics.fmean(top1))
    assert float(rows["Scratch"]["Data A · top-1 std"]) == pytest.approx(statistics.stdev(top1))
    assert rows["Scratch"]["Data A · top-1 n"] == "2"
    assert float(rows["Scratch"]["Data A · top-1 diff"]) == pytest.approx(statistics.fmean(top1) - 90.0)
    assert rows["Scratch"]["Data A · top-1 paper"] == "90.0 ± 0.5"
    # speedup: target = scratch plateau - 0.005; seed 0: 4 epochs vs 3, seed 1: 4 epochs vs 2
    speedups = [4 / 3, 4 / 2]
    assert float(rows["PPT"]["Data A · speedup mean"]) == pytest.approx(statistics.fmean(speedups))
    assert float(rows["PPT"]["Data A · speedup std"]) == pytest.approx(statistics.stdev(speedups))
    assert float(rows["Scratch"]["Data A · speedup mean"]) == 1.0
    flips = [0.02 * 100, 0.04 * 100]
    assert float(rows["PPT"]["Data A · flips mean"]) == pytest.approx(statistics.fmean(flips))
    assert "| PPT | 86.5 ± 4.9 (2) | 88 | −1.5 | 1.67 ± 0.47 (2) | 1.26-1.61 |" in table


def test_no_difference_against_the_paper_where_the_preset_runs_an_analog(tmp_path):
    spec = yaml.safe_load(yaml.safe_dump(FAKE))
    spec["axes"][1]["values"][0]["presets"] = {"cpu": {"name": "Small A (for Data A)"}}
    root = fake_sweep(tmp_path / "sweep", spec=spec)
    _, table = write_report(root)
    rows = csv_rows(root / "report.csv")
    assert rows["Scratch"]["Small A (for Data A) · top-1 paper"] == "90.0 ± 0.5"  # shown beside, not compared
    assert rows["Scratch"]["Small A (for Data A) · top-1 diff"] == ""
    assert "| PPT | 86.5 ± 4.9 (2) | 88 |  |" in table
    assert "left blank where the preset runs a small analog" in (root / "report.md").read_text()


def test_partial_and_missing_cells_are_marked(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    results = collect(root)
    header, rows, _, _ = build_table(results)
    by_name = {row[0]: dict(zip(header, row)) for row in rows}
    assert by_name["PPT"]["Data B · top-1: ours"] == "60.0 (1/2)"  # one of two seeds done
    assert by_name["Bop"]["Data A · top-1: ours"] == "missing (2 not run)"
    assert csv_rows(write_report(root)[0].sweep_dir / "report.csv")["Bop"]["Data A · top-1 n"] == "0"


def test_a_speedup_whose_run_never_reaches_the_target_is_marked_not_averaged(tmp_path):
    runs = {**RUNS, "ppt/a": {0: RUNS["ppt/a"][0], 1: ("completed", [0.5, 0.6, 0.7, 0.75], [0.1, 0.04])}}
    header, rows, _, _ = build_table(collect(fake_sweep(tmp_path / "sweep", runs=runs)))
    ppt = dict(zip(header, next(row for row in rows if row[0] == "PPT")))
    assert ppt["Data A · speedup: ours"] == "1.33 (1/2; 1 target not reached)"  # seed 0 only: 4/3
    assert ppt["Data A · top-1: ours"] == "82.5 ± 10.6 (2)"
    slow = {**RUNS, "ppt/a": {seed: ("completed", [0.5, 0.6], [0.1]) for seed in (0, 1)}}
    header, rows, _, _ = build_table(collect(fake_sweep(tmp_path / "slow", runs=slow)))
    assert dict(zip(header, rows[1]))["Data A · speedup: ours"] == "target not reached (2)"


def test_report_md_begins_with_command_date_machine_and_preset(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    write_report(root, command="bnnx report sweep")
    lines = (root / "report.md").read_text().splitlines()
    assert lines[0] == "# Fake table"
    assert lines[2] == "- Command: `bnnx sweep x.yaml --preset cpu`, then `bnnx report sweep`"
    assert lines[3].startswith("- Date: ")
    assert lines[4] == "- Machine: Linux-test; CPU: Test CPU (2 cores); jax device: cpu ×1"
    assert lines[5] == "- Preset: **cpu**: the fake preset"
    assert (root / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_lists_the_sweeps_deviations_with_their_sources(tmp_path):
    deviations = [{"what": "200 epochs", "source": "not stated; the common choice"},
                  {"what": "an MLP for the conv net", "source": "CPU analog"}]
    root = fake_sweep(tmp_path / "sweep", spec={**FAKE, "deviations": deviations})
    write_report(root)
    text = (root / "report.md").read_text()
    assert (
        "- 200 epochs (source: not stated; the common choice)\n- an MLP for the conv net (source: CPU analog)" in text
    )
    with pytest.raises(ConfigError, match=r"deviations\[0\]"):
        collect(fake_sweep(tmp_path / "bad", spec={**FAKE, "deviations": [{"what": "x"}]}))


def test_scheduled_values_are_collected_per_run_and_plotted(tmp_path):
    root = fake_sweep(tmp_path / "sweep")
    write_report(root)
    assert not (root / "schedules.png").exists()  # no run logged a scheduled value
    rows = [{"epoch": e, "test_accuracy": 0.5, "epoch_time_s": 1.0, "lr": 1e-3 / (e + 1), "beta": 10.0**e,
             "binary_layers": ["a"]} for e in range(3)]
    write_jsonl(root / "scratch/a/seed0/metrics.jsonl", rows)
    results = collect(root)
    # numbers only (a list of layer names is no schedule); runs without them contribute nothing
    assert results.schedules["scratch/a"] == [
        {"beta": [1.0, 10.0, 100.0], "lr": [1e-3, 5e-4, pytest.approx(1e-3 / 3)]},
        {},
    ]
    write_report(root)
    assert (root / "schedules.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bnew_layout_is_the_posters(tmp_path):
    spec = yaml.safe_load((SWEEPS / "bnew_cifar.yaml").read_text())
    root = fake_sweep(
        tmp_path / "bnew", spec, {"ste/nokd/cifar10": {0: ("completed", [0.843], [0.1])}}, preset="paper", seeds=(0,)
    )
    header, rows, _, _ = build_table(collect(root))
    columns = [h for h in header if h.endswith(": ours")]
    assert columns == [
        "CIFAR-10 · no KD: ours",
        "CIFAR-10 · KD: ours",
        "CIFAR-100 · no KD: ours",
        "CIFAR-100 · KD: ours",
    ]
    assert [row[0] for row in rows] == ["Real valued", "STE", "BMD", "BOP", "BNEW"]
    real = dict(zip(header, rows[0]))
    assert real["CIFAR-10 · KD: ours"] == "—" and real["CIFAR-10 · no KD: ours"] == "not run"
    ste = rows[1]
    assert ste[1:4] == ["84.3 (1)", "84.3 ± 0.3", "+0.0"]


def test_rpr_layout_is_table_1(tmp_path):
    spec = yaml.safe_load((SWEEPS / "rpr_imagenet.yaml").read_text())
    root = fake_sweep(
        tmp_path / "rpr", spec, {"resnet18/binary": {0: ("completed", [0.6462], [0.1])}}, preset="paper", seeds=(0,)
    )
    header, rows, _, _ = build_table(collect(root))
    assert header == ["Model", "Levels", "top-1 %: ours", "paper", "Δ", "top-5 %: ours", "paper", "Δ"]
    assert [tuple(r[:2]) for r in rows][:3] == [("ResNet-18", "full-prec. (baseline)"), ("ResNet-18", "3: {-1, 0, 1}"),
                                                 ("ResNet-18", "2: {-1, 1}")]
    assert [r[0] for r in rows[3::3]] == ["ResNet-50", "GoogLeNet"]
    binary = rows[2]
    assert binary[2:5] == ["64.62 (1)", "64.62", "+0.00"] and binary[5] == "not recorded (1)"


def test_a_folder_without_finished_runs_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not a sweep folder"):
        collect(tmp_path)
    root = fake_sweep(tmp_path / "sweep", runs={"bop/a": {}})
    with pytest.raises(ConfigError, match="no finished runs"):
        collect(root)


def test_smoke_preset_end_to_end_then_resume_after_a_kill(run_cli, tmp_path):
    out = tmp_path / "signs"
    sweep = (
        "sweep",
        str(SWEEPS / "stable_signs.yaml"),
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--only",
        "[nml]*/cosine",
        "-q",
    )
    code, output = run_cli(*sweep)  # the three BWN scalings with the cosine lr
    assert code == 0, output
    assert "3 runs (3 completed); 0 already done, 3 run now" in output
    # simulate kills: one run interrupted after its last checkpoint; one killed during its
    # second epoch, i.e. with one metrics row and the first epoch's checkpoint only
    learned, mean_abs = out / "learned" / "cosine" / "seed0", out / "mean_abs" / "cosine" / "seed0"
    write_json(learned / "summary.json", {**read_json(learned / "summary.json"), "status": "interrupted"})
    (mean_abs / "summary.json").unlink()
    (mean_abs / "metrics.jsonl").write_text((mean_abs / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    shutil.rmtree(max((mean_abs / "checkpoints").iterdir(), key=lambda p: int(p.name)))
    code, output = run_cli(*sweep)
    assert code == 0, output
    assert "1 already done, 2 run now" in output
    assert [r["epoch"] for r in read_jsonl(mean_abs / "metrics.jsonl")] == [0, 1]
    assert [r["epoch"] for r in read_jsonl(learned / "metrics.jsonl")] == [0, 1]
    code, output = run_cli("report", str(out))
    assert code == 0, output
    rows = {r["Scaling"]: r for r in csv.DictReader(open(out / "report.csv"))}
    for name, cell in (("none (sign only)", "none"), ("mean |w| (XNOR-Net)", "mean_abs"), ("learned", "learned")):
        run_dir = out / cell / "cosine" / "seed0"
        assert float(rows[name]["cosine lr · top-1 % mean"]) == pytest.approx(
            100 * read_json(run_dir / "summary.json")["test_accuracy"]
        )
        signs_file = read_json(run_dir / "signs.json")
        assert signs_file["tracked"] == "binary-bound kernels"
        signs = signs_file["all"]
        assert float(rows[name]["cosine lr · final flip % mean"]) == pytest.approx(100 * signs["flip_ratio"][-1])
        assert float(rows[name]["cosine lr · epochs to 95 % fixed mean"]) == signs["epochs_until_95pct_fixed"]
        assert rows[name]["constant lr · top-1 % n"] == "0"  # not selected: not run
    assert "| none (sign only) |" in output and (out / "curves.png").exists()


T_975_DF1 = 12.706204736174707  # Student-t 97.5 % quantile, 1 degree of freedom (two seeds)


def test_checks_give_the_paired_difference_its_interval_and_a_verdict_from_the_interval(tmp_path):
    checks = [
        # PPT − scratch per seed on Data A: seed 0: 90 − 90 = 0, seed 1: 83 − 84 = −1 (top-1 %)
        {
            "role": "effect",
            "what": "ppt is as accurate",
            "metric": "top-1",
            "cell": "ppt/{data}",
            "minus": "scratch/{data}",
            "at_least": -5.0,
        },
        {"role": "premise", "what": "scratch learns", "metric": "top-1", "cell": "scratch/a", "at_least": 89.0},
        {"role": "effect", "what": "ppt is faster", "metric": "speedup", "cell": "ppt/a", "at_most": 1.0},
    ]
    root = fake_sweep(tmp_path / "sweep", spec={**FAKE, "checks": checks})
    write_report(root)
    with open(root / "checks.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["cell"], r["minus"]) for r in rows] == [
        ("ppt/a", "scratch/a"),
        ("ppt/b", "scratch/b"),
        ("scratch/a", ""),
        ("ppt/a", ""),
    ]
    paired = [0.0, -1.0]
    half = T_975_DF1 * statistics.stdev(paired) / 2 ** 0.5
    assert float(rows[0]["mean"]) == pytest.approx(-0.5)
    assert float(rows[0]["ci95_low"]) == pytest.approx(-0.5 - half) and float(rows[0]["ci95_high"]) == pytest.approx(
        -0.5 + half
    )
    assert rows[0]["verdict"] == "inconclusive (the interval contains -5)"  # −0.5 ± 6.4
    assert (
        rows[1]["n"] == "1" and rows[1]["verdict"] == "holds (one seed, no interval)"
    )  # seed 1 of ppt/b is interrupted
    top1 = [90.0, 84.0]
    low = statistics.fmean(top1) - T_975_DF1 * statistics.stdev(top1) / 2 ** 0.5
    assert float(rows[2]["ci95_low"]) == pytest.approx(low) and rows[2]["verdict"].startswith("inconclusive")
    assert rows[3]["verdict"] == "inconclusive (the interval contains 1)"  # speedups 4/3 and 2
    text = (root / "report.md").read_text()
    assert "## Premises and effects" in text and "| premise | scratch learns | top-1: scratch/a |" in text
    report = csv_rows(root / "report.csv")
    assert report["PPT"]["Data A · top-1 per-seed (seed:value)"] == "0:90;1:83"


def test_a_check_verdict_holds_or_fails_only_when_the_whole_interval_clears_or_misses(tmp_path):
    runs = {"scratch/a": {s: ("completed", [0.9 + 0.001 * s], [0.1]) for s in (0, 1)},
            "ppt/a": {s: ("completed", [0.8 + 0.001 * s], [0.1]) for s in (0, 1)}}
    checks = [
        {"role": "premise", "what": "gap", "metric": "top-1", "cell": "scratch/a", "minus": "ppt/a", "at_least": 5},
        {"role": "premise", "what": "gap", "metric": "top-1", "cell": "scratch/a", "minus": "ppt/a", "at_least": 15},
    ]
    root = fake_sweep(tmp_path / "sweep", spec={**FAKE, "checks": checks}, runs=runs)
    write_report(root)
    with open(root / "checks.csv") as f:
        assert [r["verdict"] for r in csv.DictReader(f)] == ["holds", "does not hold"]  # 10 points, every seed


@pytest.mark.parametrize("bad, message", [
    ({"role": "hope", "what": "x", "metric": "top-1", "cell": "ppt/a", "at_least": 0}, "unknown role 'hope'"),
    ({"role": "effect", "what": "x", "metric": "top-5", "cell": "ppt/a", "at_least": 0}, "no metric 'top-5'"),
    ({"role": "effect", "what": "x", "metric": "top-1", "cell": "ppt/a"}, "exactly one of at_least, at_most"),
    ({"role": "effect", "what": "x", "metric": "top-1", "cell": "ppt/c", "at_least": 0}, "no cell 'ppt/c'"),
    ({"role": "effect", "what": "x", "metric": "top-1", "cell": "{size}/a", "at_least": 0}, "'{size}' is not an axis"),
    ({"role": "effect", "what": "x", "metric": "top-1", "cell": "ppt/a", "at_most": float("nan")}, "finite number"),
])
def test_a_bad_check_is_one_line_naming_it(tmp_path, bad, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        collect(fake_sweep(tmp_path / "bad", spec={**FAKE, "checks": [bad]}))
