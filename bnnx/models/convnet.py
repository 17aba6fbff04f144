"""A tiny binary convnet for CPU tests and the sign-stability analysis.

conv3×3(first, real) → BN → act → [conv3×3 → BN → act → max-pool 2×2] per hidden width →
dense(last) → BN, as in BinaryNet's layer order (Hubara et al. 2016). With the default widths
(16, 32, 32) it has two binary 3×3 convs and runs on 8×8×1 digits (→ 2×2) and 28×28×1
Fashion-MNIST (→ 7×7).
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from bnnx.config.schema import setting
from bnnx.layers import QuantConv, QuantDense, QuantPolicy
from bnnx.models.common import ACTIVATIONS, activation, batch_norm


class ConvNet(nn.Module):
    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    widths: Sequence[int] = setting((16, 32, 32), ge=1)
    activation: str = setting("hardtanh", choices=ACTIVATIONS)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, width in enumerate(self.widths):
            x = QuantConv(width, policy=self.policy, role="first" if i == 0 else "hidden")(x, train)
            x = batch_norm(train)(x)
            x = activation(self.activation)(x)
            if i > 0:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = QuantDense(self.num_classes, policy=self.policy, role="last")(x, train)
        return batch_norm(train)(x)
