"""Straight-through estimator with latent-weight clipping (Hubara et al. 2016).

The STE baseline of "Training BNNs the easy way" (Paren & Poudel):

    w_b = sign(w̃),   w̃ ← Π_[−c, c](w̃ − η·Adam(∇ℓ(w_b)))

The sign's backward on the kernel is a stated choice, `weight_gate`:

- true (bnnx's default): g·1{|w̃| ≤ 1}, the model's `sign_ste` kernel quantizer as configured;
- false (the poster's and Hubara et al.'s rule, w̃ moved by ∇ℓ(w_b) itself): g unchanged.

They differ only where |w̃| > 1, i.e. before the first projection Π onto [−c, c] (c = 1).
"""

from __future__ import annotations

import dataclasses

import optax

from bnnx.config.schema import setting
from bnnx.errors import check
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label, project_box


@dataclasses.dataclass
class STE(MethodConfig):
    latent_clip: float = setting(1.0, gt=0)
    weight_gate: bool = True  # kernel gradient gated by 1{|w̃| ≤ 1}; false: passed unchanged (Hubara et al.)

    def adapt_model(self, model):
        if self.weight_gate:
            return model
        check(model.kernel_quantizer == "sign_ste",
              f"method.weight_gate=false needs model.kernel_quantizer=sign_ste (got {model.kernel_quantizer})")
        return dataclasses.replace(model, kernel_quantizer_args={**(model.kernel_quantizer_args or {}), "clip": None})

    def build(self, ctx: MethodContext) -> Recipe:
        schedule = self.lr_schedule(ctx.total_steps)
        binary = optax.chain(adam(schedule), project_box(-self.latent_clip, self.latent_clip))
        return Recipe(tx=by_label(ctx.labels, binary, adam(schedule)))
