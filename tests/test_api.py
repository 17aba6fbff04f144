"""The Python API a notebook uses: bnnx.compose -> bnnx.train -> bnnx.evaluate / bnnx.export."""

from __future__ import annotations

import pytest

import bnnx
from bnnx.export.format import FORMAT


def test_compose_train_evaluate_export_round_trip(tmp_path, digits):
    config = bnnx.compose(["method=ste", "model.hidden=[64]", "epochs=3", f"out_dir={tmp_path / 'run'}"])
    result = bnnx.train(config, dataset=digits)
    assert result.status == "completed" and result.summary["test_accuracy"] > 0.6  # a 1-bit MLP learns digits
    checkpoint = bnnx.evaluate(result.run_dir, dataset=digits)
    assert checkpoint["test_accuracy"] == pytest.approx(result.summary["test_accuracy"], abs=1e-6)
    path, manifest = bnnx.export(config, result.run_dir)
    assert manifest["format"] == FORMAT
    packed = bnnx.evaluate(path, dataset=digits)  # the config the export recorded; binary layers on bits
    assert packed["source"] == "packed" and packed["test_accuracy"] == pytest.approx(checkpoint["test_accuracy"])
