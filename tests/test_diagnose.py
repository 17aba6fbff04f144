"""Runs that would train at chance level say so: constant binary inputs at set-up, chance
accuracy while training. The models are plain flax (tests/models_chance.py)."""

import json
import re
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


def test_chance_means_a_quarter_of_the_epochs_at_most_a_margin_above_one_over_classes():
    assert stuck_at_chance([0.5, 0.11, 0.12, 0.1], epochs=12, num_classes=10)  # the last 3 of 12
    assert not stuck_at_chance([0.11, 0.13, 0.11], epochs=12, num_classes=10)
    assert not stuck_at_chance([0.1, 0.1], epochs=12, num_classes=10)  # a quarter not yet run
    assert stuck_at_chance([0.5], epochs=3, num_classes=2)
    rows = [{"test_accuracy": 0.1, "flip_ratio": 0.25}]
    assert "last 1 of 1 epochs" in chance_message(rows, 4, 10) and "Bop flipped 25.0%" in chance_message(rows, 4, 10)
    assert "Bop" not in chance_message([{"test_accuracy": 0.1}], 4, 10)
