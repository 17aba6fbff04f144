"""Quantized layers: precision masks, scaling, roles, the label tree and the layer record."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.errors import ConfigError
from bnnx.layers import (
    FULL_PRECISION,
    QuantConv,
    QuantDense,
    QuantPolicy,
    check_masks,
    flat,
    param_labels,
    record_layers,
    set_quant,
)
from bnnx.models import ModelConfig, build_model
from bnnx.quantizers import Identity, SignSTE

X = jax.random.normal(jax.random.key(1), (4, 6))


def init(layer, x=X):
    variables = layer.init(jax.random.key(0), x)
    return variables, lambda v, **kw: layer.apply(v, x, **kw)


def np_sign(a):
    return np.where(a >= 0, 1.0, -1.0)


def test_binary_dense_uses_sign_of_kernel_and_inputs():
    variables, apply = init(QuantDense(3))
    kernel = np.asarray(variables["params"]["kernel"])
    np.testing.assert_allclose(np.asarray(apply(variables)), np_sign(np.asarray(X)) @ np_sign(kernel), rtol=1e-6)


def test_mask_zero_is_full_precision_and_scalar_or_elementwise_masks_mix():
    variables, apply = init(QuantDense(3))
    kernel = np.asarray(variables["params"]["kernel"])
    real = dict(variables, quant=set_quant(variables["quant"], "kernel_mask", 0.0))
    real = dict(real, quant=set_quant(real["quant"], "input_mask", 0.0))
    np.testing.assert_allclose(np.asarray(apply(real)), np.asarray(X) @ kernel, rtol=1e-5)
    elementwise = np.zeros_like(kernel)
    elementwise[0] = 1.0  # only the first input row quantized
    mixed = dict(real, quant=set_quant(real["quant"], "kernel_mask", elementwise))
    expected_kernel = np.where(elementwise > 0, np_sign(kernel), kernel)
    np.testing.assert_allclose(np.asarray(apply(mixed)), np.asarray(X) @ expected_kernel, rtol=1e-5)


def test_mask_of_wrong_shape_is_a_config_error():
    variables, apply = init(QuantDense(3))
    bad = dict(variables, quant=set_quant(variables["quant"], "kernel_mask", np.ones((2, 2))))
    with pytest.raises(ConfigError, match="precision mask"):
        apply(bad)
    with pytest.raises(ConfigError, match="precision mask"):
        check_masks(bad["quant"], variables["params"])


def test_mean_abs_scaling_multiplies_each_output_channel():
    policy = QuantPolicy(input_quantizer=Identity(), scaling="mean_abs")
    variables, apply = init(QuantDense(3, policy=policy))
    kernel = np.asarray(variables["params"]["kernel"])
    expected = np.asarray(X) @ (np_sign(kernel) * np.abs(kernel).mean(axis=0))
    np.testing.assert_allclose(np.asarray(apply(variables)), expected, rtol=1e-5)
    # the XNOR scale is a constant for the gradient: d/dw sum(y) = STE only
    grad = jax.grad(lambda p: jnp.sum(QuantDense(3, policy=policy).apply(dict(variables, params=p), X)))(
        variables["params"]
    )
    expected_grad = np.asarray(X).sum(0)[:, None] * np.abs(kernel).mean(0)[None, :] * (np.abs(kernel) <= 1)
    np.testing.assert_allclose(np.asarray(grad["kernel"]), expected_grad, rtol=1e-5)


def test_learned_scaling_is_a_real_parameter():
    policy = QuantPolicy(input_quantizer=Identity(), scaling="learned")
    variables, _ = init(QuantDense(3, policy=policy))
    assert variables["params"]["scale"].shape == (3,)
    labels = param_labels(variables["params"], variables["quant"])
    assert labels == {"kernel": "binary", "scale": "real"}


def test_real_roles_have_no_quant_state_and_are_exact():
    variables, apply = init(QuantDense(3, role="first"))
    assert "quant" not in variables
    np.testing.assert_allclose(
        np.asarray(apply(variables)), np.asarray(X) @ np.asarray(variables["params"]["kernel"]), rtol=1e-6
    )


def test_real_paths_keep_matching_layers_real():
    model = build_model(ModelConfig(real_paths=("Dense_1",), options={"hidden": (8, 8, 8)}), num_classes=3)
    layers = record_layers(model, jnp.zeros((1, 5)))
    assert [(l.name, l.binary) for l in layers] == [("QuantDense_0", False), ("QuantDense_1", False),
                                                     ("QuantDense_2", True), ("QuantDense_3", False)]


def test_conv_binary_forward_matches_reference():
    x = jax.random.normal(jax.random.key(2), (2, 5, 5, 3))
    layer = QuantConv(4, kernel_size=(3, 3))
    variables = layer.init(jax.random.key(0), x)
    kernel = np_sign(np.asarray(variables["params"]["kernel"]))
    expected = jax.lax.conv_general_dilated(
        jnp.asarray(np_sign(np.asarray(x)), jnp.float32),
        jnp.asarray(kernel, jnp.float32),
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    np.testing.assert_allclose(np.asarray(layer.apply(variables, x)), np.asarray(expected), rtol=1e-5)


def test_mlp_record_labels_and_w1a32_choice():
    config = ModelConfig(options={"hidden": (16, 16, 16)})
    model = build_model(config, num_classes=10)
    layers = record_layers(model, jnp.zeros((1, 8, 8, 1)))
    assert [l.role for l in layers] == ["first", "hidden", "hidden", "last"]
    assert [l.binary for l in layers] == [False, True, True, False]
    assert [l.kernel_shape for l in layers] == [(64, 16), (16, 16), (16, 16), (16, 10)]
    assert layers[1].macs == 16 * 16
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    labels = flat(param_labels(variables["params"], variables["quant"]))
    assert sorted(k for k, v in labels.items() if v == "binary") == [
        ("QuantDense_1", "kernel"),
        ("QuantDense_2", "kernel"),
    ]
    assert set(labels) == set(flat(variables["params"]))  # every parameter has a label
    w1a32 = build_model(ModelConfig(binary_activations=False, options={"hidden": (16, 16, 16)}), num_classes=10)
    assert not any(l.binary_inputs for l in record_layers(w1a32, jnp.zeros((1, 8, 8, 1))))


def test_fp_twin_has_identical_structure_and_no_binary_layers():
    binary = build_model(ModelConfig(), 10).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    twin_config = ModelConfig().full_precision_twin()
    assert twin_config.policy() == FULL_PRECISION
    twin = build_model(twin_config, 10).init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    assert jax.tree.structure(binary["params"]) == jax.tree.structure(twin["params"])
    assert "quant" not in twin


def test_unknown_model_option_and_role_are_config_errors():
    with pytest.raises(ConfigError, match="unknown key 'model.widht'; valid keys: activation, hidden"):
        build_model(ModelConfig(options={"widht": 3}), 10)
    with pytest.raises(ConfigError, match="role"):
        QuantPolicy(kernel_quantizer=SignSTE(), real_roles=("firts",))
