"""Sweeps: every shipped sweep file composes; runs resume, skip, fail and parallelize as promised;
bad input is one line and exit code 2 with nothing run. (Report numbers and the end-to-end
smoke sweep with a resume after a kill: tests/test_report.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from bnnx.errors import ConfigError, DataNotFoundError
from bnnx.io import read_json, write_json
from bnnx.sweeps import launchers, load_spec, plan_runs, run_sweep, spec_from_dict
from bnnx.sweeps.launchers import (
    HydraLauncher,
    JoblibLauncher,
    LocalLauncher,
    launcher_overrides,
    launcher_settings,
    plugin_installed,
)
from bnnx.sweeps.plan import compose_runs
from bnnx.sweeps.spec import CELL_REFERENCE

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
SWEEP_FILES = sorted(SWEEPS.glob("*.yaml"))

TINY = {
    "name": "tiny", "title": "t", "source": "s",
    "base": ["model.hidden=[8]", "batch_size=128", "dataset=digits"],
    "axes": [
        {"name": "method", "values": [{"key": "fp", "name": "Real", "overrides": ["method=fp"]},
                                      {"key": "ste", "name": "STE", "overrides": ["method=ste"]}]},
        {"name": "kd", "values": [{"key": "nokd", "name": "no KD"},
                                  {"key": "kd", "name": "KD", "overrides": ["distill.teacher=${cell:fp/nokd}"]}]},
    ],
    "rows": ["method"], "columns": ["kd"], "exclude": [{"method": "fp", "kd": "kd"}],
    "presets": {"smoke": {"seeds": 2, "overrides": ["epochs=1"]}},
}


def tiny_spec(**changes):
    return spec_from_dict({**TINY, **changes})


def tiny_file(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


# ---- the shipped sweep files ---------------------------------------------------------------

def test_the_five_paper_tables_are_shipped():
    assert {p.stem for p in SWEEP_FILES} >= {"bnew_cifar", "rpr_imagenet", "ppt_speedup", "ilb_order", "stable_signs"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_every_sweep_file_composes_for_every_preset_and_cell(path, tmp_path):
    spec = load_spec(path)
    assert set(spec.presets) >= {"smoke", "cpu", "paper"}
    for preset in spec.presets:
        runs = plan_runs(spec, preset, tmp_path, seeds=(0,))
        assert sorted(r.cell for r in runs) == sorted(c.key for c in spec.cells())
        configs = compose_runs(runs, spec.name)
        assert len(configs) == len(runs)
        for run in runs:  # dependencies come first and their run dirs are what the run reads
            position = runs.index(run)
            for cell, seed in run.depends:
                assert [r.cell for r in runs].index(cell) < position
                assert str(tmp_path.absolute() / cell / f"seed{seed}") in " ".join(run.overrides)
        if preset == "smoke":
            assert {c.dataset.name for c in configs.values()} == {"digits"}


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_the_sweep_composer_gives_every_run_the_config_compose_config_gives(path, tmp_path):
    """A cell's seeds share one Hydra composition; each run's config (so its config.yaml) is
    still the one composing its own overrides gives, out_dir quoted for Hydra included."""
    from bnnx.config import config_to_dict
    from bnnx.config.compose import compose_config
    from bnnx.sweeps.plan import _quoted

    spec = load_spec(path)
    runs = plan_runs(spec, "paper", tmp_path / "a b", seeds=(0, 1))
    shared = compose_runs(runs, spec.name)
    alone = {run.id: compose_config([*run.overrides, f"out_dir={_quoted(run.run_dir)}"]) for run in runs
             if not run.provided}
    assert {k: config_to_dict(c) for k, c in shared.items()} == {k: config_to_dict(c) for k, c in alone.items()}
    assert len({c.seed for c in shared.values()}) == 2 and len({c.out_dir for c in shared.values()}) == len(runs)


def test_the_sweep_composer_applies_added_per_run_keys_in_hydras_order():
    from bnnx.config.compose import compose_config, sweep_composer

    compose = sweep_composer()
    for overrides in (["seed=3", "++seed=5"], ["++seed=5", "seed=3"], ["epochs=2", "seed=4", "out_dir=x"],
                      ["resume=true", "seed=2", "out_dir=y"]):
        assert compose(overrides) == compose_config(overrides)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_files_begin_with_command_table_source_and_expected(path):
    text = path.read_text()
    assert text.startswith(
        f"# Command:  bnnx sweep sweeps/{path.name} --preset cpu && bnnx report sweep_runs/{path.stem}-cpu"
    )
    header = text.split("\nname:")[0]
    for word in ("# Table:", "# Source:", "# Expected"):
        assert word in header


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_sweep_files_cite_their_paper_and_list_their_deviations(path):
    spec, text = load_spec(path), path.read_text()
    assert re.search(r"arXiv \d{4}\.\d{5}|OpenReview \w+|poster", spec.source), spec.source
    assert len(spec.deviations) >= 3 and all(d.what and d.source for d in spec.deviations)
    assert not re.search(r"(^|[\s(])/[a-z]+/", text), "a sweep file names a local path"  # cite, don't point to files


def test_bnew_paper_numbers_are_the_posters_table():
    paper = load_spec(SWEEPS / "bnew_cifar.yaml").paper
    cifar10 = {"real/nokd": 91.4, "ste/nokd": 84.3, "ste/kd": 85.1, "bmd/nokd": 84.0, "bmd/kd": 84.9,
               "bop/nokd": 84.5, "bop/kd": 85.2, "bnew/nokd": 84.5, "bnew/kd": 85.1}
    cifar100 = {"real/nokd": 67.1, "ste/nokd": 55.0, "ste/kd": 56.8, "bmd/nokd": 54.8, "bmd/kd": 56.8,
                "bop/nokd": 55.3, "bop/kd": 57.7, "bnew/nokd": 55.0, "bnew/kd": 57.5}
    for dataset, table in (("cifar10", cifar10), ("cifar100", cifar100)):
        for cell, value in table.items():
            assert paper[f"{cell}/{dataset}"]["top-1 %"][0] == value
    assert "real/kd/cifar10" not in paper


def test_rpr_paper_numbers_are_table_1():
    paper = load_spec(SWEEPS / "rpr_imagenet.yaml").paper
    expected = {"resnet18/binary": (64.62, 86.01), "resnet18/ternary": (66.31, 87.84),
                "resnet50/binary": (65.14, 86.31), "resnet50/ternary": (71.83, 90.28),
                "googlenet/binary": (62.01, 84.83), "googlenet/ternary": (64.86, 86.03)}
    for cell, (top1, top5) in expected.items():
        assert (paper[cell]["top-1 %"], paper[cell]["top-5 %"]) == (top1, top5)


# ---- planning ------------------------------------------------------------------------------

def test_cell_references_resolve_to_the_same_seed_and_run_first(tmp_path):
    runs = plan_runs(tiny_spec(), "smoke", tmp_path)
    assert [(r.cell, r.seed) for r in runs][:2] == [("fp/nokd", 0), ("fp/nokd", 1)]
    kd = {r.seed: r for r in runs if r.cell == "ste/kd"}
    for seed in (0, 1):
        teacher = tmp_path.absolute() / "fp" / "nokd" / f"seed{seed}"
        assert f"distill.teacher={teacher}" in kd[seed].overrides
        assert kd[seed].depends == (("fp/nokd", seed),)
    assert CELL_REFERENCE.findall("a=${cell:x/{d}} b=${cell:y}") == ["x/{d}", "y"]


def test_only_selects_cells_and_the_cells_they_need(tmp_path):
    runs = plan_runs(tiny_spec(), "smoke", tmp_path, seeds=(0,), only=["ste/kd"])
    assert [r.cell for r in runs] == ["fp/nokd", "ste/kd"]


def test_a_provided_run_replaces_its_cell(tmp_path):
    teacher = tmp_path / "pretrained"
    with pytest.raises(ConfigError, match="not a bnnx run"):
        plan_runs(tiny_spec(), "smoke", tmp_path, provided={"fp/nokd": teacher})
    teacher.mkdir()
    (teacher / "config.yaml").write_text("method: {name: fp}\n")
    execute = fake_execute()
    result = sweep(tmp_path, LocalLauncher(execute), seeds=(0,), provided={"fp/nokd": teacher})
    assert result.statuses[("fp/nokd", 0)] == "provided" and result.exit_code == 0
    assert sorted(p.name for p in execute.calls) == ["seed0", "seed0"] and teacher not in execute.calls
    kd = next(r for r in plan_runs(tiny_spec(), "smoke", tmp_path, provided={"fp/nokd": teacher}) if r.cell == "ste/kd")
    assert f"distill.teacher={teacher.absolute()}" in kd.overrides and kd.depends == ()


def test_reference_cycle_and_unknown_cell_are_config_errors(tmp_path):
    axes = [{"name": "m", "values": [{"key": "a", "name": "A", "overrides": ["distill.teacher=${cell:b}"]},
                                      {"key": "b", "name": "B", "overrides": ["distill.teacher=${cell:a}"]}]}]
    with pytest.raises(ConfigError, match="cycle"):
        plan_runs(tiny_spec(axes=axes, columns=[], rows=["m"], exclude=[]), "smoke", tmp_path)
    axes[0]["values"][1]["overrides"] = ["distill.teacher=${cell:nope}"]
    with pytest.raises(ConfigError, match="names no cell"):
        tiny_spec(axes=axes, columns=[], rows=["m"], exclude=[])


# ---- running: skip, resume, fail, interrupt --------------------------------------------------

def fake_execute(fail_cells=(), interrupt_at=None):
    """An execute() that writes what a finished run leaves (summary.json) without training."""
    calls = []

    def execute(job):
        run_dir = Path(job["config"]["out_dir"])
        calls.append(run_dir)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        if any(f"/{cell}/" in f"{run_dir}/" for cell in fail_cells):
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "partial.txt").write_text("left behind by a crash")
            return {"status": "failed", "error": "RuntimeError: boom"}
        write_json(run_dir / "summary.json", {"status": "completed", "test_accuracy": 0.5})
        return {"status": "completed", "error": None}

    execute.calls = calls
    return execute


def sweep(tmp_path, launcher, spec=None, **kwargs):
    return run_sweep(spec or tiny_spec(), "smoke", tmp_path / "out", spec_text="x", launcher=launcher, **kwargs)


def test_interrupted_sweep_reruns_only_what_is_not_done(tmp_path):
    def interrupting(job):  # Ctrl-C during the third run
        if "ste/nokd/seed0" in job["config"]["out_dir"]:
            raise KeyboardInterrupt
        return fake_execute()(job)

    first = sweep(tmp_path, LocalLauncher(interrupting))
    assert first.interrupted and first.exit_code == 130 and first.launched == 2
    assert first.counts["completed"] == 2
    second_execute = fake_execute()
    second = sweep(tmp_path, LocalLauncher(second_execute))
    assert (second.skipped, second.launched, second.exit_code) == (2, 4, 0)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in second_execute.calls) == [
        "ste/kd/seed0", "ste/kd/seed1", "ste/nokd/seed0", "ste/nokd/seed1"]
    entries = read_json(tmp_path / "out" / "sweep.json")["runs"]
    assert len(entries) == 6 and len({(e["cell"], e["seed"]) for e in entries}) == 6
    assert {e["status"] for e in entries} == {"completed"}


def test_failed_run_is_recorded_dependents_blocked_and_rerun_in_a_clean_folder(tmp_path):
    result = sweep(tmp_path, LocalLauncher(fake_execute(fail_cells=["fp/nokd"])), seeds=(0,))
    assert result.exit_code == 1
    entries = {e["cell"]: e for e in read_json(tmp_path / "out" / "sweep.json")["runs"]}
    assert entries["fp/nokd"]["status"] == "failed" and entries["fp/nokd"]["error"] == "RuntimeError: boom"
    assert entries["ste/kd"]["status"] == "blocked" and "fp/nokd seed 0" in entries["ste/kd"]["error"]
    assert entries["ste/nokd"]["status"] == "completed"  # the sweep went on
    again = sweep(tmp_path, LocalLauncher(fake_execute()), seeds=(0,))
    assert (again.skipped, again.launched, again.exit_code) == (1, 2, 0)
    assert not (tmp_path / "out" / "fp" / "nokd" / "seed0" / "partial.txt").exists()


def test_a_folder_holding_another_config_is_refused_before_any_run(tmp_path):
    import dataclasses

    from bnnx.config import config_to_dict

    sweep(tmp_path, LocalLauncher(fake_execute()), seeds=(0,))
    run = plan_runs(tiny_spec(), "smoke", tmp_path / "out", seeds=(0,))[0]
    recorded = dataclasses.replace(compose_runs([run], "tiny")[run.id], epochs=99)
    (run.run_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(recorded)))
    execute = fake_execute()
    with pytest.raises(ConfigError, match="epochs=99"):
        sweep(tmp_path, LocalLauncher(execute), seeds=(0,))
    assert execute.calls == []


def test_a_partial_rerun_keeps_the_other_runs_in_the_index(tmp_path):
    sweep(tmp_path, LocalLauncher(fake_execute()), seeds=(0,))
    again = sweep(tmp_path, LocalLauncher(fake_execute()), seeds=(0, 1), only=["ste/nokd"])
    assert (again.skipped, again.launched) == (1, 1)
    entries = read_json(tmp_path / "out" / "sweep.json")["runs"]
    assert [(e["cell"], e["seed"]) for e in entries] == [
        ("fp/nokd", 0),
        ("ste/nokd", 0),
        ("ste/nokd", 1),
        ("ste/kd", 0),
    ]


def test_a_folder_of_another_preset_or_missing_data_is_refused_before_any_run(tmp_path):
    presets = {"smoke": {"overrides": ["epochs=1"]}, "cpu": {"overrides": ["epochs=2"]}}
    sweep(tmp_path, LocalLauncher(fake_execute()), spec=tiny_spec(presets=presets), seeds=(0,))
    execute = fake_execute()
    with pytest.raises(ConfigError, match="holds sweep 'tiny' with preset 'smoke'"):
        run_sweep(tiny_spec(presets=presets), "cpu", tmp_path / "out", spec_text="x",
                  launcher=LocalLauncher(execute))
    no_data = tiny_spec(base=["model.hidden=[8]", "dataset=fashion_mnist", f"dataset.data_dir={tmp_path / 'none'}"])
    with pytest.raises(DataNotFoundError, match="bnnx data prepare fashion_mnist"):
        run_sweep(no_data, "smoke", tmp_path / "other", spec_text="x", launcher=LocalLauncher(execute))
    assert execute.calls == [] and not (tmp_path / "other").exists()


def test_joblib_runs_trainings_in_parallel_processes(tmp_path):
    result = sweep(tmp_path, JoblibLauncher(2), spec=tiny_spec(exclude=[{"kd": "kd"}]), seeds=(0,))
    assert result.exit_code == 0 and result.launched == 2
    for cell in ("fp/nokd", "ste/nokd"):
        summary = read_json(tmp_path / "out" / cell / "seed0" / "summary.json")
        assert summary["status"] == "completed" and summary["epochs_done"] == 1


# ---- launchers beyond one machine: their Hydra launcher config ------------------------------

def test_submitit_launcher_config_maps_the_presets_resources(tmp_path):
    settings = launcher_settings(
        "submitit",
        "bnew_cifar",
        tmp_path,
        {"gpus": 1, "cpus": 8, "mem_gb": 32, "timeout_min": 60},
        {"partition": "gpu"},
    )
    assert settings == {"submitit_folder": str(tmp_path / ".submitit" / "%j"), "name": "bnew_cifar", "gpus_per_node": 1,
                        "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 60, "partition": "gpu"}
    overrides = launcher_overrides("submitit", settings)
    assert overrides[0] == "hydra/launcher=submitit_slurm"
    assert "++hydra.launcher.gpus_per_node=1" in overrides and "++hydra.launcher.partition=gpu" in overrides
    ray = launcher_settings("ray", "x", tmp_path, {"gpus": 1, "cpus": 4, "timeout_min": 9}, {})
    assert launcher_overrides("ray", ray) == ["hydra/launcher=ray", "++hydra.launcher.ray.remote.num_gpus=1",
                                              "++hydra.launcher.ray.remote.num_cpus=4"]


def test_hydra_launcher_overrides_compose_in_hydra(tmp_path):
    from hydra import compose, initialize_config_dir

    launcher = HydraLauncher("basic", "tiny", tmp_path)
    command = launcher.command(tmp_path / "wave1.json", 3)
    overrides = command[command.index("--multirun") + 1:]
    assert overrides[-1] == "+job=0,1,2"
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(overrides=[o for o in overrides if not o.startswith("+job=")], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")
    assert cfg.jobs_file == str(tmp_path / "wave1.json") and cfg.hydra.sweep.dir == str(tmp_path / ".hydra" / "wave1")


# ---- the command line: end to end, and bad input --------------------------------------------

def bad_cli(run_cli, tmp_path, *args):
    code, output = run_cli(*args)
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), output
    assert not (tmp_path / "out").exists()  # nothing was run
    return lines[0]


def test_unknown_key_in_a_sweep_file(run_cli, tmp_path):
    path = tiny_file(tmp_path, colums=["kd"])
    assert "unknown key 'colums'" in bad_cli(
        run_cli, tmp_path, "sweep", str(path), "--preset", "smoke", "--out", str(tmp_path / "out")
    )


@pytest.mark.parametrize("override, message", [("method=nope", "unknown method 'nope'"), ("epochz=3", "epochz"),
                                               ("no_equal_sign", "is not an override")])
def test_axis_value_that_is_not_a_valid_override(run_cli, tmp_path, override, message):
    axes = json.loads(json.dumps(TINY["axes"]))
    axes[0]["values"][1]["overrides"] = [override]
    line = bad_cli(run_cli, tmp_path, "sweep", str(tiny_file(tmp_path, axes=axes)), "--preset", "smoke",
                   "--out", str(tmp_path / "out"))
    assert message in line


def test_unknown_preset(run_cli, tmp_path):
    line = bad_cli(
        run_cli, tmp_path, "sweep", str(SWEEPS / "bnew_cifar.yaml"), "--preset", "huge", "--out", str(tmp_path / "out")
    )
    assert "no preset 'huge'" in line and "smoke, cpu, paper" in line


def test_report_on_a_folder_with_no_runs(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "not a sweep folder" in bad_cli(run_cli, tmp_path, "report", str(tmp_path / "empty"))


def test_plugin_detection():
    assert plugin_installed(None) and plugin_installed("hydra.core")
    assert not plugin_installed("hydra_plugins.bnnx_no_such_launcher") and not plugin_installed("no_such_pkg.sub")


@pytest.mark.parametrize("launcher, extra", [("submitit", "slurm"), ("ray", "ray")])
def test_cluster_launcher_without_its_plugin(run_cli, tmp_path, monkeypatch, launcher, extra):
    monkeypatch.setattr(launchers, "plugin_installed", lambda module: module is None)
    line = bad_cli(run_cli, tmp_path, "sweep", str(tiny_file(tmp_path)), "--preset", "smoke", "--launcher", launcher,
                   "--out", str(tmp_path / "out"))
    assert f"pip install 'bnnx[{extra}]'" in line
