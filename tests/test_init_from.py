"""`method.init_from=RUN` for every method: a larq import of a trained digits MLP is fine-tuned
with STE and Bop from exactly its variables, starting at its accuracy; runs that do not fit,
missing or damaged run folders and a resume of an imported run are refused in one line.

The larq fixture `digits_mlp.h5` holds seeded random weights (it checks the mapping, at chance
on digits), so the import fine-tuned here is that file with trained weights written into it: the
imported architecture trained by bnnx's STE, as a larq user's trained model would be."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from pathlib import Path

import h5py
import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from bnnx.config.compose import compose_config
from bnnx.data import shape_only
from bnnx.errors import ConfigError
from bnnx.io import read_json
from bnnx.layers import flat, param_labels
from bnnx.train.experiment import build_experiment
from bnnx.train.init_from import inherit_model
from bnnx.train.loop import train
from bnnx.train.restore import restore_run
from bnnx.train.rundir import RunDir
from bnnx.train.step import evaluate

LARQ_FILE = Path(__file__).resolve().parent / "fixtures" / "larq" / "digits_mlp.h5"
KERAS_WEIGHTS = {"kernel:0": ("params", "kernel"), "beta:0": ("params", "bias"),
                 "moving_mean:0": ("batch_stats", "mean"), "moving_variance:0": ("batch_stats", "var")}
IMPORT_BAR = 0.6  # the trained import's test accuracy must reach this (chance: 0.1)
# fine-tuning's first epoch ends at most this far below the import's accuracy (Bop's default τ flips
# ~10 % of the binary weights per step at first; a run from scratch ends its first epoch near 0.3)
FIRST_EPOCH_DROP = 0.1


def cli(*args) -> tuple[int, str]:
    from bnnx.cli import _register_commands, app

    _register_commands()
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def larq_file_with(variables: dict, path: Path) -> Path:
    """digits_mlp.h5 with `variables` (the imported graph's, by bnnx path) in place of its weights."""
    shutil.copy(LARQ_FILE, path)
    with h5py.File(path, "r+") as h5:
        def write(name, item):
            if isinstance(item, h5py.Dataset):
                layer, weight = name.split("/")[-2:]
                collection, key = KERAS_WEIGHTS[weight]
                item[...] = np.asarray(variables[collection][layer][key])
        h5["model_weights"].visititems(write)
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, float]:
    """(a larq import of a trained digits MLP, its `bnnx eval` test accuracy)."""
    root = tmp_path_factory.mktemp("init_from")
    assert cli("import", "larq", str(LARQ_FILE), str(root / "untrained"))[0] == 0
    model = RunDir(root / "untrained").config().model
    config = compose_config(["method=ste", "epochs=8", "seed=0", f"out_dir={root / 'larq_training'}"])
    trained = train(dataclasses.replace(config, model=model)).run_dir
    variables = restore_run(trained, shape_only(config.dataset))[0]
    code, output = cli("import", "larq", str(larq_file_with(variables, root / "trained.h5")), str(root / "imported"))
    assert code == 0, output
    code, output = cli("eval", str(root / "imported"))
    assert code == 0, output
    accuracy = float(re.search(r"test_accuracy=([0-9.]+)", output).group(1))
    assert accuracy >= IMPORT_BAR, accuracy
    return root / "imported", accuracy


def _overrides(method: str, source: Path, out_dir: Path, *more: str) -> list[str]:
    return [f"method={method}", f"method.init_from={source}", "epochs=2", f"out_dir={out_dir}", *more]


@pytest.mark.parametrize("method", ["ste", "bop"])
def test_fine_tuning_starts_from_the_import(imported, tmp_path, method):
    source, accuracy = imported
    overrides = _overrides(method, source, tmp_path / "run")
    experiment = build_experiment(inherit_model(compose_config(overrides), overrides))
    theirs = restore_run(source, experiment.dataset)[0]
    start = experiment.recipe.prepare(experiment.state)  # what the first step receives
    jax.tree.map(np.testing.assert_array_equal, experiment.state.params, theirs["params"])
    jax.tree.map(np.testing.assert_array_equal, start.batch_stats, theirs["batch_stats"])
    labels = flat(param_labels(start.params, start.quant))
    for path, value in flat(start.params).items():  # Bop keeps the signs of the binary kernels
        expected = flat(theirs["params"])[path]
        if method == "bop" and labels[path] == "binary":
            expected = np.where(expected >= 0, 1.0, -1.0)
        np.testing.assert_array_equal(value, expected)
    assert evaluate(experiment, start)["test_accuracy"] == pytest.approx(accuracy, abs=1e-9)

    code, output = cli("train", *overrides, "-q")
    assert code == 0, output
    summary = read_json(tmp_path / "run" / "summary.json")
    first = summary["test_accuracy_curve"][0]
    assert first >= max(IMPORT_BAR, accuracy - FIRST_EPOCH_DROP), (first, accuracy)
    assert summary["init_from"]["run_dir"] == str(source.resolve())
    assert summary["init_from"]["imported_from"]["framework"] == "larq"
    recorded = RunDir(tmp_path / "run").config()
    assert (recorded.method.init_from, recorded.model.name) == (str(source), "external")
    code, output = cli("eval", str(tmp_path / "run"))
    assert code == 0 and f"test_accuracy={summary['test_accuracy']}" in output, output


