"""`model=external` with models bnnx did not write: NNX modules, partials, functions, named
batch axes, shortcut projections, and the documented `model.options` override."""

import functools
import typing

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.models_flax_examples import CNN, ResNet, ResNetBlock


def _records(model, x):
    from bnnx.layers import record_layers

    return {r.name: (r.role, r.binary) for r in record_layers(model, x)}


def test_nnx_model_runs_as_linen_with_its_own_numbers():
    """FromNNX on the NNX CNN's own parameters gives the CNN's own logits, in eval and train mode."""
    from bnnx.nnx_bridge import FromNNX

    reference, x = CNN(nnx.Rngs(3)), jax.random.normal(jax.random.key(1), (4, 8, 8, 1))
    variables = {"params": nnx.state(reference, nnx.Param).to_pure_dict(),
                 "batch_stats": nnx.state(reference, nnx.BatchStat).to_pure_dict()}
    reference.eval()
    expected = reference(x, nnx.Rngs(0))
    np.testing.assert_allclose(np.asarray(FromNNX(CNN).apply(variables, x)), expected, rtol=1e-5, atol=1e-5)
    from bnnx import binarize
    from bnnx.layers import FULL_PRECISION

    instance = binarize(reference, policy=FULL_PRECISION)  # an instance: its own weights are the initial ones
    logits = np.asarray(instance.apply(instance.init(jax.random.key(9), x), x))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    logits, mutated = FromNNX(CNN).apply(variables, x, train=True, mutable=["batch_stats"],
                                         rngs={"dropout": jax.random.key(0)})
    mean = np.asarray(mutated["batch_stats"]["batch_norm1"]["mean"])
    assert logits.shape == (4, 10) and not np.allclose(mean, 0.0)  # train mode updated the running mean


def test_nnx_layers_binarize_under_their_attribute_paths():
    from bnnx import binarize
    from bnnx.nnx_bridge import FromNNX

    class Attention(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.embed = nnx.Linear(4, 16, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=16, decode=False, rngs=rngs)
            self.mix = nnx.Einsum("btd,dh->bth", (16, 16), (16,), rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(16, 16, rngs=rngs)])
            self.head = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            x = self.embed(x)
            x = self.blocks[0](self.mix(x + self.attn(x)))
            return self.head(x.mean(1))

    x = jnp.ones((2, 5, 4))
    assert _records(binarize(FromNNX(Attention), rules=[("attn/(query|key)", "ternary")]), x) == {
        "embed": ("first", False), "attn/query": ("hidden", True), "attn/key": ("hidden", True),
        "attn/value": ("hidden", True), "attn/out": ("hidden", True), "mix": ("hidden", True),
        "blocks/0": ("hidden", True), "head": ("last", False)}
    assert _records(binarize(FromNNX(CNN)), jnp.ones((1, 8, 8, 1))) == {
        "conv1": ("first", False), "conv2": ("hidden", True), "linear1": ("hidden", True), "linear2": ("last", False)}


