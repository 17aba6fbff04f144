"""Full precision: the model's FP twin trained with Adam (the baselines' "real-valued" row)."""

from __future__ import annotations

import dataclasses

from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam


@dataclasses.dataclass
class FP(MethodConfig):
    """Adam on every parameter of the full-precision twin (identity quantizers, same structure)."""

    def adapt_model(self, model):
        return dataclasses.replace(model, fp=True)

    def build(self, ctx: MethodContext) -> Recipe:
        return Recipe(tx=adam(self.lr_schedule(ctx.total_steps)))
