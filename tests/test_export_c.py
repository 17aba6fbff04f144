"""The C export, checked by the compiled C program itself: integer sums of every binary layer
bit for bit against the packed engine's, logits within 1e-5, a trained run's predictions equal
to `bnnx eval`'s on the whole digits test split, and the same source compiled for a Cortex-M4.
Needs gcc and arm-none-eabi-gcc (`make test` installs them when missing: .ci/c-compilers)."""

from __future__ import annotations

import dataclasses
import subprocess

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnnx.packed.engine as engine
from bnnx.bench.packed import random_variables
from bnnx.deploy.c_export import cortex_m4_sizes, write_c_export
from bnnx.export import tensor_entries, write_export
from bnnx.models import ModelConfig, build_model
from tests.shared_runs import CONVNET, MLP_STE, trained

CASES = {  # tiny variants of every family the C export supports: (model config, input shape)
    "mlp": (ModelConfig(name="mlp", options={"hidden": (40, 33, 16)}), (8, 8, 1)),
    "mlp_ternary": (ModelConfig(name="mlp", kernel_quantizer="ternary", options={"hidden": (40, 33, 16)}), (8, 8, 1)),
    "convnet": (ModelConfig(name="convnet", options={"widths": (8, 12, 8)}), (8, 8, 1)),
    "convnet_mean_abs": (ModelConfig(name="convnet", scaling="mean_abs", options={"widths": (8, 40, 8)}), (8, 8, 1)),
    "binarynet": (ModelConfig(name="binarynet", options={"width_multiplier": 1 / 16}), (16, 16, 3)),
    "binarized_flax": (ModelConfig(name="external", target="tests.models_external:BatchNormNet",
                                   options={"features": 8}), (8, 8, 1)),
}


