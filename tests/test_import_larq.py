"""`bnnx import larq` and `bnnx predict`: larq/Keras models (.h5 and .keras) give larq's own logits
(inference mode) within 1e-4 and the same predictions, against fixtures larq 0.14 made once under
TF 2.15 (tests/fixtures/make_larq_fixture.py: the model files with seeded weights and randomized
BN statistics, the inputs, larq's logits), so this suite needs no TensorFlow."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.interop.keras_file import read_keras_file
from bnnx.interop.keras_graph import KerasGraph
from bnnx.interop.larq_import import import_model

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "larq"
MODELS = ("docs_mnist", "digits_quantizers", "digits_mlp", "birealnet", "resnet_e18", "quicknet", "larq_guide",
          "layer_tour", "mlp_activations", "densenet28", "bireal_custom")
QUICK_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}  # halves compile
FILES = ("docs_mnist.h5", "digits_quantizers.keras", "birealnet.h5", "resnet_e18.keras", "quicknet.h5",
         "larq_guide.keras", "layer_tour.h5", "mlp_activations.keras", "densenet28.h5", "bireal_custom.h5")


def fixture(name: str):
    return np.load(FIXTURES / f"{name}.npz")


@pytest.mark.parametrize("file", FILES)
def test_logits_equal_larqs(file):
    graph, variables, shape = import_model(read_keras_file(FIXTURES / file))
    model = KerasGraph(num_classes=10, graph=json.dumps(graph))
    data = fixture(file.split(".")[0])
    assert tuple(data["input"].shape[1:]) == shape
    fresh = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape))))
    assert jax.tree.map(np.shape, variables) == jax.tree.map(lambda leaf: leaf.shape, {k: fresh[k] for k in variables})
    quant = jax.tree.map(lambda leaf: jnp.ones(leaf.shape), fresh["quant"])  # masks and β as a fresh run has them
    logits = np.asarray(jax.jit(model.apply, compiler_options=QUICK_COMPILE)({**variables, "quant": quant},
                                                                             data["input"]))
    np.testing.assert_allclose(logits, data["logits"], atol=1e-4, rtol=0)
    assert (logits.argmax(-1) == data["logits"].argmax(-1)).all()
    np.testing.assert_allclose(jax.nn.softmax(logits), data["probabilities"], atol=1e-5)
    assert np.abs(data["logits"]).max() > 1.0  # logits that a wrong mapping would move


@pytest.mark.parametrize("name", MODELS)
def test_h5_and_keras_files_import_alike(name):
    """Keras' two formats name weights differently (the .keras zip by class, not layer name)."""
    graph, variables, shape = import_model(read_keras_file(FIXTURES / f"{name}.h5"))
    other = import_model(read_keras_file(FIXTURES / f"{name}.keras"))
    assert (graph, shape) == (other[0], other[2])
    jax.tree.map(np.testing.assert_array_equal, variables, other[1])


def test_the_quantizer_tour_maps_each_larq_quantizer():
    graph = import_model(read_keras_file(FIXTURES / "digits_quantizers.h5"))[0]
    seen = {(n.get("kernel_quantizer") or {}).get("name") for n in graph} | \
        {(n.get("input_quantizer") or {}).get("name") for n in graph}
    assert {"sign_ste", "approx_sign", "swish_sign", "ternary"} <= seen
    convs = [n for n in graph if n["op"] == "conv"]
    assert [n["scaling"] for n in convs] == ["none", "mean_abs", "none"]  # magnitude_aware_sign
    assert convs[1]["pad_value"] == 1.0 and convs[2]["kernel_quantizer"]["args"] == {"clip": 1.25}
    assert [n["epsilon"] for n in graph if n["op"] == "batch_norm"] == [1e-3, 1e-3, 1e-5, 1e-3]


def test_the_user_guide_variants_map_larqs_quantizer_objects():
    """Objects with arguments, TWN's whole-kernel threshold fixed at import, and larq's |x| = Δ → ±1."""
    graph, variables, _ = import_model(read_keras_file(FIXTURES / "larq_guide.keras"))
    weights = {n["name"]: n for n in graph if n["op"] in ("conv", "dense")}
    specs = [(n["input_quantizer"] or {}).get("name") for n in weights.values()]
    assert specs == [None, "sign_ste", "approx_sign", "swish_sign", "sign_ste", "ternary", "sign_ste"]
    first, _, magnitude, swish, depthwise, tern, twn = weights.values()
    assert first["kernel_quantizer"]["args"] == {"clip": 1.3} and first["use_bias"]
    assert (magnitude["scaling"], swish["input_quantizer"]["args"], swish["padding"]) == ("mean_abs", {"beta": 3.0},
                                                                                          "VALID")
    assert (depthwise["groups"], depthwise["pad_value"]) == (16, 1.0)
    assert tern["input_quantizer"]["args"]["threshold"] == np.nextafter(np.float32(0.1), np.float32(0))
    kernel = variables["params"][twn["name"]]["kernel"]
    np.testing.assert_allclose(twn["kernel_quantizer"]["args"]["threshold"], 0.7 * np.abs(kernel).mean(), rtol=1e-6)


