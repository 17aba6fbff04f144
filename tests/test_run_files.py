"""Damaged or partial files in a run or sweep folder, and outputs that cannot be written: exit 2,
one line, before any work, and nothing already on disk changed. Where the checkpoint is intact,
a resume rebuilds metrics.jsonl from the rows of the epochs the checkpoint has done."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bnnx.io import read_jsonl
from test_bad_input import assert_one_line_error, snapshot
from test_report import fake_sweep

UNWRITABLE = Path("/sys/bnnx-out")  # sysfs refuses new files, even to root (chmod would not stop root)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits):
    from bnnx.config.compose import compose_config
    from bnnx.train.loop import train

    run = tmp_path_factory.mktemp("finished") / "run"
    train(compose_config(["epochs=2", "model.hidden=[16]", "analysis.signs=true", f"out_dir={run}"]), dataset=digits)
    return run


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def latest_checkpoint(run: Path) -> Path:
    return max((p for p in (run / "checkpoints").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def refused(run_cli, folder: Path, args: list[str], *fragments: str) -> None:
    before = snapshot(folder)
    code, output = run_cli(*args)
    assert_one_line_error(code, output, *fragments)
    assert snapshot(folder) == before


def cut_metrics_in_the_last_row(run: Path) -> None:
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text[: len(text) - 40])


def damage_config(run: Path) -> None:
    (run / "config.yaml").write_text("method: {name: ste\nmodel: [\x01")


def damage_checkpoint(run: Path) -> None:
    (latest_checkpoint(run) / "state" / "manifest.ocdbt").unlink()


# ---- train resume=true ----------------------------------------------------------------------

def test_resume_refuses_metrics_that_lack_an_epoch_the_checkpoint_has_done(run_cli, run_copy):
    cut_metrics_in_the_last_row(run_copy)
    refused(
        run_cli, run_copy, ["train", "resume=true", f"out_dir={run_copy}"], "metrics.jsonl lacks the rows of epochs 1"
    )


def test_resume_rebuilds_metrics_up_to_the_checkpoint(run_cli, run_copy, finished_run):
    original = read_jsonl(finished_run / "metrics.jsonl")
    with open(run_copy / "metrics.jsonl", "a") as f:  # a row past the checkpoint, then a line cut short
        f.write('{"epoch": 2, "test_accuracy": 0.5}\n{"epoch": 3, "train_lo')
    code, output = run_cli("train", "resume=true", f"out_dir={run_copy}", "--quiet")
    assert code == 0, output
    assert read_jsonl(run_copy / "metrics.jsonl") == original


@pytest.mark.parametrize("damage, fragment", [
    (damage_config, "config.yaml is corrupt"),
    (lambda run: (run / "config.yaml").write_text("seed: 0\n"), "config.yaml"),  # cut short: valid YAML, keys lost
    (damage_checkpoint, "corrupt or incompatible"),
])
def test_resume_refuses_a_damaged_run(run_cli, run_copy, damage, fragment):
    damage(run_copy)
    refused(run_cli, run_copy, ["train", "resume=true", f"out_dir={run_copy}"], fragment)


# ---- export and analyze ---------------------------------------------------------------------

@pytest.mark.parametrize("damage, fragment", [(damage_config, "config.yaml is corrupt"),
                                              (damage_checkpoint, "corrupt or incompatible")])
def test_export_refuses_a_damaged_run(run_cli, run_copy, damage, fragment):
    damage(run_copy)
    refused(run_cli, run_copy, ["export", str(run_copy)], fragment)


@pytest.mark.parametrize("out, fragment", [("file/model.npz", "is a file, not a folder"),
                                           (str(UNWRITABLE / "model.npz"), "is not writable")])
def test_export_to_an_unwritable_path_is_refused_before_any_work(run_cli, run_copy, tmp_path, out, fragment):
    (tmp_path / "file").write_text("keep me")
    target = tmp_path / out if not out.startswith("/") else Path(out)
    refused(run_cli, run_copy, ["export", str(run_copy), "--out", str(target)], fragment)
    assert (tmp_path / "file").read_text() == "keep me"


def test_analyze_refuses_damaged_sign_records_and_writes_no_figure(run_cli, run_copy):
    (run_copy / "signs.json").write_text('{"all": {"flip_ratio": [0.1,')
    refused(run_cli, run_copy, ["analyze", str(run_copy)], "signs.json is corrupt or cut short")
    damage_config(run_copy)
    refused(run_cli, run_copy, ["analyze", str(run_copy)], "config.yaml is corrupt")


# ---- train into an unwritable out_dir -------------------------------------------------------

@pytest.mark.parametrize("out_dir, fragment", [("file/run", "is a file, not a folder"),
                                               (str(UNWRITABLE / "run"), "is not writable")])
def test_train_into_an_unwritable_out_dir_is_refused(run_cli, tmp_path, out_dir, fragment):
    (tmp_path / "file").write_text("keep me")
    target = tmp_path / out_dir if not out_dir.startswith("/") else Path(out_dir)
    refused(run_cli, tmp_path, ["train", f"out_dir={target}"], fragment)


# ---- sweep and report -----------------------------------------------------------------------

SWEEP = ["sweep", "stable_signs", "--preset", "smoke", "--only", "none/cosine", "--quiet"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    from typer.testing import CliRunner

    from bnnx.cli import _register_commands, app

    _register_commands()
    out = tmp_path_factory.mktemp("sweep") / "signs"
    result = CliRunner().invoke(app, SWEEP + ["--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def interrupted(run: Path) -> None:
    (run / "summary.json").write_text('{"status": "interrupted"}\n')


@pytest.mark.parametrize("damage, fragment", [
    (lambda run: (run / "summary.json").write_text('{"status": "compl'), "summary.json is corrupt"),
    (cut_metrics_in_the_last_row, "metrics.jsonl is corrupt"),
    (damage_config, "config.yaml is corrupt"),
    (lambda run: (interrupted(run), damage_checkpoint(run)), "corrupt or incompatible"),
    (lambda run: (interrupted(run), cut_metrics_in_the_last_row(run)), "lacks the rows of epochs 1"),
])
def test_sweep_refuses_a_damaged_run_folder(run_cli, finished_sweep, tmp_path, damage, fragment):
    sweep = tmp_path / "sweep"
    shutil.copytree(finished_sweep, sweep)
    damage(sweep / "none" / "cosine" / "seed0")
    refused(run_cli, sweep, SWEEP + ["--out", str(sweep)], "none/cosine/seed0", fragment)


def test_sweep_refuses_a_damaged_index_and_an_unwritable_out(run_cli, finished_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(finished_sweep, sweep)
    (sweep / "sweep.json").write_text('{"sweep": "stable_si')
    refused(run_cli, sweep, SWEEP + ["--out", str(sweep)], "sweep.json is corrupt")
    (tmp_path / "file").write_text("keep me")
    refused(run_cli, tmp_path, SWEEP + ["--out", str(tmp_path / "file" / "sweep")], "is a file, not a folder")


@pytest.mark.parametrize("damaged, text", [("scratch/a/seed0/summary.json", '{"status": '),
                                           ("scratch/a/seed0/summary.json", '["completed"]'),  # JSON, not bnnx's
                                           ("scratch/a/seed1/metrics.jsonl", '{"epoch": 0, "test_acc'),
                                           ("sweep.json", "[{"),
                                           ("sweep.json", '{"sweep": "fake"}')])
def test_report_refuses_damaged_files(run_cli, tmp_path, damaged, text):
    root = fake_sweep(tmp_path / "sweep")
    (root / damaged).write_text(text)
    refused(run_cli, root, ["report", str(root)], damaged.rpartition("/")[2])


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(run_cli, run_copy):
    """orbax writes into a temp folder renamed when complete; one left by a kill mid-save is not a
    checkpoint, so the resume starts from the last complete one."""
    partial = run_copy / "checkpoints" / "99999.orbax-checkpoint-tmp-1"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "manifest.ocdbt").write_bytes(b"\x00cut")
    code, output = run_cli("train", "resume=true", f"out_dir={run_copy}", "--quiet")
    assert code == 0 and "completed" in output, output
