"""The QONNX export, run by qonnx's own executor (`execute_onnx` on a `ModelWrapper`): logits
within 1e-5 of the packed engine's (what `bnnx eval` runs on an export), binary weights and
activations as BipolarQuant, ternary weights as 2-bit narrow-range Quant."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import onnx
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from bnnx.bench.packed import random_variables
from bnnx.deploy.qonnx_export import QONNX_DOMAIN, write_qonnx
from bnnx.export import tensor_entries, write_export
from bnnx.models import ModelConfig, build_model
from bnnx.packed.engine import load, packed_apply
from tests.shared_runs import MLP_STE, trained

CASES = {
    "mlp": (ModelConfig(name="mlp", options={"hidden": (40, 33, 16)}), (8, 8, 1)),
    "mlp_ternary": (ModelConfig(name="mlp", kernel_quantizer="ternary", options={"hidden": (40, 16)}), (8, 8, 1)),
    "convnet": (ModelConfig(name="convnet", options={"widths": (8, 12, 8)}), (8, 8, 1)),
    "binarynet": (ModelConfig(name="binarynet", options={"width_multiplier": 1 / 16}), (16, 16, 3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_qonnx_executor_gives_the_packed_engines_logits(case, tmp_path):
    config, shape = CASES[case]
    model = build_model(config, num_classes=10)
    x = np.random.default_rng(1).normal(size=(3, *shape)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0  # BipolarQuant maps 0 to +1, as bnnx's sign
    variables = random_variables(model, jnp.asarray(x), 0)
    fields = dataclasses.asdict(config)
    info = {"model": {**{k: v for k, v in fields.items() if k != "options"}, **fields["options"]},
            "num_classes": 10, "input_shape": list(shape)}
    write_export(tmp_path / "model.npz", tensor_entries(variables, model.policy), info)
    write_qonnx(tmp_path / "model.npz", tmp_path / "model.onnx")

    graph = onnx.load(tmp_path / "model.onnx").graph
    quant = [node for node in graph.node if node.domain == QONNX_DOMAIN]
    packed_model, packed, _ = load(tmp_path / "model.npz")
    weights = {"Quant" if config.kernel_quantizer == "ternary" else "BipolarQuant"}
    assert weights <= {node.op_type for node in quant}
    assert sum(node.op_type == "BipolarQuant" for node in quant) >= len(packed.layers)  # weights and activations

    wrapper = ModelWrapper(str(tmp_path / "model.onnx"))
    got = np.concatenate([execute_onnx(wrapper, {"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    np.testing.assert_allclose(got, np.asarray(packed_apply(packed_model, packed, jnp.asarray(x))),
                               rtol=1e-5, atol=1e-5)


def test_an_unknown_format_is_one_line_listing_the_valid_ones(run_cli, tmp_path):
    code, text = run_cli("export", str(tmp_path), "--format", "onnx2")
    assert code == 2 and text.strip() == "error: unknown format 'onnx2'; valid options: c, lce, npz, qonnx"


def test_cli_exports_a_trained_run_that_qonnx_runs(digits, run_cli, tmp_path):
    run_dir = trained(digits, *MLP_STE)[1].run_dir  # shared, read-only: outputs to tmp_path
    code, text = run_cli("export", str(run_dir), "--format", "qonnx", str(tmp_path / "model.onnx"))
    assert code == 0 and "BipolarQuant" in text, text
    code, text = run_cli("export", str(run_dir), "--out", str(tmp_path / "model.npz"))
    assert code == 0, text
    x = np.asarray(digits.normalize(digits.test_images[:4]), np.float32)
    wrapper = ModelWrapper(str(tmp_path / "model.onnx"))
    got = np.concatenate([execute_onnx(wrapper, {"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    model, packed, _ = load(tmp_path / "model.npz")
    np.testing.assert_allclose(got, np.asarray(packed_apply(model, packed, jnp.asarray(x))), rtol=1e-5, atol=1e-5)
