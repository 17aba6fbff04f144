"""A plain flax model with no bnnx imports: what a user brings to `model=external`.

    bnnx train model=external model.target=tests.models_external:SmallNet dataset=digits
"""

import flax.linen as nn
import jax.numpy as jnp


class SmallNet(nn.Module):
    """conv3x3 → LayerNorm → conv3x3 → LayerNorm → pool → Dense → LayerNorm → Dense."""

    num_classes: int = 10
    features: int = 32
    hidden: int = 128

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(self.features, (3, 3))(x)
        x = jnp.clip(nn.LayerNorm()(x), -1.0, 1.0)
        x = nn.Conv(self.features, (3, 3), use_bias=False)(x)
        x = nn.max_pool(nn.LayerNorm()(x), (2, 2), strides=(2, 2))
        x = nn.Dense(self.hidden, use_bias=False)(x.reshape(x.shape[0], -1))
        x = jnp.clip(nn.LayerNorm()(x), -1.0, 1.0)
        return nn.Dense(self.num_classes)(x)


class BatchNormNet(nn.Module):
    """conv3x3 → BN → clip → conv3x3 → BN → clip → pool → Dense → BN → clip → Dense: the plain
    flax layout of a BNN, whose BN between its two binary layers the packed engine folds."""

    num_classes: int = 10
    features: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False):
        norm = lambda: nn.BatchNorm(use_running_average=not train)  # noqa: E731
        x = jnp.clip(norm()(nn.Conv(self.features, (3, 3))(x)), -1.0, 1.0)
        x = jnp.clip(norm()(nn.Conv(self.features, (3, 3), use_bias=False)(x)), -1.0, 1.0)
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.clip(norm()(nn.Dense(32, use_bias=False)(x.reshape(x.shape[0], -1))), -1.0, 1.0)
        return nn.Dense(self.num_classes)(x)
