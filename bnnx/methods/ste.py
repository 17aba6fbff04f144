"""Straight-through estimator with latent-weight clipping (Hubara et al. 2016).

The STE baseline of "Training BNNs the easy way" (Paren & Poudel):

    w_b = sign(w̃),   w̃ ← Π_[−c, c](w̃ − η·Adam(∇ℓ(w_b)))

The sign's backward is g·1{|w̃| ≤ 1} (the quantizer); Π keeps latent weights in [−c, c] (c = 1).
"""

from __future__ import annotations

import dataclasses

import optax

from bnnx.config.schema import setting
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label, project_box


@dataclasses.dataclass
class STE(MethodConfig):
    latent_clip: float = setting(1.0, gt=0)

    def build(self, ctx: MethodContext) -> Recipe:
        schedule = self.lr_schedule(ctx.total_steps)
        binary = optax.chain(adam(schedule), project_box(-self.latent_clip, self.latent_clip))
        return Recipe(tx=by_label(ctx.labels, binary, adam(schedule)))
