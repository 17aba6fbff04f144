"""The model zoo: every registered model trains one step, has a complete label tree, equals its
full-precision twin with all precision masks at 0, and matches the papers' layouts."""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.layers import flat, param_labels, record_layers, set_quant
from bnnx.methods.base import MethodContext
from bnnx.methods.ste import STE
from bnnx.models import MODELS, ModelConfig, build_model
from bnnx.train.losses import CrossEntropy
from bnnx.train.state import create_state
from bnnx.train.step import make_train_step

CIFAR, IMAGENET = (32, 32, 3), (224, 224, 3)

# tiny variants on their data sets' shapes (ImageNet nets on 32×32 with narrow widths)
TINY = {
    "mlp": ((8, 8, 1), {"hidden": (16, 16)}),
    "convnet": ((8, 8, 1), {}),
    "binarynet": (CIFAR, {"width_multiplier": 1 / 16}),
    "resnet20": (CIFAR, {"width_multiplier": 0.25}),
    "resnet18": (CIFAR, {"width_multiplier": 1 / 16}),
    "resnet50": (CIFAR, {"width_multiplier": 1 / 16}),
    "googlenet": (CIFAR, {"width_multiplier": 1 / 16}),
    "birealnet18": (CIFAR, {"width_multiplier": 1 / 16}),
    "reactnet_a": (CIFAR, {"width_multiplier": 1 / 8}),
    "vit": ((8, 8, 1), {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2, "mlp_dim": 32}),
}


SMALL = ("mlp", "convnet", "binarynet", "vit")  # one real (compiled) step; the others are traced with eval_shape


def tiny_config(name: str) -> tuple[ModelConfig, tuple[int, ...]]:
    """The model's composed defaults (its class's, plus what its YAML changes) with tiny options."""
    from bnnx.config.compose import compose_dict

    shape, options = TINY[name]
    defaults = compose_dict([f"model={name}"])["model"]
    common = {k: v for k, v in defaults.items() if k in {f.name for f in dataclasses.fields(ModelConfig)}}
    return ModelConfig(**{**common, "real_roles": tuple(common["real_roles"]),
                          "real_paths": tuple(common["real_paths"]), "options": options}), shape


def random_variables(shapes, seed: int = 0) -> dict:
    """Variables of the given shapes drawn with NumPy: random init through jax.random compiles slowly
    on CPU, and any values will do. Kernels ~ N(0, 1/fan_in), BN variances > 0, precision masks 1."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        key = path[-1].key
        noise = rng.normal(size=leaf.shape)
        if leaf.ndim >= 2:
            value = noise / math.sqrt(math.prod(leaf.shape[:-1]))
        elif key == "var":
            value = 1.0 + 0.1 * np.abs(noise)
        elif key in ("kernel_mask", "input_mask", "beta"):
            value = np.ones(leaf.shape)
        else:
            value = (1.0 if key == "scale" else 0.0) + 0.1 * noise
        return jnp.asarray(value.astype(np.float32))  # cast on the host: no convert program per shape

    return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.lru_cache(maxsize=None)
def tiny(name: str):
    """(config, model, images, variables, layers) of the tiny variant, shared by the tests."""
    config, shape = tiny_config(name)
    model = build_model(config, num_classes=10)
    images = jnp.asarray(np.random.default_rng(1).normal(size=(4, *shape)), jnp.float32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images[:1]))
    return config, model, images, random_variables(shapes), record_layers(model, images[:1])


def test_every_registered_model_has_a_tiny_variant():
    assert set(TINY) == set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_jitted_train_step(name):
    """One step of the real jitted train step (STE's optimizer); big models run it abstractly."""
    config, model, images, variables, layers = tiny(name)
    labels = jnp.arange(len(images)) % 10
    context = MethodContext(layers, param_labels(variables["params"], variables["quant"]), 1, 1, 0)
    tx = STE(lr=0.01).build(context).tx
    step = make_train_step(lambda x: x, None, lambda quant, step: quant)
    batch = (images, labels, jnp.ones(len(images)))
    run = (lambda f, *args: f(*args)) if name in SMALL else jax.eval_shape
    # the real step donates its state: give it host copies (jnp.copy would compile a program per shape)
    own = jax.tree.map(lambda leaf: jnp.asarray(np.array(leaf)), variables) if name in SMALL else variables
    state = run(lambda v: create_state(model, v, tx, seed=0), own)
    new_state, sums = run(step, state, batch, CrossEntropy())

    assert jax.eval_shape(model.apply, variables, images).shape == (len(images), 10)
    assert jax.tree.map(jnp.shape, new_state.params) == jax.tree.map(jnp.shape, variables["params"])
    assert jnp.shape(sums["loss"]) == ()
    binary = [r.path + ("kernel",) for r in layers if r.binary]
    assert binary, "the default config binarizes at least one layer"
    if name in SMALL:
        assert int(new_state.step) == 1 and float(sums["count"]) == len(images)
        assert np.isfinite(float(sums["loss"]))
        assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(new_state.params))
        before, after = flat(variables["params"]), flat(new_state.params)
        assert all(not np.array_equal(before[path], after[path]) for path in binary)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_label_tree_covers_every_parameter(name):
    _, _, _, variables, layers = tiny(name)
    labels = flat(param_labels(variables["params"], variables["quant"]))
    assert set(labels) == set(flat(variables["params"]))
    binary = {r.path + ("kernel",) for r in layers if r.binary}
    assert {path for path, label in labels.items() if label == "binary"} == binary
    assert set(labels.values()) <= {"binary", "real"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_precision_masks_at_zero_give_the_full_precision_twin(name):
    config, binary_model, images, variables, _ = tiny(name)
    fp_model = build_model(config.full_precision_twin(), num_classes=10)
    fp_shapes = jax.eval_shape(lambda: fp_model.init(jax.random.key(0), images[:1]))
    assert jax.tree.map(jnp.shape, fp_shapes["params"]) == jax.tree.map(jnp.shape, variables["params"])
    assert "quant" not in fp_shapes

    @functools.partial(jax.jit, static_argnums=1)
    def outputs(variables, with_masks_on: bool):
        off = set_quant(set_quant(variables["quant"], "kernel_mask", 0.0), "input_mask", 0.0)
        fp_variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        masked = binary_model.apply({**variables, "quant": off}, images)
        on = binary_model.apply(variables, images) if with_masks_on else None
        return masked, fp_model.apply(fp_variables, images), on

    masked, fp, binary = outputs(variables, name in SMALL)  # compiling a third forward costs much on big nets
    np.testing.assert_array_equal(np.asarray(masked), np.asarray(fp))
    if binary is not None:
        assert not np.allclose(np.asarray(binary), np.asarray(fp))  # masks at 1 do change the output


def abstract_run(name: str, shape, num_classes: int, fp: bool = False, **options):
    """(variable shapes, output shape) of a full-width model on one example of `shape`, traced only."""
    model = build_model(ModelConfig(name=name, fp=fp, options=options), num_classes)
    out, variables = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), jnp.zeros((1, *shape))))
    return variables, out.shape


