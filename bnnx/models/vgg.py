"""BinaryNet's CIFAR-10 net, the "VGG-small" of the BNN literature (Hubara et al. 2016, Sec. 2.5).

    2×128C3 – MP2 – 2×256C3 – MP2 – 2×512C3 – MP2 – 2×1024FC – num_classes

Each conv/dense is followed by BatchNorm and the activation, with the max-pool between the
conv and its BN as in BinaryNet; the classifier ends in BN. `width_multiplier` scales every
hidden width (tests use small nets).
"""

from __future__ import annotations

import flax.linen as nn

from bnnx.config.schema import setting
from bnnx.layers import QuantConv, QuantDense, QuantPolicy
from bnnx.models.common import ACTIVATIONS, activation, batch_norm
from bnnx.models.resnet import scale_width

CONV_WIDTHS = (128, 128, 256, 256, 512, 512)
DENSE_WIDTHS = (1024, 1024)


class BinaryNet(nn.Module):
    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    width_multiplier: float = setting(1.0, gt=0)
    activation: str = setting("hardtanh", choices=ACTIVATIONS)

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i, width in enumerate(CONV_WIDTHS):
            role = "first" if i == 0 else "hidden"
            x = QuantConv(scale_width(width, self.width_multiplier), policy=self.policy, role=role)(x, train)
            if i % 2 == 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = activation(self.activation)(batch_norm(train)(x))
        x = x.reshape(x.shape[0], -1)
        for width in DENSE_WIDTHS:
            x = QuantDense(scale_width(width, self.width_multiplier), policy=self.policy)(x, train)
            x = activation(self.activation)(batch_norm(train)(x))
        x = QuantDense(self.num_classes, policy=self.policy, role="last")(x, train)
        return batch_norm(train)(x)
