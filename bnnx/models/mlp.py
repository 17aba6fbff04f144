"""Multi-layer perceptron (BinaryNet's MNIST net): Dense → BN → activation per hidden layer."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from bnnx.config.schema import setting
from bnnx.layers import QuantDense, QuantPolicy
from bnnx.models.common import ACTIVATIONS, activation, batch_norm


class MLP(nn.Module):
    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    hidden: Sequence[int] = setting((256, 256), ge=1)
    activation: str = setting("hardtanh", choices=ACTIVATIONS)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = QuantDense(width, policy=self.policy, role="first" if i == 0 else "hidden")(x, train)
            x = batch_norm(train)(x)
            x = activation(self.activation)(x)
        x = QuantDense(self.num_classes, policy=self.policy, role="last")(x, train)
        return batch_norm(train)(x)
