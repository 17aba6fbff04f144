"""Quantizers with explicit forward and backward rules (`jax.custom_vjp`).

Each quantizer is a frozen dataclass called as `q(x, beta=..., train=...)`. `beta` is a
runtime value carried in the train state (only `tanh_mirror` reads it), so changing it
never recompiles. Binary outputs map sign(0) to +1.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp

import bnnx.xla_cpu  # noqa: F401 (jax.random's bits compile faster on CPU, unchanged; every model draws them)
from bnnx.config.schema import check_values, setting, validate
from bnnx.errors import unknown_choice


def sign(x: jax.Array) -> jax.Array:
    """sign with sign(0) = +1, so every output is exactly ±1."""
    return jnp.where(x >= 0, 1.0, -1.0).astype(x.dtype)


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _sign_ste(x, clip):
    return sign(x)


def _sign_ste_fwd(x, clip):
    return sign(x), x


def _sign_ste_bwd(clip, x, g):
    if clip is None:  # Hubara et al.'s weight gradient: passed unchanged
        return (g,)
    return (g * (jnp.abs(x) <= clip).astype(g.dtype),)


_sign_ste.defvjp(_sign_ste_fwd, _sign_ste_bwd)


@jax.custom_vjp
def _approx_sign(x):
    return sign(x)


def _approx_sign_fwd(x):
    return sign(x), x


def _approx_sign_bwd(x, g):
    return (g * jnp.maximum(0.0, 2.0 - 2.0 * jnp.abs(x)),)


_approx_sign.defvjp(_approx_sign_fwd, _approx_sign_bwd)


def swish_sign_derivative(x, beta):
    """d/dx of SS_β(x) = 2σ(βx)(1 + βx(1 − σ(βx))) − 1 (BNN+, Darabi et al. 2018)."""
    bx = beta * x
    return beta * (2.0 - bx * jnp.tanh(bx / 2.0)) / (1.0 + jnp.cosh(bx))


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _swish_sign(x, beta):
    return sign(x)


def _swish_sign_fwd(x, beta):
    return sign(x), x


def _swish_sign_bwd(beta, x, g):
    return (g * swish_sign_derivative(x, beta),)


_swish_sign.defvjp(_swish_sign_fwd, _swish_sign_bwd)


@jax.custom_vjp
def _mirror_tanh(x, beta):
    return jnp.tanh(beta * x)


def _mirror_tanh_fwd(x, beta):
    return jnp.tanh(beta * x), None


def _mirror_tanh_bwd(_, g):
    # Mirror descent moves the dual (latent) variable along the primal gradient, so
    # the gradient passes through the mirror map unchanged; β gets none.
    return g, None


_mirror_tanh.defvjp(_mirror_tanh_fwd, _mirror_tanh_bwd)


@jax.custom_vjp
def _straight_through(x, quantized):
    return quantized


def _straight_through_fwd(x, quantized):
    return quantized, None


def _straight_through_bwd(_, g):
    return g, jnp.zeros_like(g)


_straight_through.defvjp(_straight_through_fwd, _straight_through_bwd)


def ternary_threshold(w: jax.Array, delta: float) -> jax.Array:
    """TWN threshold Δ = δ·mean|w| per output channel (the last axis), no gradient."""
    axes = tuple(range(w.ndim - 1)) if w.ndim > 1 else None
    return jax.lax.stop_gradient(delta * jnp.mean(jnp.abs(w), axis=axes, keepdims=w.ndim > 1))


def ternarize(w: jax.Array, threshold) -> jax.Array:
    return jnp.where(jnp.abs(w) > threshold, sign(w), 0.0).astype(w.dtype)


@dataclasses.dataclass(frozen=True)
class Identity:
    """Full precision. Forward x; backward g."""

    levels = None

    def __call__(self, x, beta=1.0, train=False):
        return x


@dataclasses.dataclass(frozen=True)
class SignSTE:
    """Sign with a straight-through estimator (Hubara et al. 2016).

    Forward sign(x) ∈ {−1, +1} with sign(0) = +1; backward g·1{|x| ≤ clip}, or g unchanged
    with `clip: null` (method.weight_gate=false of the STE method).
    """

    clip: float | None = setting(1.0, gt=0)
    levels = 2

    def __post_init__(self):
        validate(self, "quantizer.sign_ste")

    def __call__(self, x, beta=1.0, train=False):
        return _sign_ste(x, None if self.clip is None else float(self.clip))


@dataclasses.dataclass(frozen=True)
class ApproxSign:
    """Bi-Real Net's ApproxSign (Liu et al. 2018). Forward sign(x); backward g·max(0, 2 − 2|x|)."""

    levels = 2

    def __call__(self, x, beta=1.0, train=False):
        return _approx_sign(x)


@dataclasses.dataclass(frozen=True)
class SwishSign:
    """BNN+'s SignSwish (Darabi et al. 2018). Forward sign(x); backward g·SS_β'(x)."""

    beta: float = setting(5.0, gt=0)
    levels = 2

    def __post_init__(self):
        validate(self, "quantizer.swish_sign")

    def __call__(self, x, beta=1.0, train=False):
        return _swish_sign(x, float(self.beta))


@dataclasses.dataclass(frozen=True)
class TanhMirror:
    """Mirror map of BMD (Ajanthan et al. 2021, tanh map).

    Training forward tanh(β·x) with β a runtime value from the schedule; backward g
    (mirror descent step on the latent variable). Evaluation/export forward: sign(x).
    """

    levels = 2

    def __call__(self, x, beta=1.0, train=False):
        if not train:
            return sign(x)
        return _mirror_tanh(x, jnp.asarray(beta, x.dtype))


@dataclasses.dataclass(frozen=True)
class Ternary:
    """Ternary weights (TWN, Li et al. 2016). Forward {−1, 0, +1}; backward g (straight-through).

    The threshold is Δ = δ·mean|w| per output channel, or the fixed `threshold` when given
    (RPR uses 0.5: the nearest of {−1, 0, +1} after rescaling).
    """

    delta: float = setting(0.7, ge=0)
    threshold: float | None = setting(None, ge=0)
    levels = 3

    def __post_init__(self):
        validate(self, "quantizer.ternary")

    def __call__(self, x, beta=1.0, train=False):
        threshold = self.threshold if self.threshold is not None else ternary_threshold(x, self.delta)
        return _straight_through(x, ternarize(jax.lax.stop_gradient(x), threshold))


QUANTIZERS = {
    "identity": Identity,
    "sign_ste": SignSTE,
    "approx_sign": ApproxSign,
    "swish_sign": SwishSign,
    "tanh_mirror": TanhMirror,
    "ternary": Ternary,
}


def make_quantizer(name: str | None, **kwargs):
    """Build a quantizer by registry name; `None` means identity."""
    if name is None:
        return Identity()
    args = check_quantizer_args(name, kwargs, f"quantizer.{name}")
    return QUANTIZERS[name](**args)


def check_quantizer_args(name: str, args: dict, prefix: str) -> dict:
    """`args` checked against the arguments quantizer `name` declares."""
    if name not in QUANTIZERS:
        raise unknown_choice("quantizer", name, QUANTIZERS)
    return check_values(QUANTIZERS[name], args, prefix)


SCALINGS = ("none", "mean_abs", "learned")


def mean_abs_scale(w: jax.Array) -> jax.Array:
    """XNOR-Net scale: per output channel mean|w|, gradient stopped."""
    axes = tuple(range(w.ndim - 1))
    return jax.lax.stop_gradient(jnp.mean(jnp.abs(w), axis=axes))