def test_functions_serialized_by_name_are_mapped():
    """Keras writes plain functions (larq's hard_tanh, larq-zoo's xnor_weight_scale) as
    {"class_name": "function", "config": NAME} in both formats."""
    graph = import_model(read_keras_file(FIXTURES / "mlp_activations.h5"))[0]
    assert [n.get("activation") for n in graph if n["op"] in ("dense", "activation")] == \
        ["hard_tanh", "linear", "leaky_tanh", "linear"]  # the final softmax dropped
    graph, variables, _ = import_model(read_keras_file(FIXTURES / "layer_tour.keras"))
    xnor = next(n for n in graph if n.get("scaling") == "mean_abs")
    assert np.abs(variables["params"][xnor["name"]]["kernel"]).max() <= 1.0  # clipped as xnor_weight_scale does
    assert {n["op"] for n in graph} >= {"rescale", "pad", "prelu", "concat", "add", "global_avg_pool", "reshape"}


def test_import_predict_export_end_to_end(run_cli, tmp_path):
    from bnnx.io import read_json

    data, run = fixture("digits_quantizers"), tmp_path / "runs" / "tour"  # the smallest model with every quantizer
    np.save(tmp_path / "x.npy", data["input"])
    code, output = run_cli("import", "larq", str(FIXTURES / "digits_quantizers.keras"), str(run))
    assert code == 0, output
    summary = read_json(run / "summary.json")
    assert (summary["status"], summary["method"], summary["dataset"]) == ("completed", "ste", "digits")
    assert summary["imported_from"]["framework"] == "larq"
    for source in (run, tmp_path / "tour.npz"):
        if source.suffix == ".npz":
            code, output = run_cli("export", str(run), "--out", str(source))
            assert code == 0, output
        code, output = run_cli("predict", str(source), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
        assert code == 0, output
        logits = np.load(tmp_path / "y.npy")
        np.testing.assert_allclose(logits, data["logits"], atol=1e-4, rtol=0)
        assert (logits.argmax(-1) == data["logits"].argmax(-1)).all()

    np.save(tmp_path / "bad.npy", data["input"][:, :4])
    code, output = run_cli("predict", str(run), str(tmp_path / "bad.npy"), str(tmp_path / "z.npy"))
    assert code == 2 and output.count("\n") == 1 and "do not fit" in output and "(N, 8, 8, 1)" in output, output
    assert not (tmp_path / "z.npy").exists()
    code, output = run_cli("import", "larq", str(FIXTURES / "digits_quantizers.h5"), str(run))  # never overwrites
    assert code == 2 and "already holds a run" in output


def test_training_starts_from_the_import(run_cli, tmp_path):
    """method.init_from= takes the imported run (larq's weights exactly, as any method's start; the
    fine-tuning itself: tests/test_init_from.py), and the imported architecture trains under bnnx
    (STE, 3 epochs on digits: well above chance)."""
    import dataclasses

    from bnnx.config.compose import compose_config
    from bnnx.data import shape_only
    from bnnx.models import build_model
    from bnnx.train.loop import train
    from bnnx.train.rundir import RunDir
    from bnnx.train.services import RunServices

    imported = tmp_path / "imported"
    assert run_cli("import", "larq", str(FIXTURES / "digits_mlp.h5"), str(imported))[0] == 0
    model_config = RunDir(imported).config().model
    config = compose_config(["method=bop", f"method.init_from={imported}"])
    config = dataclasses.replace(config, model=model_config)
    dataset = shape_only(config.dataset)
    model = build_model(config.trained_model, dataset.num_classes)
    fresh = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False))
    variables, recorded = RunServices(config, dataset, model, fresh).load_run_variables(imported)
    larq = import_model(read_keras_file(FIXTURES / "digits_mlp.h5"))[1]
    jax.tree.map(np.testing.assert_array_equal, {k: variables[k] for k in larq}, larq)
    assert getattr(recorded, "method").name == "ste"

    config = compose_config(["method=ste", "epochs=3", "seed=0", f"out_dir={tmp_path / 'trained'}"])
    result = train(dataclasses.replace(config, model=model_config))
    assert result.summary["test_accuracy"] > 0.3, result.summary["test_accuracy"]  # chance: 0.1


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """bireal_custom.keras imported and exported once for the two tests below, which only read them
    (their outputs go to their own tmp_path): (the import's output, run dir, export)."""
    from typer.testing import CliRunner

    from bnnx.cli import _register_commands, app

    _register_commands()
    root = tmp_path_factory.mktemp("custom")
    run, export = root / "runs" / "custom", root / "custom.npz"
    outputs = []  # the import's, the export's
    for args in (["import", "larq", FIXTURES / "bireal_custom.keras", run], ["export", run, "--out", export]):
        outputs.append(CliRunner().invoke(app, list(map(str, args)), catch_exceptions=False))
        assert outputs[-1].exit_code == 0, outputs[-1].output
    return outputs[0].output, run, export


