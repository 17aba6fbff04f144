"""Every quantizer's forward and gradient against a NumPy reference, zeros included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.errors import ConfigError
from bnnx.quantizers import make_quantizer

X = np.array([-3.0, -1.5, -1.0, -0.7, -0.25, 0.0, 0.25, 0.5, 0.7, 1.0, 1.5, 3.0], np.float32)
G = np.linspace(0.5, 2.0, X.size).astype(np.float32)  # upstream gradient, not all ones


def np_sign(x):
    return np.where(x >= 0, 1.0, -1.0)


def grad_of(quantizer, x, g, **kwargs):
    _, vjp = jax.vjp(lambda v: quantizer(v, **kwargs), jnp.asarray(x))
    return np.asarray(vjp(jnp.asarray(g))[0])


def np_swish_derivative(x, beta):
    sigma = 1.0 / (1.0 + np.exp(-beta * x))
    # d/dx of 2σ(βx)(1 + βx(1 − σ(βx))) − 1, by the product rule
    dsigma = beta * sigma * (1 - sigma)
    return 2 * dsigma * (1 + beta * x * (1 - sigma)) + 2 * sigma * (beta * (1 - sigma) - beta * x * dsigma)


@pytest.mark.parametrize("name, kwargs, backward", [
    ("sign_ste", {}, lambda x: (np.abs(x) <= 1.0).astype(np.float32)),
    ("sign_ste", {"clip": 0.5}, lambda x: (np.abs(x) <= 0.5).astype(np.float32)),
    ("approx_sign", {}, lambda x: np.maximum(0.0, 2.0 - 2.0 * np.abs(x))),
    ("swish_sign", {"beta": 5.0}, lambda x: np_swish_derivative(x, 5.0)),
    ("swish_sign", {"beta": 2.0}, lambda x: np_swish_derivative(x, 2.0)),
])
def test_sign_quantizers_forward_and_backward(name, kwargs, backward):
    q = make_quantizer(name, **kwargs)
    out = np.asarray(q(jnp.asarray(X), train=True))
    np.testing.assert_array_equal(out, np_sign(X))
    assert set(np.unique(out)) <= {-1.0, 1.0}
    assert out[X == 0.0][0] == 1.0  # sign(0) = +1
    np.testing.assert_allclose(grad_of(q, X, G, train=True), G * backward(X.astype(np.float64)), rtol=1e-5, atol=1e-6)


def test_swish_reference_matches_finite_differences():
    beta, eps = 5.0, 1e-4
    f = lambda x: 2 / (1 + np.exp(-beta * x)) * (1 + beta * x * (1 - 1 / (1 + np.exp(-beta * x)))) - 1
    x = X.astype(np.float64)
    np.testing.assert_allclose(
        np_swish_derivative(x, beta), (f(x + eps) - f(x - eps)) / (2 * eps), rtol=1e-4, atol=1e-6
    )


def test_identity_passes_values_and_gradients():
    q = make_quantizer("identity")
    np.testing.assert_array_equal(np.asarray(q(jnp.asarray(X))), X)
    np.testing.assert_array_equal(grad_of(q, X, G), G)


@pytest.mark.parametrize("beta", [0.5, 1.0, 4.0])
def test_tanh_mirror_trains_on_tanh_evaluates_on_sign(beta):
    q = make_quantizer("tanh_mirror")
    np.testing.assert_allclose(np.asarray(q(jnp.asarray(X), beta=beta, train=True)), np.tanh(beta * X), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(q(jnp.asarray(X), beta=beta, train=False)), np_sign(X))
    # Mirror descent: the latent variable moves along the primal gradient (identity backward).
    np.testing.assert_array_equal(grad_of(q, X, G, beta=beta, train=True), G)


def test_tanh_mirror_beta_change_does_not_recompile():
    q = make_quantizer("tanh_mirror")
    traces = []

    @jax.jit
    def forward(x, beta):
        traces.append(1)
        return q(x, beta=beta, train=True)

    for beta in (1.0, 1.02, 1.0404, 3.0):
        np.testing.assert_allclose(np.asarray(forward(jnp.asarray(X), jnp.float32(beta))), np.tanh(beta * X), rtol=1e-6)
    assert len(traces) == 1


def test_ternary_twn_threshold_per_output_channel():
    w = np.array([[0.0, 1.0], [0.5, -0.2], [-1.0, 0.05], [0.1, -2.0]], np.float32)  # (in=4, out=2)
    delta = 0.7 * np.mean(np.abs(w), axis=0, keepdims=True)
    expected = np.where(np.abs(w) > delta, np_sign(w), 0.0)
    q = make_quantizer("ternary")
    out = np.asarray(q(jnp.asarray(w)))
    np.testing.assert_array_equal(out, expected)
    assert set(np.unique(out)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(grad_of(q, w, np.ones_like(w)), np.ones_like(w))  # straight-through


def test_ternary_fixed_threshold():
    q = make_quantizer("ternary", threshold=0.5)
    expected = np.where(np.abs(X) > 0.5, np_sign(X), 0.0)
    np.testing.assert_array_equal(np.asarray(q(jnp.asarray(X))), expected)
    np.testing.assert_array_equal(grad_of(q, X, G), G)


@pytest.mark.parametrize("name, kwargs", [("ternary", {"delta": -0.1}), ("ternary", {"threshold": -1.0}),
                                          ("nope", {}), ("sign_ste", {"beta": 2.0})])
def test_bad_quantizer_arguments_raise_config_errors(name, kwargs):
    with pytest.raises(ConfigError):
        make_quantizer(name, **kwargs)
