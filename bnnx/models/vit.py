"""A small vision transformer written as a plain flax model, binarized by `bnnx.binarize`.

Patch embedding (a Dense on flattened non-overlapping patches), learned position embeddings,
pre-norm encoder blocks (LayerNorm → nn.MultiHeadDotProductAttention → residual, LayerNorm →
MLP → residual), a final LayerNorm, mean pooling or a class token, and a Dense head. Nothing here
knows about quantization: `build_model` wraps it with `binarize`, whose default rules keep the
first and last weight layers (patch embedding, head) real and quantize the attention projections
(query/key/value/out) and both MLP layers; norms and embeddings are not weight layers and stay real.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from bnnx.config.schema import setting
from bnnx.errors import check

POOLS = ("mean", "cls")


class EncoderBlock(nn.Module):
    dim: int
    heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(name="norm1")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, qkv_features=self.dim, name="attn")(y, y)
        y = nn.LayerNorm(name="norm2")(x)
        y = nn.Dense(self.mlp_dim, name="mlp_in")(y)
        return x + nn.Dense(self.dim, name="mlp_out")(nn.gelu(y))


class ViT(nn.Module):
    num_classes: int = 10
    patch_size: int = setting(7, ge=1)
    dim: int = setting(128, ge=1)
    depth: int = setting(3, ge=0)
    heads: int = setting(4, ge=1)
    mlp_dim: int = setting(256, ge=1)
    pool: str = setting("mean", choices=POOLS)

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Dense(self.dim, name="patch_embed")(patches(x, self.patch_size))
        if self.pool == "cls":
            token = self.param("cls_token", nn.initializers.zeros, (1, 1, self.dim))
            x = jnp.concatenate([jnp.broadcast_to(token, (x.shape[0], 1, self.dim)), x], axis=1)
        x = x + self.param("pos_embed", nn.initializers.normal(0.02), (1, *x.shape[1:]))
        for i in range(self.depth):
            x = EncoderBlock(self.dim, self.heads, self.mlp_dim, name=f"block{i}")(x)
        x = nn.LayerNorm(name="norm")(x)
        x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
        return nn.Dense(self.num_classes, name="head")(x)


def patches(images, size: int):
    """(N, H, W, C) → (N, H/size · W/size, size · size · C), row-major over patches."""
    n, h, w, c = images.shape
    check(h % size == 0 and w % size == 0, f"vit patch_size {size} does not divide the {h}x{w} images")
    x = images.reshape(n, h // size, size, w // size, size, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // size) * (w // size), size * size * c)