def test_a_model_no_data_set_fits_records_its_shapes_and_predicts_larqs_logits(custom_run, run_cli, tmp_path):
    """A Bi-Real-style net on 24x24x3 inputs with 7 classes (no bnnx data set has them): the run
    records dataset=shapes with the model's shapes; predict, export and summary work on it."""
    from omegaconf import OmegaConf

    from bnnx.io import read_json

    data, (output, run, export) = fixture("bireal_custom"), custom_run
    np.save(tmp_path / "x.npy", data["input"])
    assert "on shapes (24x24x3 inputs, 7 classes)" in output, output
    recorded = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    assert isinstance(recorded, dict)
    assert {k: recorded["dataset"][k] for k in ("name", "input_shape", "num_classes")} == {
        "name": "shapes", "input_shape": [24, 24, 3], "num_classes": 7}
    assert read_json(run / "summary.json")["dataset"] == "shapes"
    for source in (run, export):
        code, output = run_cli("predict", str(source), str(tmp_path / "x.npy"), str(tmp_path / "y.npy"))
        assert code == 0, output
        logits = np.load(tmp_path / "y.npy")
        np.testing.assert_allclose(logits, data["logits"], atol=1e-4, rtol=0)
        assert logits.shape == (4, 7) and (logits.argmax(-1) == data["logits"].argmax(-1)).all()

    np.save(tmp_path / "bad.npy", data["input"][:, :, :20])
    code, output = run_cli("predict", str(run), str(tmp_path / "bad.npy"), str(tmp_path / "z.npy"))
    assert code == 2 and output.count("\n") == 1 and "(N, 24, 24, 3)" in output, output
    assert not (tmp_path / "z.npy").exists()
    code, output = run_cli("summary", "--run", str(run), "--json", str(tmp_path / "summary.json"))
    assert code == 0, output
    summary = read_json(tmp_path / "summary.json")
    assert (summary["dataset"], summary["input_shape"], summary["num_classes"]) == ("shapes", [24, 24, 3], 7)
    assert summary["total"]["binary_params"] == 8 * 8 * 9 + 8 * 16 * 9 + 16 * 16 * 9  # the three binary convs


def test_training_or_evaluating_a_shapes_run_says_it_needs_a_data_set(custom_run, run_cli, tmp_path):
    """On the import above (.keras; the .h5 imports alike: test_h5_and_keras_files_import_alike)."""
    _, run, export = custom_run
    listing = lambda: sorted(p for root in (tmp_path, run.parent.parent) for p in root.rglob("*"))  # noqa: E731
    before = listing()
    for args in (["eval", str(run), "--json", str(tmp_path / "eval.json")], ["eval", str(export)],
                 ["train", "method=rpr", f"method.init_from={run}", f"out_dir={tmp_path / 'rpr'}"],
                 ["train", f"method.init_from={run}", "dataset=digits", f"out_dir={tmp_path / 'digits'}"],
                 ["train", "dataset=shapes", "dataset.input_shape=[24,24,3]", "dataset.num_classes=7",
                  f"out_dir={tmp_path / 'scratch'}"]):
        code, output = run_cli(*args)
        assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, (args, output)
        assert "training and evaluating need a data set" in output and "dataset=NAME" in output, output
        assert "--dataset NAME" in output and "24x24x3 inputs and 7 classes" in output, output
    assert listing() == before  # nothing written


