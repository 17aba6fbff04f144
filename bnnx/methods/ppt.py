"""Partial pre-training (Renda & Fromm, "Fast binarized neural network training with partial
pre-training"): train the full-precision twin for a fraction of the budget, convert it to the
binarized network (same parameters) and continue with an optimizer-level method.

    epochs [0, E_fp):   the FP twin's own graph (no quantizer evaluated: as cheap as method=fp),
                        precision masks 0 besides (so a mid-epoch resume is the same forward);
                        parameters move by Adam (method.lr, method.schedule over the E_fp epochs)
    epochs [E_fp, E):   precision masks 1 (kernels and inputs binarized); parameters move by the
                        inner method (method.inner, default ste, keys in method.inner_config),
                        which starts there: its `prepare` runs at the switch, its optimizer
                        state and learning-rate schedule start fresh over the E − E_fp epochs

with E_fp = ⌊fp_fraction · E + ½⌋, at most E − 1 (fp_fraction = 0 is the BNN from scratch).
With restart_optimizer=false the inner method's optimizer runs over the whole budget instead,
its state carried across the switch. The claim measured is speed: see bnnx/sweeps/timing.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnnx.config.schema import setting
from bnnx.layers import flat
from bnnx.methods.base import (
    MethodConfig,
    MethodContext,
    Recipe,
    fill_masks,
    make_inner,
    round_half_up,
    scheduled_values,
)


def binary_fraction(quant) -> float:
    """Mean over binary-bound layers of the fraction of kernel weights the forward quantizes."""
    masks = [np.mean(np.asarray(m)) for p, m in flat(quant).items() if p[-1] == "kernel_mask"]
    return float(np.mean(masks)) if masks else 0.0


class PhasedState(NamedTuple):
    count: jax.Array
    first: Any
    second: Any


def phased(first: optax.GradientTransformation, second: optax.GradientTransformation,
           boundary: int, only: int | None = None) -> optax.GradientTransformation:
    """u_t = first(g_t) for t < boundary, second(g_t) after.

    `second` is initialised with the parameters at the start and untouched until the boundary,
    so its moments and schedule count start fresh there (PPT's optimizer restart). One compiled
    graph: the phase is a `lax.cond` on the count in the state; `only=0` or `1` fixes the phase
    instead (the same state, one branch compiled), for a loop that knows the phase per epoch.

    Args:
        first, second: the transformations before and from `boundary` on.
        boundary: the step count at which `second` takes over.
        only: None (both phases, switched by the count), 0 or 1 (that phase only).

    Returns:
        A GradientTransformation with a PhasedState (count, first's state, second's state).
    """

    def init(params):
        return PhasedState(jnp.zeros([], jnp.int32), first.init(params), second.init(params))

    def update(updates, state, params=None):
        def run_first(_):
            new, inner = first.update(updates, state.first, params)
            return new, PhasedState(state.count + 1, inner, state.second)

        def run_second(_):
            new, inner = second.update(updates, state.second, params)
            return new, PhasedState(state.count + 1, state.first, inner)

        if only is not None:
            return (run_first, run_second)[only](None)
        return jax.lax.cond(state.count < boundary, run_first, run_second, None)

    return optax.GradientTransformation(init, update)


@dataclasses.dataclass
class PPT(MethodConfig):
    """`lr`/`schedule` are the FP phase's Adam; the binary phase is `inner` with `inner_config`."""

    fp_fraction: float = setting(0.25, ge=0, lt=1)
    restart_optimizer: bool = True
    inner: str = "ste"
    inner_config: dict | None = None  # the inner method's keys, e.g. {lr: 0.01}

    def __post_init__(self):
        super().__post_init__()
        self.inner_method = make_inner(self.inner, self.inner_config)

    def adapt_model(self, model):
        return self.inner_method.adapt_model(model)

    def fp_epochs(self, epochs: int) -> int:
        return min(round_half_up(self.fp_fraction * epochs), epochs - 1)

    def build(self, ctx: MethodContext) -> Recipe:
        from bnnx.methods.fp import FP

        fp_epochs = self.fp_epochs(ctx.epochs)
        if fp_epochs == 0:  # the BNN from scratch: exactly the inner method
            inner = self.inner_method.build(ctx)
            return dataclasses.replace(inner, metrics=_with_binary(inner.metrics))
        fp_apply = ctx.services.full_precision_apply() if ctx.services is not None else None
        if not self.restart_optimizer:
            return _switching_recipe(self.inner_method.build(ctx), _Phase(fp_epochs, 0, None), fp_apply)
        inner = self.inner_method.build(dataclasses.replace(ctx, epochs=ctx.epochs - fp_epochs))
        fp_tx = FP(lr=self.lr, schedule=self.schedule).build(dataclasses.replace(ctx, epochs=fp_epochs)).tx
        phase = _Phase(fp_epochs, fp_epochs * ctx.steps_per_epoch, inner.tx)
        fixed = [phased(fp_tx, inner.tx, phase.switch_step, only) for only in (0, 1)]
        recipe = _switching_recipe(dataclasses.replace(inner, tx=phased(fp_tx, inner.tx, phase.switch_step)), phase,
                                   fp_apply)
        return dataclasses.replace(recipe, optimizer=lambda epoch: fixed[int(epoch >= fp_epochs)])


def _with_binary(metrics):
    return lambda state: {**metrics(state), "binary": binary_fraction(state.quant)}


class _Phase(NamedTuple):
    """Where the binary phase starts, and how the inner method sees the state."""

    fp_epochs: int
    switch_step: int  # 0 when the inner method keeps one optimizer over the whole budget
    inner_tx: optax.GradientTransformation | None  # set when the optimizer is phased

    @property
    def epoch_offset(self) -> int:
        return self.fp_epochs if self.inner_tx is not None else 0

    def as_inner(self, state):
        """The inner method's view: its own optimizer state and tx."""
        if self.inner_tx is None:
            return state
        return state.replace(opt_state=state.opt_state.second, tx=self.inner_tx)

    def from_inner(self, view, state):
        if self.inner_tx is None:
            return view
        return view.replace(opt_state=state.opt_state._replace(second=view.opt_state), tx=state.tx)

    def active_opt_state(self, state):
        if self.inner_tx is None or int(state.opt_state.count) > self.switch_step:
            return self.as_inner(state).opt_state
        return state.opt_state.first


def _switching_recipe(inner: Recipe, phase: _Phase, fp_apply=None) -> Recipe:
    """Masks 0 before the switch; at the switch masks 1 and the inner method's `prepare` (its
    fresh start: Bop signs the kernels, RPR rescales them); after it the inner method's hooks,
    with epochs and steps counted from the switch when its optimizer restarts there. Applying
    `prepare` in the epoch hook keeps the hook a pure function of (state, epoch) for resume."""

    def inside(hook, state, *args):
        return phase.from_inner(hook(phase.as_inner(state), *args), state)

    def on_epoch(state, epoch):
        if epoch < phase.fp_epochs:
            return state.replace(quant=fill_masks(state.quant, 0.0))
        if epoch == phase.fp_epochs:
            state = inside(inner.prepare, state.replace(quant=fill_masks(state.quant, 1.0)))
        return inside(inner.on_epoch, state, epoch - phase.epoch_offset)

    def runtime(quant, step):
        return inner.runtime(quant, jnp.maximum(step - phase.switch_step, 0))

    def metrics(state):
        return {**inner.metrics(phase.as_inner(state)), **scheduled_values(phase.active_opt_state(state)),
                "binary": binary_fraction(state.quant)}

    def forward(epoch):
        return fp_apply if epoch < phase.fp_epochs else inner.forward(epoch - phase.epoch_offset)

    return Recipe(tx=inner.tx, init_state=lambda state: inside(inner.init_state, state),
                  prepare=lambda state: state.replace(quant=fill_masks(state.quant, 0.0)),
                  on_epoch=on_epoch, runtime=runtime, metrics=metrics, forward=forward)