def test_a_run_that_does_not_fit_is_refused_in_one_line(imported, tmp_path):
    code, output = cli("train", *_overrides("ste", imported[0], tmp_path / "run", "model=mlp"))
    assert code == 2 and output.count("\n") == 1 and output.startswith("error: "), output
    assert "model=external there, model=mlp here" in output
    assert cli("train", "method=fp", "model.hidden=[16]", "epochs=1", f"out_dir={tmp_path / 'fp'}", "-q")[0] == 0
    code, output = cli("train", *_overrides("bop", tmp_path / "fp", tmp_path / "run", "model.hidden=[32]"))
    assert code == 2 and output.count("\n") == 1 and output.startswith("error: "), output
    assert "model.hidden=[16] there, [32] here; params BatchNorm_0/bias is (16,) there, (32,) here" in output, output
    assert not (tmp_path / "run").exists()


def _no_checkpoint(folder: Path) -> None:
    shutil.rmtree(folder / "checkpoints")


def _bad_config(folder: Path) -> None:
    (folder / "config.yaml").write_text("method: [unclosed")


def _bad_checkpoint(folder: Path) -> None:
    for item in (folder / "checkpoints").rglob("*"):
        if item.is_file() and item.stat().st_size > 0:
            item.write_bytes(b"\0" * 16)


@pytest.mark.parametrize("damage, words", [
    (None, "does not exist"),
    (lambda folder: shutil.rmtree(folder) or folder.mkdir(), "is not a bnnx run"),
    (_bad_config, "is corrupt or cut short"),
    (_no_checkpoint, "has no checkpoint"),
    (_bad_checkpoint, "corrupt"),
])
def test_a_missing_or_damaged_run_is_refused_in_one_line(imported, tmp_path, damage, words):
    source = tmp_path / "source"
    if damage is not None:
        shutil.copytree(imported[0], source)
        damage(source)
    code, output = cli("train", *_overrides("ste", source, tmp_path / "run"))
    assert code == 2 and output.count("\n") == 1 and output.startswith("error: method.init_from"), output
    assert words in output and "Traceback" not in output, output
    assert not (tmp_path / "run").exists()


def _hashes(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("more", [(), ("epochs=80",)])
def test_resuming_an_import_points_to_init_from(imported, tmp_path, more):
    run = tmp_path / "imported"
    shutil.copytree(imported[0], run)
    before = _hashes(run)
    code, output = cli("train", "resume=true", f"out_dir={run}", *more)
    assert code == 2 and output.count("\n") == 1 and output.startswith("error: "), output
    assert "was imported (larq trained.h5)" in output and f"method.init_from={run}" in output, output
    assert _hashes(run) == before


def test_a_resumed_run_replays_and_evaluates_without_its_source(imported, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(imported[0], source)
    overrides = [*_overrides("ste", source, tmp_path / "full", "checkpoint_every=1"), "-q"]
    assert cli("train", *overrides)[0] == 0
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    checkpoints = sorted((tmp_path / "cut" / "checkpoints").iterdir(), key=lambda p: int(p.name))
    shutil.rmtree(checkpoints[-1])  # as if stopped after the first epoch
    shutil.rmtree(source)  # a resume, eval and export take everything from the run's own checkpoint
    code, output = cli("train", "resume=true", f"out_dir={tmp_path / 'cut'}", "-q")
    assert code == 0, output
    run = str(tmp_path / "cut")
    for command in (("eval", run), ("export", run, "--out", str(tmp_path / "cut.npz"))):
        code, output = cli(*command)
        assert code == 0, output
    full, cut = (read_json(tmp_path / name / "summary.json") for name in ("full", "cut"))
    assert cut["test_accuracy_curve"] == full["test_accuracy_curve"]
    assert cut["init_from"] == full["init_from"]


def test_an_inner_method_has_no_start_of_its_own():
    with pytest.raises(ConfigError, match="set method.init_from"):
        compose_config(["method=ppt", "method.inner=ste", "method.inner_config={init_from: /some/run}"])
