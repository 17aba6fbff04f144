"""Mirror descent for binary networks, tanh mirror map (BMD; Ajanthan, Gupta, Torr, Hartley and
Dokania, "Mirror Descent View for Neural Network Quantization", AISTATS 2021, arXiv 1910.08237).

    w_b = tanh(β_t·w̃),   w̃ ← w̃ − η_t·Adam(∇ℓ(w_b))

The forward pass of a binary-bound layer sees tanh(β_t·w̃) while training (the model's
`tanh_mirror` quantizer, whose backward passes the gradient straight to the dual variable
w̃) and sign(w̃) at evaluation and export, so the final model is exactly binary. β_t is a
runtime value written into the `quant` collection inside the jitted step. It anneals towards
the hard sign in one of two parametrizations:

- by the run (default, `beta_end` set): β_t = β₀·(β_end/β₀)^(t/T), T the run's steps, so β
  reaches β_end at the end of any budget. The default β_end = 2·10⁴ is where the official code's
  CIFAR recipe ends (1.02^(10⁵/200) ≈ 1.99·10⁴ after its 10⁵ iterations);
- by steps (the paper's and the code's form, `beta_end: null`): ρ = `beta_growth` every
  k = `beta_every` steps (kartikgupta-at-anu/md-bnn: ρ = 1.02, k = 200), so the β reached
  depends on the run length. The official loop multiplies β after every iteration t with
  t mod k = 0, the first right after iteration 0, so iteration t uses β₀·ρ^⌈t / k⌉
  (= ρ^(1+⌊(t−1)/k⌋) for t ≥ 1; `beta_steps: md_bnn`, the default); `beta_steps: floor` is bnnx's
  earlier β₀·ρ^⌊t / k⌋.

The learning rate: bnnx's `schedule` (cosine by default), or `schedule: md_bnn`, the official
code's StepLR stepped the same way: η_t = η·γ^⌈t / K⌉ with γ = `lr_decay` (0.3) every
K = `lr_every` (30,000) iterations, so the first decay follows iteration 0.

Differences from md-bnn's MD-tanh-S (train_scripts/cifar10resnet18.sh, `--tanh --full-ste`) that
remain: md-bnn maps every parameter through tanh (first and last layers, BN and biases too) and
keeps activations real; bnnx maps only binary-bound kernels and binarizes the model's activations
as configured. Initialization (md-bnn: Xavier-uniform kernels, N(0, 0.1²) others), β capped at
10³⁵ (unreached in 10⁵ iterations) and md-bnn's sign(0) = 0 at evaluation are not reproduced.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from bnnx.config.schema import setting
from bnnx.errors import check
from bnnx.layers import set_quant
from bnnx.methods.base import SCHEDULES, MethodConfig, MethodContext, Recipe, adam, by_label, lr_schedule


def md_bnn_steps(step, every: int):
    """⌈t / k⌉: how many times md-bnn's loop has multiplied (β or lr) before iteration t, since it
    multiplies after every iteration with t mod k = 0."""
    return jnp.floor_divide(step + every - 1, every)


@dataclasses.dataclass
class BMD(MethodConfig):
    schedule: str = setting("cosine", choices=(*SCHEDULES, "md_bnn"))
    lr_decay: float = setting(0.3, gt=0, le=1)  # schedule md_bnn: lr ← γ·lr ...
    lr_every: int = setting(30000, ge=1)  # ... every this many steps, the first after step 0
    beta0: float = setting(1.0, gt=0)
    beta_end: float | None = setting(2e4, gt=0)  # β at the end of the run; null: the step form below
    beta_growth: float = setting(1.02, ge=1)  # step form: β ← ρ·β ...
    beta_every: int = setting(200, ge=1)  # ... every this many steps
    beta_steps: str = setting("md_bnn", choices=("md_bnn", "floor"))  # step form: ρ^⌈t/k⌉ (md-bnn) or ρ^⌊t/k⌋

    def __post_init__(self):
        super().__post_init__()
        check(self.beta_end is None or self.beta_end >= self.beta0,
              f"method.beta_end must be >= method.beta0 or null (got {self.beta_end})")

    def adapt_model(self, model):
        return dataclasses.replace(model, kernel_quantizer="tanh_mirror", kernel_quantizer_args={})

    def beta_at(self, step, total_steps: int):
        """β_t (jit-friendly): geometric from β₀ to β_end over `total_steps`, or β₀·ρ^⌈t/k⌉ (⌊t/k⌋)."""
        if self.beta_end is None:
            count = md_bnn_steps(step, self.beta_every) if self.beta_steps == "md_bnn" else \
                jnp.floor_divide(step, self.beta_every)
            return self.beta0 * jnp.power(self.beta_growth, count)
        progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(total_steps, 1), 0.0, 1.0)
        return self.beta0 * jnp.power(self.beta_end / self.beta0, progress)

    def lr_schedule(self, total_steps: int):
        if self.schedule != "md_bnn":
            return lr_schedule(self.schedule, self.lr, total_steps)
        return lambda step: self.lr * jnp.power(self.lr_decay, md_bnn_steps(step, self.lr_every))

    def build(self, ctx: MethodContext) -> Recipe:
        schedule = self.lr_schedule(ctx.total_steps)

        def runtime(quant, step):
            return set_quant(quant, "beta", self.beta_at(step, ctx.total_steps))

        def metrics(state):
            return {"beta": float(self.beta_at(state.step, ctx.total_steps))}

        return Recipe(tx=by_label(ctx.labels, adam(schedule), adam(schedule)), runtime=runtime, metrics=metrics)
