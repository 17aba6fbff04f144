"""`bnnx import torchvision`: torchvision's state dicts mapped onto bnnx's ResNet-18, ResNet-50 and
GoogLeNet give torchvision's own logits (eval mode, BN statistics included) within 1e-4, against a
fixture torch made once (tests/fixtures/make_torchvision_fixture.py: the input and the logits for
numpy-seeded weights, not the weights), so this suite needs no torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.models import ModelConfig, build_model
from bnnx.pretrained.torchvision import ARCHS, to_variables

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from torchvision_weights import random_state_dict  # noqa: E402

SHAPES = json.loads((FIXTURES / "torchvision_shapes.json").read_text())["shapes"]
LOGITS = np.load(FIXTURES / "torchvision_logits.npz")


def state_dict(arch: str) -> dict[str, np.ndarray]:
    return random_state_dict({name: tuple(shape) for name, shape in SHAPES[arch].items()}, arch)


def fp_model(arch: str):
    options = {"transform_input": True} if arch == "googlenet" else {}
    return build_model(ModelConfig(name=arch, fp=True, options=options), 1000)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_equal_torchvisions(arch):
    variables = to_variables(arch, state_dict(arch))
    model = fp_model(arch)
    x = jnp.asarray(LOGITS["input"].transpose(0, 2, 3, 1))  # NCHW → NHWC
    expected = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    shapes = jax.tree.map(lambda leaf: leaf.shape, {k: expected[k] for k in ("params", "batch_stats")})
    assert jax.tree.map(np.shape, variables) == shapes  # every parameter mapped, none left over
    logits = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
    np.testing.assert_allclose(np.asarray(logits), LOGITS[f"{arch}_logits"], atol=1e-4, rtol=0)
    assert np.abs(LOGITS[f"{arch}_logits"]).max() > 1.0  # logits that a wrong mapping would move


def test_imported_run_is_a_finished_fp_run_that_init_from_accepts(run_cli, tmp_path):
    from safetensors.numpy import save_file

    from bnnx.config.compose import compose_config
    from bnnx.data import shape_only
    from bnnx.io import read_json
    from bnnx.train.services import RunServices

    weights, run = tmp_path / "resnet18.safetensors", tmp_path / "runs" / "r18"
    save_file(state_dict("resnet18"), str(weights))
    code, output = run_cli("import", "torchvision", "resnet18", str(weights), str(run))
    assert code == 0, output
    summary = read_json(run / "summary.json")
    assert (summary["status"], summary["method"], summary["model"], summary["dataset"]) == (
        "completed", "fp", "resnet18", "imagenet2012")
    assert summary["parameters"]["params"] == 11_689_512  # torchvision's ResNet-18

    # what RPR's method.init_from does with it: the variables, checked against the RPR run's model
    config = compose_config(["method=rpr", "model=resnet18", "dataset=imagenet2012", f"method.init_from={run}"])
    dataset = shape_only(config.dataset)
    model = build_model(config.trained_model, dataset.num_classes)
    fresh = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)), train=False))
    variables, recorded = RunServices(config, dataset, model, fresh).load_run_variables(run)
    assert recorded.method.name == "fp"
    x = jnp.asarray(LOGITS["input"].transpose(0, 2, 3, 1))
    logits = jax.jit(lambda v: fp_model("resnet18").apply(v, x, train=False))(
        {"params": variables["params"], "batch_stats": variables["batch_stats"]})
    np.testing.assert_allclose(np.asarray(logits), LOGITS["resnet18_logits"], atol=1e-4, rtol=0)

    code, output = run_cli("import", "torchvision", "resnet18", str(weights), str(run))  # never overwrites
    assert code == 2 and "already holds a run" in output


def test_a_fine_tuned_head_no_data_set_fits_records_its_shapes(run_cli, tmp_path):
    """fc cut to 7 classes and 64x64 inputs (torchvision's logits' first 7 columns are its logits):
    the run records dataset=shapes and predicts them; training it says it needs a data set."""
    from safetensors.numpy import save_file

    from bnnx.io import read_json

    state = state_dict("resnet18")
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:7], state["fc.bias"][:7]
    weights, run = tmp_path / "tuned.safetensors", tmp_path / "tuned"
    save_file(state, str(weights))
    code, output = run_cli("import", "torchvision", "resnet18", str(weights), str(run), "--image-size", "64")
    assert code == 0 and "on shapes (64x64x3 inputs, 7 classes)" in output, output
    assert read_json(run / "summary.json")["dataset"] == "shapes"
    np.save(tmp_path / "x.npy", LOGITS["input"].transpose(0, 2, 3, 1))
    code, output = run_cli("predict", str(run), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
    assert code == 0, output
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), LOGITS["resnet18_logits"][:, :7], atol=1e-4, rtol=0)
    code, output = run_cli("eval", str(run))
    assert code == 2 and output.count("\n") == 1 and "training and evaluating need a data set" in output, output
    code, output = run_cli("import", "torchvision", "resnet18", str(weights), str(tmp_path / "other"),
                           "--dataset", "cifar10")
    assert code == 2 and "cifar10 does not fit (none does)" in output and not (tmp_path / "other").exists()


@pytest.mark.parametrize("args, words", [
    (["vgg16", "w.safetensors"], "unknown architecture 'vgg16'"),
    (["resnet18", "missing.safetensors"], "no weights file"),
    (["resnet18", "w.pth"], "not a .safetensors file"),
])
def test_bad_import_is_one_line(run_cli, tmp_path, args, words):
    for name in ("w.safetensors", "w.pth"):
        (tmp_path / name).write_bytes(b"not a tensor file")
    arch, weights = args
    code, output = run_cli("import", "torchvision", arch, str(tmp_path / weights), str(tmp_path / "run"))
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 1 and words in output, output
    assert not (tmp_path / "run").exists()


def test_a_state_dict_of_another_model_is_refused(run_cli, tmp_path):
    from safetensors.numpy import save_file

    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, str(tmp_path / "w.safetensors"))
    code, output = run_cli("import", "torchvision", "resnet18", str(tmp_path / "w.safetensors"), str(tmp_path / "run"))
    assert code == 2 and "has no 'bn1.weight'" in output and not (tmp_path / "run").exists()
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    code, output = run_cli(
        "import", "torchvision", "resnet18", str(tmp_path / "bad.safetensors"), str(tmp_path / "run")
    )
    assert code == 2 and output.startswith("error: cannot read") and not (tmp_path / "run").exists()
