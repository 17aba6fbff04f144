"""Runs that would train at chance level say so: constant binary inputs at set-up, chance
accuracy while training. The models are plain flax (tests/models_chance.py)."""

import json
import re
import signal
from pathlib import Path

from bnnx.train.diagnose import chance_message, stuck_at_chance

RELU = ("train", "model=external", "model.target=tests.models_chance:ReluMLP", "dataset=digits")


def warnings_before_first_epoch(text: str) -> list[str]:
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("epoch 1/"))
    return [line for line in lines[:first] if line.startswith("warning:")]


def test_relu_before_binary_layers_warns_once_before_the_first_epoch_and_its_fix_learns(run_cli, tmp_path):
    code, text = run_cli(*RELU, "epochs=2", f"out_dir={tmp_path / 'relu'}")
    assert code == 0, text
    (warning,) = warnings_before_first_epoch(text)
    assert "Dense_1, Dense_2 see constant input signs" in warning and "Dense_0" not in warning, warning
    summary = json.loads((tmp_path / "relu" / "summary.json").read_text())
    assert summary["test_accuracy"] <= 0.12  # at chance, as the warning says
    assert warning.removeprefix("warning: ") in summary["warnings"]

    given = re.search(r"'(model\.rules=[^']*)'", warning)  # the override the warning gives, as given
    assert given, warning
    rule = given.group(1)
    code, text = run_cli(*RELU, "epochs=2", rule, f"out_dir={tmp_path / 'fixed'}")
    assert code == 0 and "warning:" not in text, text
    assert json.loads((tmp_path / "fixed" / "summary.json").read_text())["test_accuracy"] > 0.4  # W1A32 learns


def test_a_resumed_run_keeps_the_warnings_of_its_first_part(run_cli, tmp_path, monkeypatch):
    from bnnx.train.progress import Progress

    start_epoch = Progress.start_epoch

    def interrupt_epoch_2(self, epoch, step):
        start_epoch(self, epoch, step)
        if epoch == 1 and step == 0:
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Progress, "start_epoch", interrupt_epoch_2)
    # 2 epochs, as the first test's run: the same compiled steps
    code, text = run_cli(*RELU, "epochs=2", f"out_dir={tmp_path / 'run'}")
    assert code == 130 and text.count("warning:") == 2, text  # constant inputs; at chance after epoch 1 of 2
    monkeypatch.setattr(Progress, "start_epoch", start_epoch)
    code, text = run_cli("train", "resume=true", f"out_dir={tmp_path / 'run'}")
    assert code == 0 and "warning:" not in text, text  # said once per run, not again on resume
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [w.split(" ")[:2] for w in summary["warnings"]] == [["binary-input", "layers"], ["the", "run"]]


def test_a_normalized_model_gets_no_warning(run_cli, tmp_path):
    code, text = run_cli(*RELU[:2], "model.target=tests.models_chance:NormMLP", "dataset=digits", "epochs=1",
                         f"out_dir={tmp_path / 'run'}")
    assert code == 0 and "warning" not in text, text
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["warnings"] == []


def test_bop_at_chance_is_told_why(run_cli, tmp_path):
    code, text = run_cli(*RELU, "method=bop", "epochs=2", f"out_dir={tmp_path / 'run'}")
    assert code == 0, text
    chance = [line for line in text.splitlines() if "at chance" in line]
    assert len(chance) == 1 and chance[0].startswith("warning: ") and "Bop flipped" in chance[0], text
    assert text.index(chance[0]) > text.index("epoch 1/2")
    summary = json.loads((Path(tmp_path) / "run" / "summary.json").read_text())
    assert len(summary["warnings"]) == 2


def rows(*pairs):
    return [{"test_accuracy": accuracy, "test_loss": loss} for accuracy, loss in pairs]


def test_chance_means_a_quarter_of_the_epochs_near_one_over_classes_or_near_a_constant_predictions_loss():
    assert stuck_at_chance(rows((0.5, 1.0), (0.11, 1.0), (0.12, 1.0), (0.1, 1.0)), epochs=12, num_classes=10)
    assert not stuck_at_chance(rows((0.11, 1.0), (0.13, 1.0), (0.11, 1.0)), epochs=12, num_classes=10)
    assert not stuck_at_chance(rows((0.1, 2.3), (0.1, 2.3)), epochs=12, num_classes=10)  # a quarter not yet run
    assert stuck_at_chance(rows((0.5, 1.0)), epochs=3, num_classes=2)
    # Bop's collapse: the test loss stays near ln 10 = 2.30 while the accuracy wanders above 0.12
    assert stuck_at_chance(rows((0.24, 2.14), (0.15, 2.26), (0.16, 2.19)), epochs=10, num_classes=10)
    assert not stuck_at_chance(rows((0.6, 2.2), (0.65, 2.3)), epochs=8, num_classes=10)  # overconfident, learning
    from bnnx.methods.bop import Bop
    from bnnx.methods.ste import STE

    flips = [{"test_accuracy": 0.1, "test_loss": 2.3, "flip_ratio": 0.25}]
    bop = chance_message(flips, 4, 10, Bop().chance_hint(flips))
    assert "last 1 of 1 epochs" in bop and "Bop flipped 25.0%" in bop
    # an STE run whose sign tracker logs flip_ratio too gets no word of Bop
    assert "Bop" not in chance_message(flips, 4, 10, STE().chance_hint(flips))
