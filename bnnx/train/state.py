"""The train state: one pytree holding everything a step reads or changes."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):  # struct.dataclass with a typed `replace`
    """Params, BN statistics, optimizer state, step and rng, plus the method's arrays:

    - `quant`: per binary-bound layer, precision masks and runtime quantizer values;
    - `trainable`: like `params`, 1 where an update applies and 0 where the value is frozen
      (scalar per tensor, or shaped like it for per-weight freezing).
    Phase changes only change these arrays, so they never recompile the step.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    quant: Any
    trainable: Any
    opt_state: Any
    rng: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    def variables(self, quant=None) -> dict:
        return {"params": self.params, "batch_stats": self.batch_stats,
                "quant": self.quant if quant is None else quant}


def all_trainable(params):
    return jax.tree.map(lambda _: jnp.ones((), jnp.float32), params)


@partial(jax.jit, static_argnums=0)
def _init(model, example: jax.Array, key: jax.Array) -> dict:
    return model.init(key, example, train=False)


def init_variables(model, example: jax.Array, seed: int) -> dict:
    """The model's variables for `seed`; compiled once per model and input shape in a process (a
    flax module hashes by its fields), so the seeds of a sweep share one compile."""
    return _init(model, example, jax.random.key(seed))


def create_state(model, variables: dict, tx: optax.GradientTransformation, seed: int) -> TrainState:
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
        quant=variables.get("quant", {}), trainable=all_trainable(params), opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(seed + 1)), apply_fn=model.apply, tx=tx)