class Forks(nn.Module):
    """A basic block whose projection has no telling name, and an inception-style fork of 1×1s."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(8, (3, 3))(x)
        y = nn.Conv(16, (3, 3), strides=2)(x)
        x = nn.relu(y + nn.Conv(16, (1, 1), strides=2)(x))  # Conv_2: the projection
        x = jnp.concatenate([nn.Conv(4, (1, 1))(x), nn.Conv(4, (1, 1))(x)], -1)  # branches, not shortcuts
        return nn.Dense(10)(x.mean((1, 2)))


def test_shortcut_projections_are_found_by_structure_and_by_name():
    from bnnx import binarize

    roles = _records(binarize(Forks()), jnp.ones((1, 8, 8, 1)))
    assert roles["Conv_2"] == ("shortcut", False)
    assert roles["Conv_3"] == roles["Conv_4"] == roles["Conv_1"] == ("hidden", True)
    resnet = ResNet(stage_sizes=(1, 1), block_cls=ResNetBlock, num_classes=10, num_filters=8)
    roles = _records(binarize(resnet), jnp.ones((1, 8, 8, 1)))
    assert roles["ResNetBlock_1/conv_proj"] == ("shortcut", False)
    assert roles["ResNetBlock_1/Conv_0"] == ("hidden", True)
    # a rule still decides: the projection binary on request
    roles = _records(binarize(resnet, rules=[("conv_proj", "binary")]), jnp.ones((1, 8, 8, 1)))
    assert roles["ResNetBlock_1/conv_proj"] == ("shortcut", True)


def test_named_batch_axis_trains_as_the_whole_batch():
    """BatchNorm(axis_name='batch') computes the statistics the un-named BatchNorm computes."""
    from bnnx import binarize

    named = ResNet(stage_sizes=(1,), block_cls=ResNetBlock, num_classes=10, num_filters=8)
    plain = named.clone(conv=nn.Conv)  # same module; below, the norm without axis_name for reference
    x = jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
    variables = binarize(named).init(jax.random.key(0), x, train=False)
    out, mutated = binarize(named).apply(variables, x, train=True, mutable=["batch_stats"])

    def unnamed(next_fun, args, kwargs, context):
        module = context.module
        if isinstance(module, nn.BatchNorm) and module.axis_name and context.method_name == "__call__":
            return module.clone(parent=module.scope, axis_name=None)(*args, **kwargs)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(unnamed):
        expected, reference = binarize(plain).apply(variables, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), mutated, reference)


def test_nnx_named_batch_axis_trains():
    from bnnx import binarize

    class Named(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
            self.norm = nnx.BatchNorm(4, axis_name="batch", rngs=rngs)
            self.head = nnx.Linear(4, 3, rngs=rngs)

        def __call__(self, x):
            return self.head(self.norm(self.conv(x)).mean((1, 2)))

    model, x = binarize(Named(nnx.Rngs(0))), jax.random.normal(jax.random.key(0), (6, 8, 8, 1))
    variables = model.init(jax.random.key(0), x)
    _, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"])
    kernel, bias = (jnp.asarray(variables["params"]["conv"][k]) for k in ("kernel", "bias"))
    conv = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) + bias
    momentum = 0.99  # nnx.BatchNorm's default: running = momentum·running + (1 − momentum)·batch mean
    np.testing.assert_allclose(np.asarray(mutated["batch_stats"]["norm"]["mean"]),
                               (1 - momentum) * np.asarray(conv.mean((0, 1, 2))), rtol=1e-4, atol=1e-7)


def make_net(width: int = 8):
    """A function returning a linen module (not a class): accepted as a target."""
    return nn.Sequential([nn.Conv(width, (3, 3)), nn.relu, lambda x: x.reshape(x.shape[0], -1), nn.Dense(10)])


def make_nnx_net(width: int = 8, *, rngs: nnx.Rngs):
    return nnx.Sequential(nnx.Conv(1, width, (3, 3), rngs=rngs), nnx.relu,
                          lambda x: x.reshape(x.shape[0], -1), nnx.Linear(64 * width, 10, rngs=rngs))


NOT_A_MODEL = 3


@pytest.mark.parametrize("target, layers", [
    ("tests.models_flax_examples:TinyResNet", 7),
    ("tests.models_flax_examples:CNN", 4),
    (f"{__name__}:make_net", 2),
    (f"{__name__}:make_nnx_net", 2),
])
def test_targets_partials_functions_and_nnx_classes(target, layers):
    from bnnx.models import ModelConfig, build_model

    model = build_model(ModelConfig(name="external", target=target), 10)
    assert len(_records(model, jnp.ones((1, 8, 8, 1)))) == layers


def test_options_of_a_partial_and_a_function():
    from bnnx.models import ModelConfig, build_model

    config = ModelConfig(name="external", target="tests.models_flax_examples:TinyResNet", options={"num_filters": 4})
    assert _records(build_model(config, 10), jnp.ones((1, 8, 8, 1)))  # builds
    with pytest.raises(Exception, match="takes no option 'depth'; valid: .*width"):
        build_model(ModelConfig(name="external", target=f"{__name__}:make_net", options={"depth": 3}), 10)


class FailsWhenTraining(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(8)(x.reshape(x.shape[0], -1))
        if train:
            x = jax.lax.pmean(x, "model_axis")  # an axis no one binds
        return nn.Dense(10)(nn.Dense(8)(x))


@pytest.mark.parametrize("target, message", [
    (f"{__name__}:NOT_A_MODEL", "is not a flax module"),
    (f"{__name__}:FailsWhenTraining", "fails at set-up: NameError: .*model_axis"),
    (f"{__name__}:make_net", "takes no option 'depth'"),
])
def test_model_failing_at_setup_exits_2_with_one_line_and_no_run_folder(run_cli, tmp_path, target, message):
    import re

    code, text = run_cli("train", "model=external", f"model.target={target}", "dataset=digits", "epochs=1",
                         "+model.options.depth=2" if "make_net" in target else "model.fp=false",
                         f"out_dir={tmp_path / 'run'}")
    assert code == 2 and re.search(message, text) and "Traceback" not in text, text
    assert len(text.strip().splitlines()) == 1 and text.startswith("error: ")
    assert not (tmp_path / "run").exists()


def test_documented_options_override_and_plus_hint(compose):
    from bnnx.errors import ConfigError

    base = ("model=external", "model.target=tests.models_flax_examples:TinyResNet")
    assert compose(*base, "model.options={num_filters: 4}").model.options == {"num_filters": 4}
    assert compose(*base, "+model.options.num_filters=4").model.options == {"num_filters": 4}
    with pytest.raises(ConfigError, match=r"unknown key 'model.options.num_filters'.*\+model.options.num_filters=4"):
        compose(*base, "model.options.num_filters=4")


def test_partial_of_a_linen_class_keeps_its_fields():
    from bnnx.models.external import external_module

    model = external_module("tests.models_flax_examples:TinyResNet", {}, 10)
    assert isinstance(model, ResNet) and model.stage_sizes == (1, 1) and hash(model)  # jit hashes the module
    assert functools.partial is type(__import__("tests.models_flax_examples").models_flax_examples.TinyResNet)


class SmallNNX(nnx.Module):
    def __init__(self, width: int = 16, *, rngs: nnx.Rngs):
        self.stem = nnx.Conv(1, width, (3, 3), rngs=rngs)
        self.body = nnx.Conv(width, width, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(width, rngs=rngs)
        self.head = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        x = self.norm(self.body(jnp.clip(self.stem(x), -1, 1)))
        return self.head(jnp.clip(x, -1, 1).mean((1, 2)))


@pytest.mark.parametrize("method", ["bop", "ppt"])
def test_nnx_model_trains_through_other_methods(method, compose, digits, tmp_path):
    """Bop's flips and PPT's precision switch act on the NNX model's binary kernel (W1A1)."""
    from bnnx.train.loop import train
    from bnnx.train.restore import restore_trained

    config = compose("model=external", f"model.target={__name__}:SmallNNX", "dataset=digits", f"method={method}",
                     "epochs=4", "batch_size=32", f"out_dir={tmp_path / method}")
    result = train(config, dataset=digits)
    assert result.summary["test_accuracy"] > 0.3  # measured: bop 0.55, ppt 0.52 (4 epochs, W1A1); chance is 0.1
    run = restore_trained(result.run_dir, digits)
    assert set(run.variables["quant"]) == {"body"}
    model = typing.cast(nn.Module, run.model)
    assert np.all(np.isfinite(np.asarray(model.apply(run.variables, jnp.ones((1, 8, 8, 1))))))