@pytest.mark.parametrize("name, torchvision", [("resnet18", 11_689_512), ("resnet50", 25_557_032),
                                               ("googlenet", 6_624_904)])
def test_parameter_counts_match_torchvision(name, torchvision):
    variables, out_shape = abstract_run(name, IMAGENET, 1000, fp=True)
    count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))
    assert abs(count - torchvision) <= 0.01 * torchvision
    assert out_shape == (1, 1000)


@pytest.mark.parametrize("name, shape, options", [
    ("convnet", (28, 28, 1), {}),
    ("binarynet", (28, 28, 1), {}),
    ("resnet18", CIFAR, {"cifar_stem": True}),
    ("resnet50", CIFAR, {"cifar_stem": True}),
    ("birealnet18", IMAGENET, {}),
    ("birealnet18", CIFAR, {"cifar_stem": True}),
    ("reactnet_a", IMAGENET, {}),
    ("reactnet_a", CIFAR, {"cifar_stem": True}),
])
def test_output_shapes_on_the_data_sets(name, shape, options):
    """The shapes not already run above (tiny variants on 32×32 or 8×8, ImageNet nets at 224)."""
    assert abstract_run(name, shape, 7, **options)[1] == (1, 7)


def layer_census(name: str) -> dict[tuple[str, str, bool, int], int]:
    """(kind, role, binary, kernel size) -> number of layers (the same at every width)."""
    census: dict = {}
    for r in tiny(name)[4]:
        key = (r.kind, r.role, r.binary, r.kernel_shape[0] if r.kind == "conv" else 0)
        census[key] = census.get(key, 0) + 1
    return census


# counted from the papers' architecture descriptions
@pytest.mark.parametrize("name, expected", [
    ("convnet", {("conv", "first", False, 3): 1, ("conv", "hidden", True, 3): 2, ("dense", "last", False, 0): 1}),
    ("binarynet", {("conv", "first", False, 3): 1, ("conv", "hidden", True, 3): 5,
                   ("dense", "hidden", True, 0): 2, ("dense", "last", False, 0): 1}),
    ("resnet18", {("conv", "first", False, 7): 1, ("conv", "hidden", True, 3): 16,
                  ("conv", "shortcut", False, 1): 3, ("dense", "last", False, 0): 1}),
    ("resnet50", {("conv", "first", False, 7): 1, ("conv", "hidden", True, 3): 16,
                  ("conv", "hidden", True, 1): 32, ("conv", "shortcut", False, 1): 4, ("dense", "last", False, 0): 1}),
    ("resnet20", {("conv", "first", False, 3): 1, ("conv", "hidden", True, 3): 18,
                  ("conv", "shortcut", False, 1): 2, ("dense", "last", False, 0): 1}),
    ("googlenet", {("conv", "first", False, 7): 1, ("conv", "hidden", True, 1): 1 + 9 * 4,
                   ("conv", "hidden", True, 3): 1 + 9 * 2, ("dense", "last", False, 0): 1}),
    ("birealnet18", {("conv", "first", False, 7): 1, ("conv", "hidden", True, 3): 16,
                     ("conv", "shortcut", False, 1): 3, ("dense", "last", False, 0): 1}),
    ("reactnet_a", {("conv", "first", False, 3): 1, ("conv", "hidden", True, 3): 13,
                    ("conv", "hidden", True, 1): 13 + 5, ("dense", "last", False, 0): 1}),
])
def test_layer_layout_follows_the_paper(name, expected):
    assert layer_census(name) == expected


def test_bireal_and_reactnet_binary_convs_see_binary_inputs_and_learn_shifts():
    for name in ("birealnet18", "reactnet_a"):
        assert all(r.binary_inputs for r in tiny(name)[4] if r.binary)
    shifts = [path for path in flat(tiny("reactnet_a")[3]["params"]) if path[-1] == "shift"]
    assert len(shifts) == 13 * 6  # the authors' move11, move12, move13, move21, move22, move23 per block
