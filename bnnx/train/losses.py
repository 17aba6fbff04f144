"""Training losses. A loss is a pytree (its arrays, e.g. a teacher's variables, travel as jit
arguments rather than constants baked into the compiled step)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import struct


def cross_entropy(logits, labels, weights):
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


@struct.dataclass
class CrossEntropy:
    def __call__(self, logits, labels, weights, images):
        return cross_entropy(logits, labels, weights)


def distillation_loss(student_logits, teacher_logits, labels, weights, alpha, temperature):
    """α·CE(student, y) + (1 − α)·T²·KL(softmax(teacher/T) ‖ softmax(student/T)) (Hinton et al. 2015)."""
    ce = cross_entropy(student_logits, labels, weights)
    teacher_log_probs = jax.nn.log_softmax(teacher_logits / temperature)
    student_log_probs = jax.nn.log_softmax(student_logits / temperature)
    kl = jnp.sum(jnp.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    kl = jnp.sum(kl * weights) / jnp.maximum(jnp.sum(weights), 1.0)
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


@struct.dataclass
class Distillation:
    """KD against a frozen teacher evaluated inside the jitted step."""

    teacher_variables: Any
    alpha: float
    temperature: float
    teacher_apply: Callable = struct.field(pytree_node=False)

    def __call__(self, logits, labels, weights, images):
        teacher_logits = jax.lax.stop_gradient(self.teacher_apply(self.teacher_variables, images, train=False))
        return distillation_loss(logits, teacher_logits, labels, weights, self.alpha, self.temperature)
