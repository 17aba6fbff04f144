"""Mirror descent for binary networks, tanh mirror map (BMD; Ajanthan et al., AISTATS 2021).

As summarised in "Training BNNs the easy way" (Paren & Poudel):

    w_b = tanh(β_t·w̃),   w̃ ← w̃ − η_t·Adam(∇ℓ(w_b)),   β_t = β₀·ρ^⌊t / k⌋

The forward pass of a binary-bound layer sees tanh(β_t·w̃) while training (the model's
`tanh_mirror` quantizer, whose backward passes the gradient straight to the dual variable
w̃) and sign(w̃) at evaluation and export, so the final model is exactly binary. β_t is a
runtime value written into the `quant` collection inside the jitted step; it anneals
towards the hard sign (ρ = `beta_growth` every k = `beta_every` steps).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from bnnx.layers import set_quant
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label
from bnnx.schema import setting


@dataclasses.dataclass
class BMD(MethodConfig):
    beta0: float = setting(1.0, gt=0)
    beta_growth: float = setting(1.02, ge=1)
    beta_every: int = setting(200, ge=1)  # steps between two β ← ρ·β

    def adapt_model(self, model):
        return dataclasses.replace(model, kernel_quantizer="tanh_mirror", kernel_quantizer_args={})

    def beta_at(self, step):
        """β_t = β₀·ρ^⌊t / k⌋ (jit-friendly)."""
        return self.beta0 * jnp.power(self.beta_growth, jnp.floor_divide(step, self.beta_every))

    def build(self, ctx: MethodContext) -> Recipe:
        schedule = self.lr_schedule(ctx.total_steps)

        def runtime(quant, step):
            return set_quant(quant, "beta", self.beta_at(step))

        def metrics(state):
            return {"beta": float(self.beta_at(state.step))}

        return Recipe(tx=by_label(ctx.labels, adam(schedule), adam(schedule)), runtime=runtime, metrics=metrics)
