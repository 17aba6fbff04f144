"""Pure, jitted train and eval steps shared by every method."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from bnnx.train.losses import cross_entropy
from bnnx.train.state import TrainState


def _batch_metrics(logits, labels, weights, loss):
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
    count = jnp.sum(weights)
    return {"loss": loss * count, "correct": correct, "count": count}


def make_train_step(normalize: Callable, augment: Callable | None, runtime: Callable):
    """`train_step(state, batch, loss) -> (state, sums)`; `loss` is a pytree (see losses.py)."""

    def train_step(state: TrainState, batch, loss):
        images, labels, weights = batch
        rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
        x = normalize(images)
        if augment is not None:
            x = augment(x, rng)
        quant = runtime(state.quant, state.step)

        def objective(params):
            variables = {"params": params, "batch_stats": state.batch_stats, "quant": quant}
            logits, mutated = state.apply_fn(variables, x, train=True, mutable=["batch_stats"],
                                             rngs={"dropout": rng})  # for models with dropout (external ones)
            return loss(logits, labels, weights, x), (logits, mutated)

        (value, (logits, mutated)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates, state.trainable)
        new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                                  batch_stats=mutated.get("batch_stats", state.batch_stats), opt_state=opt_state)
        return new_state, _batch_metrics(logits, labels, weights, value)

    return jax.jit(train_step, donate_argnums=(0,))


def top_k_correct(logits, labels, weights, k: int = 5):
    """Weighted count of examples whose label is among the k largest logits (k capped at the
    number of classes)."""
    _, top = jax.lax.top_k(logits, min(k, logits.shape[-1]))
    return jnp.sum(jnp.any(top == labels[:, None], axis=-1) * weights)


def make_eval_step(normalize: Callable, runtime: Callable):
    def eval_step(state: TrainState, batch):
        images, labels, weights = batch
        logits = state.apply_fn(state.variables(runtime(state.quant, state.step)), normalize(images), train=False)
        sums = _batch_metrics(logits, labels, weights, cross_entropy(logits, labels, weights))
        return {**sums, "correct5": top_k_correct(logits, labels, weights)}

    return jax.jit(eval_step)


def zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0.0, "count": 0.0}


def evaluation_sums(experiment, state, eval_step: Callable) -> dict:
    """`eval_step`'s sums over the experiment's whole test split, on the device."""
    sums = {**zero_sums(), "correct5": 0.0}
    for batch in experiment.dataset.test_batches(experiment.config.eval_batch_size):
        batch_sums = eval_step(state, batch)
        sums = {k: sums[k] + batch_sums[k] for k in sums}
    return sums


def test_metrics(sums: dict) -> dict[str, float]:
    count = max(float(sums["count"]), 1.0)
    return {"test_loss": float(sums["loss"]) / count, "test_accuracy": float(sums["correct"]) / count,
            "test_top5_accuracy": float(sums["correct5"]) / count}


def evaluate(experiment, state) -> dict[str, float]:
    """Test loss, top-1 and top-5 accuracy of `state` over the experiment's whole test split."""
    return test_metrics(jax.device_get(evaluation_sums(experiment, state, experiment.eval_step)))
