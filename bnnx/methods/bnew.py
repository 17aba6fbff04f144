"""BNEW: Binarized Networks the Easy Way (Paren & Poudel, "Training Binarized Neural Networks the
Easy Way", poster; no arXiv id).

Binary-bound weights are relaxed to their convex hull [−1, 1] and pushed to its corners by
the regulariser R(w) = −‖w_b‖² + p (negative weight decay):

    w_{t+1} = Π_[−1,1]((1 + 2λ_t·η_t)·(w_t − η_t·AdamStep_t))

Four stages, each a fraction of the run (`stages`, rounded to whole epochs):

1. binary activations, real-valued binary-bound weights (precision mask 0), λ = 0;
2. λ_t = β·t, t = steps since stage 2 began; the linear lr decay restarts here;
3. at t_lock (start of stage 3) the binary-bound weights are projected onto {−1, +1} and
   frozen (precision mask 1, trainable 0); the real parameters go on with stage 2's decay;
4. the real parameters are fine-tuned.

The lr is a stated choice, `lr_restarts`: `poster` decays linearly over stage 1 and once more,
reset after stage 1, to zero at the end of the run (the poster: "η_t follows a linearly decaying
schedule, that is reset after step 1"); `stages` (bnnx's default) ends stage 2's decay at zero at
the end of stage 3 and restarts it from `lr` for stage 4 (what distinguishes stage 4 from 3).

The paper notes that the best β depends on the run length T: the expansion accumulated over
the ramp is Π_t (1 + 2λ_t·η_t) ≈ exp(c·β·T²). So by default β is derived from the run: the
ramp's total `expansion` (the factor by which an untouched weight grows over stage 2, for the
actual λ and lr schedules, solved on the host) is fixed, and binarization completes near the
ramp's end at any budget (`binary_fraction` is logged each epoch). `beta` set instead gives
the paper's own parametrization, a λ slope per step.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnnx.config.schema import setting
from bnnx.errors import check
from bnnx.layers import flat, set_quant, unflat
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label, epoch_boundaries
from bnnx.quantizers import sign


class BnewState(NamedTuple):
    adam: Any  # optax.ScaleByAdamState


def bnew(learning_rate: float, lam: float, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> optax.GradientTransformation:
    """BNEW's step on the relaxed binary weights (Alasdair Paren and Rudra P. K. Poudel,
    "Training Binarized Neural Networks the Easy Way", poster; no venue or arXiv id):

        w ← Π_[−1,1]((1 + 2λ·η)·(w − η·AdamStep(g)))

    i.e. Adam on f(w) − λ‖w‖² (gradient step first, then the negative weight decay as a
    multiplicative expansion), projected onto the box.

    Args:
        learning_rate: η.
        lam: λ (`optax.inject_hyperparams(bnew)` takes schedules for both: the method ramps
            λ_t = β·t in stage 2).
        b1, b2, eps: Adam's.

    Returns:
        A GradientTransformation whose update is the new w minus w (it needs `params`).
    """
    scale_by_adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def init(params):
        return BnewState(scale_by_adam.init(params))

    def update(updates, state, params=None):  # updates: the loss gradients
        steps, adam_state = scale_by_adam.update(updates, state.adam, params)
        expand = 1.0 + 2.0 * lam * learning_rate

        def new_minus_old(step, w):
            return (jnp.clip(expand * (w - learning_rate * step), -1.0, 1.0) - w).astype(w.dtype)

        return jax.tree.map(new_minus_old, steps, params), BnewState(adam_state)

    return optax.GradientTransformation(init, update)


def linear_decays(lr: float, boundaries: list[int], total: int) -> optax.Schedule:
    """A linear decay lr → 0 within each segment [0, b₁), [b₁, b₂), …, [b_last, total)."""
    edges = [0, *boundaries, total]
    pieces = [optax.linear_schedule(lr, 0.0, max(1, end - begin)) for begin, end in zip(edges, edges[1:])]
    return optax.join_schedules(pieces, boundaries)


@dataclasses.dataclass
class BNEW(MethodConfig):
    schedule: str = setting("linear", choices=("linear",))
    expansion: float = setting(3e3, ge=1)  # Π(1 + 2λ_t·η_t) over stage 2: sets β from the run
    beta: float | None = setting(None, ge=0)  # the paper's form: λ slope per step of stage 2 (overrides `expansion`)
    stages: tuple[float, ...] = setting((0.2, 0.6, 0.1, 0.1), ge=0, length=4)
    lr_restarts: str = setting("stages", choices=("stages", "poster"))  # lr decay reset at stages 2 and 4, or 2 only

    def __post_init__(self):
        super().__post_init__()
        self.stages = tuple(float(f) for f in self.stages)
        check(abs(sum(self.stages) - 1.0) < 1e-6, f"method.stages must sum to 1 (got {sum(self.stages):g})")

    def build(self, ctx: MethodContext) -> Recipe:
        spe = ctx.steps_per_epoch
        ramp_epoch, lock_epoch, tune_epoch, _ = epoch_boundaries(self.stages, ctx.epochs)
        ramp, lock, tune = ramp_epoch * spe, lock_epoch * spe, tune_epoch * spe
        lr = linear_decays(self.lr, [ramp, tune] if self.lr_restarts == "stages" else [ramp], ctx.total_steps)
        beta = self.beta if self.beta is not None else slope_for_expansion(self.expansion, lr, ramp, lock)

        def lam(step):
            return beta * jnp.clip(step - ramp, 0, lock - ramp).astype(jnp.float32)

        binary = optax.inject_hyperparams(bnew)(learning_rate=lr, lam=lam)

        def on_epoch(state, epoch):
            return lock_binary(state, ctx.labels) if epoch >= lock_epoch else relax_binary(state)

        growth = ramp_growth(beta, lr, ramp, lock)

        def metrics(state):
            return {"binary_fraction": binary_fraction(state.params, ctx.labels),
                    "expansion": float(growth[int(np.clip(int(state.step) - ramp, 0, lock - ramp))])}

        return Recipe(tx=by_label(ctx.labels, binary, adam(lr)), on_epoch=on_epoch, metrics=metrics)


def _expansion_weights(lr, ramp: int, lock: int) -> np.ndarray:
    """2·(t − ramp)·η_t for the ramp's steps: log(1 + β·this) is each step's log growth."""
    steps = np.arange(ramp, lock)
    return 2.0 * (steps - ramp) * np.asarray(lr(steps), np.float64)


def ramp_growth(beta: float, lr, ramp: int, lock: int) -> np.ndarray:
    """Π_{ramp ≤ t < ramp + k} (1 + 2λ_t·η_t) for k = 0 … lock − ramp: the expansion so far."""
    return np.exp(np.concatenate([[0.0], np.cumsum(np.log1p(beta * _expansion_weights(lr, ramp, lock)))]))


def slope_for_expansion(expansion: float, lr, ramp: int, lock: int) -> float:
    """β with Σ_{ramp ≤ t < lock} log(1 + 2·β·(t − ramp)·η_t) = log(expansion), by bisection
    (the left side grows with β); 0 when the ramp is empty or the lr is 0 over it."""
    weights = _expansion_weights(lr, ramp, lock)
    target = float(np.log(expansion))
    if target == 0.0 or not np.any(weights > 0):
        return 0.0

    def log_growth(beta: float) -> float:
        return float(np.sum(np.log1p(beta * weights)))

    low, high = 0.0, target / float(np.sum(weights))  # log1p(x) ≤ x: the linear solution is a lower bound
    while log_growth(high) < target:
        low, high = high, 2.0 * high
    for _ in range(100):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if log_growth(middle) < target else (low, middle)
    return 0.5 * (low + high)


def relax_binary(state):
    """Stages 1–2: binary activations, the forward pass sees the relaxed weights."""
    quant = set_quant(set_quant(state.quant, "kernel_mask", 0.0), "input_mask", 1.0)
    return state.replace(quant=quant)


def lock_binary(state, labels):
    """Stages 3–4: project binary-bound weights onto {−1, +1} and freeze them (idempotent)."""
    labels = flat(labels)
    params = unflat({p: sign(w) if labels[p] == "binary" else w for p, w in flat(state.params).items()})
    trainable = unflat({p: jnp.zeros_like(t) if labels[p] == "binary" else t for p, t in flat(state.trainable).items()})
    quant = set_quant(set_quant(state.quant, "kernel_mask", 1.0), "input_mask", 1.0)
    return state.replace(params=params, trainable=trainable, quant=quant)


def binary_fraction(params, labels) -> float:
    """Fraction of binary-bound weights at a corner of the box (|w| = 1)."""
    labels = flat(labels)
    kernels = [w for p, w in flat(params).items() if labels[p] == "binary"]
    at_corner = sum(float(jnp.sum(jnp.abs(w) == 1.0)) for w in kernels)
    return at_corner / max(sum(w.size for w in kernels), 1)
