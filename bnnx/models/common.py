"""Pieces shared by the model zoo."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax.numpy as jnp

from bnnx.errors import unknown_choice


class PReLU(nn.Module):
    """Per-channel PReLU (Bi-Real/ReActNet use it between binary blocks)."""

    @nn.compact
    def __call__(self, x):
        slope = self.param("slope", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x >= 0, x, slope * x)


def hardtanh(x):
    return jnp.clip(x, -1.0, 1.0)


ACTIVATIONS = {"hardtanh": lambda: hardtanh, "relu": lambda: nn.relu, "identity": lambda: (lambda x: x), "prelu": PReLU}


def activation(name: str):
    """A fresh activation callable (PReLU is a module, so each call site gets its own)."""
    if name not in ACTIVATIONS:
        raise unknown_choice("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]()


def batch_norm(train: bool, name: str | None = None, momentum: float = 0.9, scale_init=nn.initializers.ones):
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, name=name,
                        scale_init=scale_init)


kaiming_fan_out = partial(nn.initializers.variance_scaling, 2.0, "fan_out", "normal")()
