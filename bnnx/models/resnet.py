"""ResNets (He et al. 2016) with quantized convolutions, laid out as torchvision's.

- `ResNet18`/`ResNet50`: ImageNet nets, basic/bottleneck blocks, type-B shortcuts (a 1×1
  projection + BN where the shape changes, role "shortcut"), the stride on the 3×3 conv
  (torchvision ≥ 0.4, the RPR paper's baselines). `cifar_stem` swaps the 7×7/2 stem and its
  max-pool for a 3×3/1 stem, for 32×32 inputs.
- `ResNet20`: the CIFAR net, 3 stages of 3 basic blocks with 16/32/64 channels, 3×3 stem;
  shortcuts are type B as above (He et al. used zero-padding, type A, on CIFAR).

Conv → BN → activation everywhere; the classifier is a biased dense layer after global
average pooling. The architecture lives in class constants (`stage_sizes`, `stage_widths`,
`block_cls`), so each registered name is a real class whose signature lists only its options.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from bnnx.config.schema import setting
from bnnx.layers import QuantConv, QuantDense, QuantPolicy
from bnnx.models.common import ACTIVATIONS, activation, batch_norm, kaiming_fan_out


def scale_width(channels: int, multiplier: float) -> int:
    """`channels` × `multiplier`, rounded, at least 1 (the width multiplier of small test nets)."""
    return max(1, int(round(channels * multiplier)))


def conv(features: int, size: int, policy: QuantPolicy, role: str = "hidden", stride: int = 1,
         name: str | None = None) -> QuantConv:
    """A bias-free k×k conv padded by k // 2 on each side, as torchvision's (SAME is asymmetric at stride 2)."""
    pad = size // 2
    return QuantConv(features, policy=policy, role=role, kernel_size=(size, size), strides=(stride, stride),
                     padding=(pad, pad), kernel_init=kaiming_fan_out, name=name)


def stem(x, width: int, policy: QuantPolicy, cifar: bool, act: str, train: bool):
    """ImageNet stem conv7×7/2 → BN → act → max-pool 3×3/2, or CIFAR stem conv3×3/1 → BN → act."""
    x = conv(width, 3 if cifar else 7, policy, role="first", stride=1 if cifar else 2)(x, train)
    x = activation(act)(batch_norm(train)(x))
    if not cifar:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # pyright: ignore[reportArgumentType] (flax takes pairs too)
    return x


def classifier(x, num_classes: int, policy: QuantPolicy, train: bool):
    """Global average pooling → biased dense layer (role "last")."""
    x = jnp.mean(x, axis=(1, 2))
    return QuantDense(num_classes, policy=policy, role="last", use_bias=True)(x, train)


class BasicBlock(nn.Module):
    """conv3×3(stride) → BN → act → conv3×3 → BN, plus the shortcut, → act."""

    features: int
    policy: QuantPolicy
    stride: int = 1
    activation: str = "relu"
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = conv(self.features, 3, self.policy, stride=self.stride)(x, train)
        y = activation(self.activation)(batch_norm(train)(y))
        y = conv(self.features, 3, self.policy)(y, train)
        y = batch_norm(train)(y)
        return activation(self.activation)(y + shortcut(x, self.features, self.stride, self.policy, train))


class Bottleneck(nn.Module):
    """conv1×1 → BN → act → conv3×3(stride) → BN → act → conv1×1(4×) → BN, plus the shortcut, → act."""

    features: int
    policy: QuantPolicy
    stride: int = 1
    activation: str = "relu"
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = conv(self.features, 1, self.policy)(x, train)
        y = activation(self.activation)(batch_norm(train)(y))
        y = conv(self.features, 3, self.policy, stride=self.stride)(y, train)
        y = activation(self.activation)(batch_norm(train)(y))
        y = conv(self.features * self.expansion, 1, self.policy)(y, train)
        y = batch_norm(train)(y)
        out = self.features * self.expansion
        return activation(self.activation)(y + shortcut(x, out, self.stride, self.policy, train))


def shortcut(x, features: int, stride: int, policy: QuantPolicy, train: bool):
    """Identity, or (type B) a 1×1 projection + BN where the stride or the width changes."""
    if stride == 1 and x.shape[-1] == features:
        return x
    x = conv(features, 1, policy, role="shortcut", stride=stride)(x, train)
    return batch_norm(train)(x)


class ResNet(nn.Module):
    """A ResNet; subclasses fix the architecture constants."""

    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    width_multiplier: float = setting(1.0, gt=0)
    cifar_stem: bool = False
    activation: str = setting("relu", choices=ACTIVATIONS)

    # architecture constants (class attributes, not options)
    stage_sizes = (2, 2, 2, 2)
    stage_widths = (64, 128, 256, 512)
    block_cls = BasicBlock

    @nn.compact
    def __call__(self, x, train: bool = False):
        widths = [scale_width(w, self.width_multiplier) for w in self.stage_widths]
        x = stem(x, widths[0], self.policy, self.cifar_stem, self.activation, train)
        for stage, (blocks, width) in enumerate(zip(self.stage_sizes, widths)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = self.block_cls(width, self.policy, stride, self.activation)(x, train)
        return classifier(x, self.num_classes, self.policy, train)


class ResNet18(ResNet):
    stage_sizes = (2, 2, 2, 2)
    block_cls = BasicBlock


class ResNet50(ResNet):
    stage_sizes = (3, 4, 6, 3)
    block_cls = Bottleneck


class ResNet20(ResNet):
    cifar_stem: bool = True
    stage_sizes = (3, 3, 3)
    stage_widths = (16, 32, 64)
    block_cls = BasicBlock
