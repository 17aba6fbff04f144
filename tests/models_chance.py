"""Plain flax models with no bnnx imports that train at chance level unless bnnx warns.

    bnnx train model=external model.target=tests.models_chance:ReluMLP dataset=digits
"""

import flax.linen as nn


class ReluMLP(nn.Module):
    """Dense → ReLU → Dense → ReLU → Dense → ReLU → Dense: the hidden layers' binary inputs are
    sign(relu(x)) = +1 everywhere, so with binary activations they see one constant input."""

    num_classes: int = 10
    hidden: int = 64

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


class NormMLP(nn.Module):
    """The same layout with LayerNorm before each hidden layer: balanced signs, no warning."""

    num_classes: int = 10
    hidden: int = 64

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.LayerNorm()(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        x = nn.LayerNorm()(nn.Dense(self.hidden)(x))
        x = nn.LayerNorm()(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


class ResidualGelu(nn.Module):
    """A small pre-norm residual MLP: embed, blocks of LayerNorm → Dense → GELU → Dense added to
    the stream, LayerNorm, head."""

    num_classes: int = 10
    width: int = 64
    blocks: int = 2

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(self.width)(x.reshape(x.shape[0], -1))
        for _ in range(self.blocks):
            h = nn.gelu(nn.Dense(2 * self.width)(nn.LayerNorm()(x)))
            x = x + nn.Dense(self.width)(h)
        return nn.Dense(self.num_classes)(nn.LayerNorm()(x))
