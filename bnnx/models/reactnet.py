"""Bi-Real Net-18 (Liu et al. 2018) and ReActNet-A (Liu et al. 2020), after the authors' code.

**Bi-Real Net**: a real-valued shortcut around every binary 3×3 conv:
    out = BN(conv3×3(sign(x))) + shortcut(x),
16 such blocks in 4 stages of 4 (64/128/256/512 channels); where a stage downsamples, the
shortcut is avg-pool 2×2/2 → conv1×1 → BN (role "shortcut"). Stem conv7×7/2 → BN → max-pool
(no activation: the sign is the nonlinearity; `activation` after each block defaults to identity).

**ReActNet-A**: MobileNetV1's layout (widths 32-64-128-128-256-256-512×6-1024×2) with each
depthwise-separable pair replaced by two binary blocks, a full 3×3 conv and a 1×1 conv, each
with a real shortcut. RSign is a learnable per-channel shift before the binary conv (the sign
itself is the conv's input quantizer); RPReLU is shift → PReLU → shift. Where the width doubles,
the 1×1 conv is two convs whose outputs are concatenated (each adds the block's input).
Stem conv3×3/2 → BN.

The shifts are parameters whether or not the inputs are binarized, so the full-precision twin
has the same parameter tree.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from bnnx.config.schema import setting
from bnnx.layers import QuantPolicy
from bnnx.models.common import ACTIVATIONS, activation, batch_norm
from bnnx.models.resnet import classifier, conv, scale_width


def avg_pool(x):
    return nn.avg_pool(x, (2, 2), strides=(2, 2))


class LearnableShift(nn.Module):
    """x + b with a per-channel b, zero at init (ReActNet's LearnableBias)."""

    @nn.compact
    def __call__(self, x):
        return x + self.param("shift", nn.initializers.zeros, (x.shape[-1],))


class RPReLU(nn.Module):
    """ReActNet's generalized activation: shift → activation (PReLU by default) → shift."""

    activation: str = "prelu"

    @nn.compact
    def __call__(self, x):
        return LearnableShift()(activation(self.activation)(LearnableShift()(x)))


class BiRealBlock(nn.Module):
    """out = act(BN(conv3×3(sign(x))) + shortcut(x))."""

    features: int
    policy: QuantPolicy
    stride: int = 1
    activation: str = "identity"

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = batch_norm(train)(conv(self.features, 3, self.policy, stride=self.stride)(x, train))
        if self.stride != 1 or x.shape[-1] != self.features:
            x = avg_pool(x) if self.stride != 1 else x
            x = batch_norm(train)(conv(self.features, 1, self.policy, role="shortcut")(x, train))
        return activation(self.activation)(y + x)


class BiRealNet18(nn.Module):
    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    width_multiplier: float = setting(1.0, gt=0)
    cifar_stem: bool = False
    activation: str = setting("identity", choices=ACTIVATIONS)
    stage_sizes = (4, 4, 4, 4)  # architecture constant (a class attribute, not an option), as the ResNets'

    @nn.compact
    def __call__(self, x, train: bool = False):
        widths = [scale_width(w, self.width_multiplier) for w in (64, 128, 256, 512)]
        x = conv(widths[0], 3 if self.cifar_stem else 7, self.policy, role="first",
                 stride=1 if self.cifar_stem else 2)(x, train)
        x = batch_norm(train)(x)
        if not self.cifar_stem:
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pyright: ignore[reportArgumentType] (flax takes pairs too)
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, widths)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = BiRealBlock(width, self.policy, stride, self.activation)(x, train)
        return classifier(x, self.num_classes, self.policy, train)


class ReActBlock(nn.Module):
    """One ReActNet-A block: RSign → conv3×3(stride) → BN (+ x, avg-pooled if strided) → RPReLU,
    then RSign → conv1×1 (two, concatenated, when the width doubles) → BN (+ previous) → RPReLU."""

    features: int
    policy: QuantPolicy
    stride: int = 1
    activation: str = "prelu"

    @nn.compact
    def __call__(self, x, train: bool = False):
        width = x.shape[-1]
        y = conv(width, 3, self.policy, stride=self.stride)(LearnableShift()(x), train)
        y = batch_norm(train)(y) + (avg_pool(x) if self.stride != 1 else x)
        y = RPReLU(self.activation)(y)
        shifted = LearnableShift()(y)
        halves = [batch_norm(train)(conv(width, 1, self.policy)(shifted, train)) + y
                  for _ in range(self.features // width)]
        return RPReLU(self.activation)(jnp.concatenate(halves, axis=-1))


def reactnet_widths(base: int) -> list[int]:
    """MobileNetV1's output widths in units of the stem width (32 at full size)."""
    return [base * k for k in (1, 2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32)]


class ReActNetA(nn.Module):
    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    width_multiplier: float = setting(1.0, gt=0)
    cifar_stem: bool = False
    activation: str = setting("prelu", choices=ACTIVATIONS)

    @nn.compact
    def __call__(self, x, train: bool = False):
        widths = reactnet_widths(scale_width(32, self.width_multiplier))
        x = conv(widths[0], 3, self.policy, role="first", stride=1 if self.cifar_stem else 2)(x, train)
        x = batch_norm(train)(x)
        for previous, width in zip(widths, widths[1:]):
            # the width doubles with a stride-2 block, except at the first block (32 → 64)
            stride = 2 if width != previous and previous != widths[0] else 1
            x = ReActBlock(width, self.policy, stride, self.activation)(x, train)
        return classifier(x, self.num_classes, self.policy, train)