def build(out_dir, debug=True):
    flags = "-O1 -DBNNX_DEBUG" if debug else "-O1"
    result = subprocess.run(["make", "-s", "-C", str(out_dir), f"CFLAGS={flags}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def infer(out_dir, inputs_path):
    """(logits (N, classes), {layer: integer sums of every example, concatenated})."""
    result = subprocess.run([str(out_dir / "infer"), str(inputs_path)], capture_output=True, text=True, check=True)
    logits, dumps = [], {}
    for line in result.stdout.splitlines():
        if line.startswith("# "):
            layer, *values = line[2:].split()
            dumps.setdefault(layer, []).extend(int(v) for v in values)
        else:
            logits.append([float(v) for v in line.split()])
    return np.asarray(logits, np.float32), dumps


def engine_sums(monkeypatch, model, packed, x):
    """The packed engine's logits and each binary layer's int32 sums, as it runs (not jitted)."""
    seen, by_id = {}, {id(layer): path for path, layer in packed.layers.items()}
    original = engine.sums

    def recording(geometry, layer, x, bits):
        y = original(geometry, layer, x, bits)
        if bits:
            seen[by_id[id(layer)]] = np.asarray(y)
        return y

    monkeypatch.setattr(engine, "sums", recording)
    logits = np.asarray(engine.packed_apply(model, packed, x))
    return logits, seen


@pytest.mark.parametrize("case", list(CASES))
def test_c_program_equals_the_packed_engine_bit_for_bit(case, tmp_path, monkeypatch):
    config, shape = CASES[case]
    model = build_model(config, num_classes=10)
    x = np.random.default_rng(1).normal(size=(3, *shape)).astype(np.float32)
    x[0, 0, 0, 0] = 0.0  # sign(0) = +1
    variables = random_variables(model, jnp.asarray(x), 0)
    fields = dataclasses.asdict(config)
    info = {"model": {**{k: v for k, v in fields.items() if k != "options"}, **fields["options"]},
            "num_classes": 10, "input_shape": list(shape)}
    write_export(tmp_path / "model.npz", tensor_entries(variables, getattr(model, "policy_of", model.policy)), info)
    facts = write_c_export(tmp_path / "model.npz", tmp_path / "c", x)
    build(tmp_path / "c")
    got, dumps = infer(tmp_path / "c", tmp_path / "c" / "input.bin")

    packed_model, packed, _ = engine.load(tmp_path / "model.npz")
    expected, sums = engine_sums(monkeypatch, packed_model, packed, jnp.asarray(x))
    assert sums and set(dumps) == set(sums) == {layer for layer, _ in facts["dumps"]}
    for layer, y in sums.items():
        np.testing.assert_array_equal(np.asarray(dumps[layer]).reshape(y.shape), y, err_msg=layer)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert packed.folds, "no BN folded: the fold path went untested"


# the digits MLP and ConvNet that the eval and export tests train too: shared, read-only (outputs go to tmp_path)
@pytest.mark.parametrize("overrides", [MLP_STE, CONVNET], ids=["mlp", "convnet"])
def test_trained_digits_runs_predict_as_bnnx_eval(overrides, digits, run_cli, tmp_path):
    from bnnx.evaluate import evaluate_export

    config, result = trained(digits, *overrides)
    name = config.model.name
    test_inputs = tmp_path / "test.bin"
    test_inputs.write_bytes(np.asarray(digits.normalize(digits.test_images), "<f4").tobytes())
    code, text = run_cli("export", str(result.run_dir), "--format", "c", str(tmp_path / f"{name}_c"))
    assert code == 0, text
    code, text = run_cli("export", str(result.run_dir), "--out", str(tmp_path / f"{name}.npz"))
    assert code == 0, text
    build(tmp_path / f"{name}_c", debug=False)
    model, packed, _ = engine.load(tmp_path / f"{name}.npz")
    expected = np.asarray(jax.jit(lambda p, x: engine.packed_apply(model, p, x))(
        packed, digits.normalize(digits.test_images)))
    logits, _ = infer(tmp_path / f"{name}_c", tmp_path / f"{name}_c" / "input.bin")  # the first test examples
    np.testing.assert_allclose(logits, expected[:len(logits)], rtol=1e-5, atol=1e-5)

    logits, _ = infer(tmp_path / f"{name}_c", test_inputs)
    np.testing.assert_array_equal(np.argmax(logits, -1), np.argmax(expected, -1))
    accuracy = float(np.mean(np.argmax(logits, -1) == digits.test_labels))
    assert accuracy == pytest.approx(evaluate_export(tmp_path / f"{name}.npz", config, digits)["test_accuracy"])
    assert accuracy > 0.5, f"{name} did not learn ({accuracy})"


def test_the_same_source_compiles_for_a_cortex_m4(tmp_path):
    config, shape = CASES["convnet"]
    model = build_model(config, num_classes=10)
    variables = random_variables(model, jnp.zeros((1, *shape)), 0)
    fields = dataclasses.asdict(config)
    info = {"model": {"name": "convnet", **fields["options"]}, "num_classes": 10, "input_shape": list(shape)}
    write_export(tmp_path / "model.npz", tensor_entries(variables, model.policy), info)
    facts = write_c_export(tmp_path / "model.npz", tmp_path / "c")
    sizes = cortex_m4_sizes(tmp_path / "c")
    words = 4 * sum(np.asarray(p).size for layer in engine.load(tmp_path / "model.npz")[1].layers.values()
                    for p in layer.planes.values())
    assert sizes["text"] > words  # the packed words are in flash (const), with the code
    assert sizes["data"] == 0 and sizes["bss"] == 0  # no RAM of its own: the caller's arena only
    assert facts["arena_bytes"] > 0


class TanhNet(nn.Module):
    """A plain flax model with a tanh: exp-based, so not in a runtime without math.h."""

    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(16)(x.reshape(x.shape[0], -1))
        x = jnp.tanh(nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x)))
        return nn.Dense(self.num_classes)(x)


def test_a_graph_the_runtime_cannot_express_is_refused_naming_the_op(tmp_path):
    from bnnx.errors import ConfigError

    config = ModelConfig(name="external", target="tests.test_export_c:TanhNet")
    model = build_model(config, num_classes=10)
    variables = random_variables(model, jnp.zeros((1, 8, 8, 1)), 0)
    fields = dataclasses.asdict(config)
    info = {"model": {**{k: v for k, v in fields.items() if k != "options"}}, "num_classes": 10,
            "input_shape": [8, 8, 1]}
    write_export(tmp_path / "model.npz", tensor_entries(variables, model.policy_of), info)
    with pytest.raises(ConfigError, match="^C export: op tanh is not supported"):
        write_c_export(tmp_path / "model.npz", tmp_path / "c")
