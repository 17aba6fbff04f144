"""GoogLeNet (Szegedy et al. 2015) in torchvision's layout, without the auxiliary heads.

The RPR paper's GoogLeNet baseline is torchvision's (v0.4.0). As there, every conv is a
bias-free conv → BN → activation ("BasicConv2d") and the "5×5" branch uses a 3×3 kernel;
the classifier is a biased dense layer after global average pooling. Dropout before the
classifier is left out (the train step carries no dropout rng). Max-pools use SAME padding,
which gives ceil_mode's sizes on 224×224 inputs. `width_multiplier` scales every width.
`transform_input` maps ImageNet-normalized inputs to the (x − 0.5)/0.5 normalization the
pretrained weights were trained on, as torchvision's option of that name (on for them).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from bnnx.config.schema import setting
from bnnx.layers import QuantPolicy
from bnnx.models.common import ACTIVATIONS, activation, batch_norm
from bnnx.models.resnet import classifier, conv, scale_width

# name: (1×1, 3×3 reduce, 3×3, "5×5" reduce, "5×5", pool projection), torchvision's widths
INCEPTIONS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
POOL_AFTER = {"inception3b": 3, "inception4e": 2}  # max-pool (window) before the next stage
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def transform_input(x):
    """torchvision's GoogLeNet._transform_input: x·(std/0.5) + (mean − 0.5)/0.5 per channel."""
    std, mean = jnp.asarray(IMAGENET_STD, x.dtype), jnp.asarray(IMAGENET_MEAN, x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


def max_pool(x, window: int, stride: int):
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding="SAME")


class ConvBN(nn.Module):
    """torchvision's BasicConv2d: bias-free conv → BN → activation."""

    features: int
    size: int
    policy: QuantPolicy
    activation: str = "relu"
    role: str = "hidden"
    stride: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = conv(self.features, self.size, self.policy, role=self.role, stride=self.stride)(x, train)
        return activation(self.activation)(batch_norm(train)(x))


class Inception(nn.Module):
    """Four branches concatenated: 1×1; 1×1 → 3×3; 1×1 → 3×3; max-pool 3×3/1 → 1×1."""

    widths: tuple[int, ...]
    policy: QuantPolicy
    activation: str = "relu"

    @nn.compact
    def __call__(self, x, train: bool = False):
        ones, reduce3, threes, reduce5, fives, projection = self.widths
        unit = lambda features, size: ConvBN(features, size, self.policy, self.activation)  # noqa: E731
        branches = [
            unit(ones, 1)(x, train),
            unit(threes, 3)(unit(reduce3, 1)(x, train), train),
            unit(fives, 3)(unit(reduce5, 1)(x, train), train),
            unit(projection, 1)(max_pool(x, 3, 1), train),
        ]
        return jnp.concatenate(branches, axis=-1)


class GoogLeNet(nn.Module):
    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    width_multiplier: float = setting(1.0, gt=0)
    activation: str = setting("relu", choices=ACTIVATIONS)
    transform_input: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.transform_input:
            x = transform_input(x)
        width = lambda channels: scale_width(channels, self.width_multiplier)  # noqa: E731
        x = ConvBN(width(64), 7, self.policy, self.activation, role="first", stride=2, name="conv1")(x, train)
        x = max_pool(x, 3, 2)
        x = ConvBN(width(64), 1, self.policy, self.activation, name="conv2")(x, train)
        x = ConvBN(width(192), 3, self.policy, self.activation, name="conv3")(x, train)
        x = max_pool(x, 3, 2)
        for name, widths in INCEPTIONS.items():
            x = Inception(tuple(width(c) for c in widths), self.policy, self.activation, name=name)(x, train)
            if name in POOL_AFTER:
                x = max_pool(x, POOL_AFTER[name], 2)
        return classifier(x, self.num_classes, self.policy, train)
