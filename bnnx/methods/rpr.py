"""Random Partition Relaxation (RPR; Cavigelli and Benini, "Random Partition Relaxation for Training
Binary and Ternary Weight Neural Networks", arXiv 2001.01091) for binary and ternary weights.

Each epoch the binary-bound weights of every kernel are split at random into a constrained
part, exactly round(FF·n) of them (the forward pass sees the quantized value q(w); no
updates), and a relaxed part (the forward pass sees the continuous w; trained with Adam).
Constrained values always derive from the latent continuous w. The freezing fraction FF
follows the paper's schedule: FF₀ for an initial phase, then `ff_increases` phases that
halve 1 − FF each time (0.9 → 0.95 → 0.975 → 0.9875), then FF = 1 for a final phase in
which only the real parameters train. The initial phase keeps `lr` ("until stabilization of
the validation metric"; the paper names no drop there). Each later FF phase restarts at `lr`
and drops it ×0.1 after the fraction `lr_drop_at` of the phase (the paper: 15 epochs, ×0.1
after 10, so 2/3); the final phase runs a third each at 1×, 0.1× and 0.01× `lr`. The default
fractions are the paper's GoogLeNet schedule, 37 + 3 × 15 + 30 = 112 epochs: 37/112 at FF₀,
30/112 at FF = 1, so `epochs=112` gives the paper's 15-epoch phases.

Only the first and last layers stay real (the paper's footnote): the 1×1 shortcut
projections of a ResNet are quantized like every other layer.

The paper is silent on the optimizer state of constrained weights; `frozen_moments` picks the
reading. `accumulate` (the default, bnnx's first reading): Adam's moments keep taking the
straight-through gradient g·1{|w| ≤ 1} of constrained weights, only their updates are dropped,
so a weight relaxed later starts from moments gathered while it was frozen. `hold`: a
constrained weight's moments are masked like its update (neither updated nor used) and resume,
when it is relaxed again, as they were when it was last relaxed.

Start from a full-precision run (`method.init_from`, as every method can) or from scratch:
either way each filter is first rescaled, w ← w / ŝ with ŝ = argmin_s ‖w − s·q(w/s)‖₂ (paper
eq. 4; 1000-point grid on [0, max|w|], then Nelder–Mead), so that the quantization levels fit
the weights.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnnx.config.schema import setting
from bnnx.errors import check
from bnnx.layers import binary_layer_paths, flat, set_quant, unflat
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label, epoch_boundaries, round_half_up
from bnnx.methods.masks import hold_frozen_moments, sync_frozen

LEVELS = ("binary", "ternary")
FROZEN_MOMENTS = ("accumulate", "hold")
TERNARY_THRESHOLD = 0.5  # nearest of {−1, 0, +1}


def quantize_levels(w: np.ndarray, levels: str) -> np.ndarray:
    """Nearest level on the host, as the model's quantizers do: sign with 0 → +1 (binary), or
    0 where |w| ≤ 0.5 and sign(w) elsewhere (ternary)."""
    signs = np.where(w >= 0, 1.0, -1.0)
    return signs if levels == "binary" else np.where(np.abs(w) > TERNARY_THRESHOLD, signs, 0.0)


def filter_scale(w: np.ndarray, levels: str, points: int = 1000) -> float:
    """ŝ = argmin_{s ≥ 0} ‖w − s·q(w/s)‖₂: brute force over `points` values then Nelder–Mead."""
    from scipy.optimize import minimize

    w = np.asarray(w, np.float64).ravel()
    top = float(np.max(np.abs(w)))
    if top == 0.0:
        return 1.0
    grid = np.linspace(top / points, top, points)
    errors = np.sum((w - grid[:, None] * quantize_levels(w / grid[:, None], levels)) ** 2, axis=1)
    best = float(grid[np.argmin(errors)])
    result = minimize(lambda s: _quant_error(w, max(float(s[0]), 1e-12 * top), levels), x0=[best],
                      method="Nelder-Mead", options={"xatol": 1e-9 * top, "fatol": 1e-12 * float(errors.min()) + 1e-30})
    found = float(result.x[0])
    return found if found > 0 and result.fun <= _quant_error(w, best, levels) else best


def _quant_error(w: np.ndarray, s: float, levels: str) -> float:
    return float(np.sum((w - s * quantize_levels(w / s, levels)) ** 2))


def rescale_filters(kernel, levels: str):
    """Divide each output channel (last axis) of `kernel` by its ŝ."""
    columns = np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    scales = np.array([filter_scale(columns[:, c], levels) for c in range(columns.shape[1])])
    return jnp.asarray(columns / scales, kernel.dtype).reshape(kernel.shape)


def constrained_mask(key, shape, freezing_fraction: float) -> jax.Array:
    """1 on exactly round(FF·n) randomly chosen elements, 0 elsewhere."""
    n = math.prod(shape)
    count = round_half_up(freezing_fraction * n)
    order = jax.random.permutation(key, n)
    return jnp.zeros(n, jnp.float32).at[order].set(jnp.arange(n) < count).reshape(shape)


def piecewise_constant(boundaries: list[int], values: list[float]):
    """values[i] on [boundaries[i−1], boundaries[i]) (jit-friendly): the lr restarts and drops."""
    bounds, levels = jnp.asarray(boundaries, jnp.int32), jnp.asarray(values, jnp.float32)
    return lambda step: levels[jnp.searchsorted(bounds, step, side="right")]


@dataclasses.dataclass
class RPR(MethodConfig):
    schedule: str = setting("constant", choices=("constant",))  # the phases below set the lr
    levels: str = setting("binary", choices=LEVELS)
    freezing_fraction: float = setting(0.9, gt=0, le=1)  # FF₀ of the initial phase
    ff_increases: int = setting(3, ge=0)  # phases halving 1 − FF after the initial one
    initial_fraction: float = setting(0.33, ge=0, le=1)  # of the run at FF₀ (paper: 37 of 112 epochs)
    final_fraction: float = setting(0.27, ge=0, le=1)  # of the run at FF = 1, real parameters only (paper: 30 of 112)
    # of each later FF phase, then lr ×0.1 (paper: after 10 of 15 epochs)
    lr_drop_at: float = setting(2 / 3, ge=0, le=1)
    frozen_moments: str = setting("accumulate", choices=FROZEN_MOMENTS)  # Adam's moments of constrained weights

    def __post_init__(self):
        super().__post_init__()
        check(self.initial_fraction + self.final_fraction <= 1,
              "method.initial_fraction + method.final_fraction must be <= 1 "
              f"(got {self.initial_fraction + self.final_fraction:g})")

    def adapt_model(self, model):
        """Weights-only quantization: real activations, sign or nearest-ternary kernels, no scaling;
        every layer but the first and the last quantized (shortcut projections too)."""
        quantizer, args = ("sign_ste", {}) if self.levels == "binary" else ("ternary", {"threshold": TERNARY_THRESHOLD})
        real_roles = tuple(role for role in model.real_roles if role in ("first", "last"))
        return dataclasses.replace(model, binary_activations=False, kernel_quantizer=quantizer,
                                   kernel_quantizer_args=args, scaling="none", real_roles=real_roles)

    def freezing_fractions(self) -> list[float]:
        """FF of each phase: FF₀, then 1 − (1 − FF₀)/2^k for k = 1..ff_increases, then 1."""
        relaxed = 1.0 - self.freezing_fraction
        return [self.freezing_fraction, *(1.0 - relaxed / 2**k for k in range(1, self.ff_increases + 1)), 1.0]

    def phase_ends(self, epochs: int) -> list[int]:
        """Last epoch (exclusive) of each phase: cumulative fractions of the run, rounded."""
        middle = (1.0 - self.initial_fraction - self.final_fraction) / max(self.ff_increases, 1)
        fractions = [self.initial_fraction, *([middle] * self.ff_increases), self.final_fraction]
        if self.ff_increases == 0:
            fractions[-1] = 1.0 - self.initial_fraction
        return epoch_boundaries(fractions, epochs)

    def freezing_fraction_at(self, epoch: int, epochs: int) -> float:
        for end, ff in zip(self.phase_ends(epochs), self.freezing_fractions()):
            if epoch < end:
                return ff
        return 1.0

    def phase_lr_schedule(self, epochs: int, steps_per_epoch: int):
        """Initial phase: lr; each later FF phase: lr, then 0.1·lr after `lr_drop_at` of it; final
        phase: thirds at 1×, 0.1×, 0.01×."""
        starts = [0, *self.phase_ends(epochs)[:-1]]
        boundaries, values = [0], [self.lr]
        for begin, end in zip(starts[1:-1], starts[2:]):
            begin, end = begin * steps_per_epoch, end * steps_per_epoch
            boundaries += [begin, begin + round_half_up(self.lr_drop_at * (end - begin))]
            values += [self.lr, 0.1 * self.lr]
        begin, end = starts[-1] * steps_per_epoch, epochs * steps_per_epoch
        boundaries += [begin, begin + (end - begin) // 3, begin + 2 * (end - begin) // 3]
        values += [self.lr, 0.1 * self.lr, 0.01 * self.lr]
        return piecewise_constant(boundaries[1:], values)

    def build(self, ctx: MethodContext) -> Recipe:
        lr = self.phase_lr_schedule(ctx.epochs, ctx.steps_per_epoch)
        labels = flat(ctx.labels)

        def prepare(state):  # state holds the init_from run's variables, if any (bnnx.train.init_from)
            params = {p: rescale_filters(w, self.levels) if labels[p] == "binary" else w
                      for p, w in flat(state.params).items()}
            return state.replace(params=unflat(params))

        def on_epoch(state, epoch):
            ff = self.freezing_fraction_at(epoch, ctx.epochs)
            return sync_frozen(repartition(state, jax.random.fold_in(jax.random.key(ctx.seed), epoch), ff))

        def metrics(state):
            masks = [m for p, m in flat(state.quant).items() if p[-1] == "kernel_mask"]
            return {"freezing_fraction": float(sum(jnp.sum(m) for m in masks) / max(sum(m.size for m in masks), 1))}

        held = self.frozen_moments == "hold"
        binary = optax.inject_hyperparams(held_adam)(learning_rate=lr) if held else adam(lr)
        return Recipe(tx=by_label(ctx.labels, binary, adam(lr)), prepare=prepare, on_epoch=on_epoch,
                      metrics=metrics, init_state=per_weight_masks)


def held_adam(learning_rate):
    """Adam whose moments of frozen (constrained) weights stay as they are (`frozen_moments: hold`)."""
    return optax.chain(hold_frozen_moments(optax.scale_by_adam()), optax.scale_by_learning_rate(learning_rate))


def repartition(state, key, freezing_fraction: float):
    """A fresh random partition of every binary-bound kernel: mask 1 / trainable 0 where constrained."""
    params, trainable = flat(state.params), dict(flat(state.trainable))
    masks = {}
    for index, layer in enumerate(binary_layer_paths(state.quant)):
        mask = constrained_mask(jax.random.fold_in(key, index), params[layer + ("kernel",)].shape, freezing_fraction)
        masks[layer] = mask
        trainable[layer + ("kernel",)] = 1.0 - mask
    quant = set_quant(state.quant, "kernel_mask", lambda layer: masks[layer])
    return state.replace(quant=quant, trainable=unflat(trainable))


def per_weight_masks(state):
    """Kernel-shaped precision and trainable masks, so every state (fresh, template for resume) has one shape."""
    params, trainable = flat(state.params), dict(flat(state.trainable))
    for layer in binary_layer_paths(state.quant):
        trainable[layer + ("kernel",)] = jnp.ones_like(params[layer + ("kernel",)])
    quant = set_quant(state.quant, "kernel_mask", lambda layer: jnp.ones_like(params[layer + ("kernel",)]))
    return state.replace(quant=quant, trainable=unflat(trainable))
