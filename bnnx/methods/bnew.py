"""BNEW: Binarized Networks the Easy Way (Paren & Poudel, "Training BNNs the easy way").

Binary-bound weights are relaxed to their convex hull [−1, 1] and pushed to its corners by
the regulariser R(w) = −‖w_b‖² + p (negative weight decay):

    w_{t+1} = Π_[−1,1]((1 + 2λ_t·η_t)·(w_t − η_t·AdamStep_t))

Four stages, each a fraction of the run (`stages`, rounded to whole epochs):

1. binary activations, real-valued binary-bound weights (precision mask 0), λ = 0;
2. λ_t = β·t, t = steps since stage 2 began; the linear lr decay restarts here and runs
   to zero at the end of stage 3;
3. at t_lock (start of stage 3) the binary-bound weights are projected onto {−1, +1} and
   frozen (precision mask 1, trainable 0); the real parameters go on with stage 2's decay;
4. the real parameters are fine-tuned once more with a fresh linear decay from `lr`
   (this restart is what distinguishes stage 4 from stage 3).

The best β depends on the run length T (as the paper notes): the expansion accumulated by
the lock is exp(Σ 2λ_t·η_t) ∝ exp(c·β·T²). The default 5e-4 puts ~99% of the weights at ±1
by the lock in a 10-epoch Fashion-MNIST run (5.6k stage-2 steps); scale it by ~1/T² (the
`binary_fraction` metric shows whether the ramp binarizes before the lock).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bnnx.errors import check
from bnnx.layers import flat, set_quant, unflat
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label, epoch_boundaries
from bnnx.quantizers import sign
from bnnx.schema import setting


class BnewState(NamedTuple):
    adam: Any  # optax.ScaleByAdamState


def bnew(learning_rate: float, lam: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """BNEW's step on the relaxed binary weights (Paren & Poudel, "Training BNNs the easy way"):

        w ← Π_[−1,1]((1 + 2λ·η)·(w − η·AdamStep(g)))

    i.e. Adam on f(w) − λ‖w‖² (gradient step first, then the negative weight decay as a
    multiplicative expansion), projected onto the box. Returns the new w minus w as the update.
    """
    scale_by_adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

    def init(params):
        return BnewState(scale_by_adam.init(params))

    def update(grads, state, params):
        steps, adam_state = scale_by_adam.update(grads, state.adam, params)
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
    beta: float = setting(5e-4, ge=0)  # λ slope per step of stage 2; binarizes ~99% by the lock in 10 FMNIST epochs
    stages: tuple[float, ...] = setting((0.2, 0.6, 0.1, 0.1), ge=0, length=4)

    def __post_init__(self):
        super().__post_init__()
        self.stages = tuple(float(f) for f in self.stages)
        check(abs(sum(self.stages) - 1.0) < 1e-6, f"method.stages must sum to 1 (got {sum(self.stages):g})")

    def build(self, ctx: MethodContext) -> Recipe:
        spe = ctx.steps_per_epoch
        ramp_epoch, lock_epoch, tune_epoch, _ = epoch_boundaries(self.stages, ctx.epochs)
        ramp, lock, tune = ramp_epoch * spe, lock_epoch * spe, tune_epoch * spe
        lr = linear_decays(self.lr, [ramp, tune], ctx.total_steps)

        def lam(step):
            return self.beta * jnp.clip(step - ramp, 0, lock - ramp).astype(jnp.float32)

        binary = optax.inject_hyperparams(bnew)(learning_rate=lr, lam=lam)

        def on_epoch(state, epoch):
            return lock_binary(state, ctx.labels) if epoch >= lock_epoch else relax_binary(state)

        def metrics(state):
            return {"binary_fraction": binary_fraction(state.params, ctx.labels)}

        return Recipe(tx=by_label(ctx.labels, binary, adam(lr)), on_epoch=on_epoch, metrics=metrics)


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
