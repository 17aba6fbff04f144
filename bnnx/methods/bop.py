"""Bop, the binary optimizer (Helwegen, Widdicombe, Geiger, Liu, Cheng and Nusselder, "Latent
Weights Do Not Exist: Rethinking Binarized Neural Network Optimization", NeurIPS 2019,
arXiv 1906.02107).

Binary-bound kernels have no latent weights: they are stored as ±1 and flipped.

    m_t = (1 − γ)·m_{t−1} + γ·g_t                         (m_0 = 0, g_t = ∂ℓ/∂w)
    w_{t+1} = −w_t  where |m_t| > τ and sign(m_t) = sign(w_t),  else w_t

m is an exponential moving average of +g, so flipping where sign(m) = sign(w) moves each
weight against its gradient and descends. (The "easy way" poster writes m with −η∇ and
keeps the same flip condition; with that sign convention the rule would ascend.) Real
parameters use Adam. γ (adaptivity) and τ (threshold) are injected hyperparameters.

1/γ is the momentum's time constant in steps, so a fixed γ means a different thing in a short
and a long run. By default γ is set by the run: 1/γ = `gamma_horizon` × the run's steps, decayed
×`gamma_decay` every `gamma_decay_every` (a fraction of the run). The paper's CIFAR-10 recipe
(plumerai/rethinking-bnn-optimization, 500 epochs of 1000 steps: γ = 10⁻⁴, ×0.1 every 100
epochs) is horizon 0.02 and decay every 0.2 in this form. The default horizon is 1, not 0.02,
since at 0.02 a short run barely learns (the probe: docs/methods.md). `gamma` set instead is the
paper's form, a γ per step, decayed every `gamma_decay_every_epochs` epochs.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bnnx.config.schema import setting
from bnnx.errors import check
from bnnx.layers import flat, unflat
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label, round_half_up
from bnnx.quantizers import sign


class BopState(NamedTuple):
    momentum: Any  # like the binary kernels: m_t
    flips: Any  # per kernel: weights flipped since the counter was last reset
    steps: jax.Array  # updates since the counter was last reset


def bop(gamma: float, threshold: float) -> optax.GradientTransformation:
    """Bop on ±1 weights (Helwegen et al., "Latent Weights Do Not Exist: Rethinking Binarized
    Neural Network Optimization", NeurIPS 2019, arXiv 1906.02107, Algorithm 1):

        m ← (1 − γ)·m + γ·g;   w ← −w where |m| > τ and sign(m) = sign(w)

    Args:
        gamma: γ, the adaptivity (a float or an injected hyperparameter).
        threshold: τ, the flip threshold.

    Returns:
        A GradientTransformation whose update is −2w where the rule flips w and 0 elsewhere, so
        w stays exactly ±1 (it needs `params`); its BopState also counts the flips (per kernel)
        and the steps since the counter was last reset.
    """

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return BopState(momentum=zeros, flips=jax.tree.map(lambda _: jnp.zeros((), jnp.int32), params),
                        steps=jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):  # updates: the loss gradients
        momentum = jax.tree.map(lambda m, g: (1.0 - gamma) * m + gamma * g, state.momentum, updates)
        flip = jax.tree.map(lambda m, w: (jnp.abs(m) > threshold) & (jnp.sign(m) == sign(w)), momentum, params)
        deltas = jax.tree.map(lambda f, w: jnp.where(f, -2.0 * w, 0.0).astype(w.dtype), flip, params)
        flips = jax.tree.map(lambda n, f: n + jnp.sum(f, dtype=jnp.int32), state.flips, flip)
        return deltas, BopState(momentum, flips, state.steps + 1)

    return optax.GradientTransformation(init, update)


def _is_bop_state(node) -> bool:
    return isinstance(node, BopState)


def bop_states(opt_state) -> list[BopState]:
    return [s for s in jax.tree.leaves(opt_state, is_leaf=_is_bop_state) if _is_bop_state(s)]


def reset_flip_counter(opt_state):
    def reset(node):
        if not _is_bop_state(node):
            return node
        return node._replace(flips=jax.tree.map(jnp.zeros_like, node.flips), steps=jnp.zeros_like(node.steps))

    return jax.tree.map(reset, opt_state, is_leaf=_is_bop_state)


def flip_ratio(opt_state, labels, params) -> float:
    """Mean fraction of binary-bound weights flipped per step since the counter was reset."""
    labels = flat(labels)
    size = sum(leaf.size for path, leaf in flat(params).items() if labels[path] == "binary")
    flips = sum(int(n) for s in bop_states(opt_state) for n in jax.tree.leaves(s.flips))
    steps = max((int(s.steps) for s in bop_states(opt_state)), default=0)
    return flips / max(size * steps, 1)


def staircase(value: float, factor: float, every_steps: int) -> optax.Schedule:
    """value·factor^⌊t / every_steps⌋; constant when every_steps = 0."""
    if every_steps == 0 or factor == 1.0:
        return optax.constant_schedule(value)
    return optax.exponential_decay(value, every_steps, factor, staircase=True)


def step_decay(value: float, factor: float, every_epochs: int, steps_per_epoch: int) -> optax.Schedule:
    """value·factor^⌊t / (every_epochs·steps_per_epoch)⌋; constant when every_epochs = 0."""
    return staircase(value, factor, every_epochs * steps_per_epoch)


def signs_of_binary(params, labels):
    labels = flat(labels)
    return unflat({path: sign(w) if labels[path] == "binary" else w for path, w in flat(params).items()})


@dataclasses.dataclass
class Bop(MethodConfig):
    gamma_horizon: float = setting(1.0, gt=0)  # 1/γ as a fraction of the run's steps
    gamma: float | None = setting(None, gt=0, le=1)  # the paper's form: γ per step (overrides gamma_horizon)
    threshold: float = setting(1e-8, ge=0)
    gamma_decay: float = setting(0.1, gt=0)
    gamma_decay_every: float = setting(0.0, ge=0, le=1)  # fraction of the run between two decays; 0: γ stays constant
    gamma_decay_every_epochs: int = setting(0, ge=0)  # the paper's form (with `gamma`): epochs between two decays
    threshold_decay: float = setting(1.0, gt=0)
    threshold_decay_every_epochs: int = setting(0, ge=0)

    def __post_init__(self):
        super().__post_init__()
        check(not (self.gamma_decay_every and self.gamma_decay_every_epochs),
              "set one of method.gamma_decay_every (fraction of the run) and method.gamma_decay_every_epochs")

    def chance_hint(self, rows: list[dict]) -> str | None:
        """Bop's two causes of a collapse (docs/training-warnings.md): τ = 1e-8 is below γ·|g| for
        almost every weight, so each step flips every weight whose momentum agrees with its sign
        (half of them on the first step); and its kernels are ±1, not the initialization's
        ~1/√fan_in, so binary layers with no normalization after them start √fan_in times too large."""
        flips = rows[0].get("flip_ratio") if rows else None
        flipped = f"Bop flipped {flips:.1%} of the binary weights per step in its first epoch, and its" if flips \
            is not None else "Bop's"
        return (f"{flipped} ±1 kernels swamp un-normalized residual or attention paths: try method.threshold=1e-4, "
                f"a normalization after each binary layer, or method=ste (docs/training-warnings.md)")

    def build(self, ctx: MethodContext) -> Recipe:
        spe = ctx.steps_per_epoch
        binary = optax.inject_hyperparams(bop)(
            gamma=self.gamma_schedule(ctx),
            threshold=step_decay(self.threshold, self.threshold_decay, self.threshold_decay_every_epochs, spe))

        def prepare(state):
            return state.replace(params=signs_of_binary(state.params, ctx.labels))

        def on_epoch(state, epoch):
            return state.replace(opt_state=reset_flip_counter(state.opt_state))

        def metrics(state):
            return {"flip_ratio": flip_ratio(state.opt_state, ctx.labels, state.params)}

        return Recipe(tx=by_label(ctx.labels, binary, adam(self.lr_schedule(ctx.total_steps))),
                      prepare=prepare, on_epoch=on_epoch, metrics=metrics)

    def gamma_schedule(self, ctx: MethodContext) -> optax.Schedule:
        """γ_t: the paper's per-step γ, or 1/(horizon·T) decayed every fraction of the run T."""
        if self.gamma is not None:
            return step_decay(self.gamma, self.gamma_decay, self.gamma_decay_every_epochs, ctx.steps_per_epoch)
        gamma = min(1.0, 1.0 / (self.gamma_horizon * ctx.total_steps))
        return staircase(gamma, self.gamma_decay, round_half_up(self.gamma_decay_every * ctx.total_steps))