def test_dataset_shapes_can_be_chosen_where_a_data_set_fits(run_cli, tmp_path):
    """--dataset shapes on the digits MLP: the shapes alone; its C export has no test inputs to write."""
    run = tmp_path / "mlp"
    code, output = run_cli("import", "larq", str(FIXTURES / "digits_mlp.h5"), str(run), "--dataset", "shapes")
    assert code == 0 and "on shapes (8x8x1 inputs, 10 classes)" in output, output
    code, output = run_cli("export", str(run), "--format", "c", str(tmp_path / "c"))
    assert code == 0 and "INPUTS.bin" in output, output
    assert (tmp_path / "c" / "bnnx_model.c").is_file() and not (tmp_path / "c" / "input.bin").exists()


def _edited(tmp_path: Path, edit) -> Path:
    """docs_mnist.keras with its config.json changed by `edit`."""
    path = tmp_path / "edited.keras"
    with zipfile.ZipFile(FIXTURES / "docs_mnist.keras") as source, zipfile.ZipFile(path, "w") as target:
        for item in source.namelist():
            blob = source.read(item)
            if item == "config.json":
                config = json.loads(blob)
                edit(config["config"]["layers"])
                blob = json.dumps(config).encode()
            target.writestr(item, blob)
    return path


def _set(index: int, key: str, value):
    return _update(index, **{key: value})


def _update(index: int, **values):
    def edit(layers):
        layers[index]["config"].update(values)
    return edit


@pytest.mark.parametrize("edit, words", [
    (_set(4, "kernel_quantizer", {"class_name": "DoReFa", "config": {"k_bit": 2}}), "DoReFa is a k-bit quantizer"),
    (_set(4, "input_quantizer", "ste_heaviside"), "SteHeaviside outputs {0, 1}"),
    (_set(4, "input_quantizer", "magnitude_aware_sign"), "as an input quantizer is not expressible"),
    (_set(4, "dilation_rate", [2, 2]), "dilated convolutions are not supported"),
    (_set(4, "input_quantizer", {"class_name": "SteTern", "config": {"ternary_weight_networks": True}}),
     "its threshold depends on each batch"),
    (_set(4, "kernel_quantizer", {"class_name": "function", "config": "magnitude_aware_sign_unclipped"}),
     "one mean|w| per tensor"),
    (_set(4, "input_quantizer", {"class_name": "function", "config": "my_sign"}), "unknown larq quantizer 'my_sign'"),
    (_update(4, padding="same", pad_values=1.0, input_quantizer={"class_name": "SteTern",
                                                                  "config": {"threshold_value": 1.5}}),
     "pad_values=1.0 is not supported with this input quantizer"),
    (lambda layers: layers.insert(2, {"class_name": "Lambda", "config": {"name": "f"}}), "Python code"),
    (lambda layers: layers.__delitem__(slice(9, None)), "outputs (N, 3, 3, 64), not (N, classes) logits"),
    (_set(1, "activation", "selu"), "activation 'selu' is not supported"),
    (lambda layers: layers.insert(2, {"class_name": "LSTM", "config": {"name": "lstm"}}), "LSTM is not supported"),
])
def test_what_bnnx_cannot_express_is_refused_in_one_line(run_cli, tmp_path, edit, words):
    code, output = run_cli("import", "larq", str(_edited(tmp_path, edit)), str(tmp_path / "run"))
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 1 and words in output, output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, content, words", [
    ("missing.h5", None, "no model file"),
    ("model.pb", b"x", "not a Keras model file"),
    ("model.h5", b"not hdf5", "cannot read"),
    ("model.keras", b"PK not a zip", "cannot read"),
    ("docs_mnist.h5", "--dataset=digits", "digits does not fit (these do: mnist, fashion_mnist)"),
    ("bireal_custom.h5", "--dataset=cifar10", "cifar10 does not fit (none does); --dataset shapes records"),
    ("docs_mnist.h5", "--dataset=svhn", "unknown dataset 'svhn'"),
])
def test_bad_model_files_and_data_sets_are_refused_in_one_line(run_cli, tmp_path, name, content, words):
    path, options = tmp_path / name, []
    if isinstance(content, str):
        path, options = FIXTURES / name, [content]
    elif content is not None:
        path.write_bytes(content)
    code, output = run_cli("import", "larq", str(path), str(tmp_path / "run"), *options)
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 1 and words in output, output
    assert not (tmp_path / "run").exists()
