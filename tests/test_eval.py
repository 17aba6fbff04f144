"""`bnnx eval` and the packed engine on trained runs: the export scores the run's own accuracy."""

from __future__ import annotations

import json

import pytest

from bnnx.evaluate import evaluate_checkpoint, evaluate_export
from bnnx.export import PACKED_ENCODINGS, export_run, unpack
from bnnx.packed.engine import load
from tests.shared_runs import MLP, copy_run, trained

METHODS = {  # tiny digits runs; RPR needs FF = 1 at the end (5 epochs) for its kernels to pack
    "ste": ("method=ste", "epochs=2"),
    "bop": ("method=bop", "epochs=6"),
    "bnew": ("method=bnew", "epochs=10"),  # its kernels lock to ±1 in stage 3
    "bmd": ("method=bmd", "epochs=2"),
    "rpr-binary": ("method=rpr", "epochs=5"),
    "rpr-ternary": ("method=rpr", "method.levels=ternary", "epochs=5"),
    "ste-w1a32-mean_abs": ("method=ste", "model.binary_activations=false", "model.scaling=mean_abs", "epochs=2"),
}


def train_run(digits, *overrides):
    """The shared digits MLP run of `overrides` (tests/shared_runs.py): trained once per process,
    read-only here (exports go to tmp_path; the CLI tests copy the run)."""
    return trained(digits, *MLP, *overrides)


@pytest.mark.parametrize("method", METHODS)
def test_packed_export_scores_the_runs_own_accuracy(method, digits, tmp_path):
    config, result = train_run(digits, *METHODS[method])
    path, manifest = export_run(config, result.run_dir, tmp_path / "export.npz")
    packed = [t["name"] for t in manifest["tensors"] if t["encoding"] in PACKED_ENCODINGS]
    assert packed == ["params/QuantDense_1/kernel", "params/QuantDense_2/kernel"]  # the hidden layers
    # QuantDense_1's sums → BN → hardtanh → QuantDense_2's input bits, on integer thresholds (W1A1)
    w1a1 = {"QuantDense_1", "QuantDense_2"} <= set(manifest["binary_inputs"])
    assert sorted(load(path)[1].folds) == (["QuantDense_2"] if w1a1 else [])
    assert w1a1 == (method in ("ste", "bop", "bnew", "bmd"))

    figures = evaluate_export(path, config, dataset=digits)
    assert figures["test_accuracy"] == result.summary["test_accuracy"]
    assert figures["examples"] == len(digits.test_labels)
    assert figures["test_accuracy"] > 0.3  # it learned (chance is 0.1), so the match is not by luck
    assert evaluate_checkpoint(config, result.run_dir, dataset=digits)["test_accuracy"] == figures["test_accuracy"]


# the ste runs of METHODS above: W1A1, and W1A32 (its mean|w| scaling does not change what the CLI prints)
@pytest.mark.parametrize("method", ["ste", "ste-w1a32-mean_abs"], ids=["w1a1", "w1a32"])
def test_cli_export_then_eval_prints_the_runs_accuracy(method, digits, run_cli, tmp_path):
    accuracy = train_run(digits, *METHODS[method])[1].summary["test_accuracy"]
    _, run_dir = copy_run(digits, tmp_path / "run", *MLP, *METHODS[method])  # `bnnx export RUN` writes into RUN
    code, text = run_cli("export", str(run_dir))
    assert code == 0, text
    export = run_dir / "export.npz"
    assert unpack(export).manifest["config"]["model"]["binary_activations"] == (method == "ste")

    code, text = run_cli("eval", str(export), "--json", str(tmp_path / "eval.json"))
    assert code == 0, text
    line = text.strip()
    assert line.count("\n") == 0 and line.startswith(f"test_accuracy={accuracy} ")
    assert line.endswith(f"examples={len(digits.test_labels)} ran=packed-bits")
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert figures["test_accuracy"] == accuracy and figures["source"] == "packed"

    code, text = run_cli("eval", str(run_dir), "eval_batch_size=100")
    assert code == 0 and text.strip().startswith(f"test_accuracy={accuracy} "), text
    assert text.strip().endswith(" ran=checkpoint"), text


def test_eval_of_bad_paths_is_one_line(run_cli, tmp_path):
    corrupt = tmp_path / "export.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    for path in (tmp_path / "missing.npz", corrupt, tmp_path):
        code, text = run_cli("eval", str(path))
        assert code == 2 and text.strip().count("\n") == 0 and text.startswith("error: "), text


def test_eval_refuses_bad_overrides_in_one_line(digits, run_cli, tmp_path):
    _, run_dir = copy_run(digits, tmp_path / "run", *MLP, *METHODS["ste"])
    assert run_cli("export", str(run_dir))[0] == 0
    for path, override, message in ((run_dir, "no_such_key=1", "unknown key"),
                                    (run_dir, "eval_batch_size=0", "eval_batch_size must be >= 1"),
                                    (run_dir / "export.npz", "model.hidden=[8]", "fixed"),
                                    (run_dir / "export.npz", "oops", "not key=value")):
        code, text = run_cli("eval", str(path), override)
        assert code == 2 and text.strip().count("\n") == 0 and message in text, text


@pytest.mark.parametrize("overrides", [(), ("model.binary_activations=false",)], ids=["w1a1", "w1a32"])
def test_a_binarized_flax_model_runs_packed_with_the_runs_own_accuracy(overrides, compose, digits, tmp_path):
    """A plain flax model (Conv + Dense, no bnnx layers) binarized by rules: its nn.Conv/nn.Dense
    calls run on the export's words, and the accuracy is the run's own."""
    from bnnx.train.loop import train

    config = compose("model=external", "model.target=tests.models_external:SmallNet", "epochs=2", "batch_size=32",
                     f"out_dir={tmp_path / 'run'}", *overrides)
    result = train(config, dataset=digits)
    path, manifest = export_run(config, result.run_dir)
    assert [t["name"] for t in manifest["tensors"] if t["encoding"] in PACKED_ENCODINGS]  # something runs packed
    figures = evaluate_export(path, config, dataset=digits)
    assert figures["test_accuracy"] == result.summary["test_accuracy"] > 0.3
