"""One packed layer: its arrays, what it needs of its flax module, and its forward pass in eval
mode on bits (XNOR-popcount, integer sums) or on real inputs (sign-select, float sums)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bnnx.errors import ConfigError
from bnnx.layers import QuantConv, QuantDense, QuantPolicy
from bnnx.packed import kernels


@flax.struct.dataclass
class PackedLayer:
    planes: dict  # "sign" (and "nonzero") uint32 words (N, W)
    scale: jax.Array | None  # per output channel, or None
    bias: jax.Array | None
    kernel_shape: tuple = flax.struct.field(pytree_node=False)
    binary_inputs: bool = flax.struct.field(pytree_node=False)  # the input mask is on

    @property
    def reduction(self) -> int:
        """K: the length of the dot products, so |integer sums| ≤ K."""
        return int(np.prod(self.kernel_shape[:-1]))


@dataclasses.dataclass(frozen=True)
class Geometry:
    """What a packed layer needs of its module: bnnx's QuantDense/QuantConv or a plain flax
    nn.Dense/nn.Conv that `bnnx.binarize` quantizes (its policy then comes from the model)."""

    policy: QuantPolicy
    role: str
    conv: bool
    kernel_size: tuple = ()
    strides: tuple = ()
    padding: object = "SAME"


def geometry_of(module, policy, role: str) -> Geometry:
    path = "/".join(module.scope.path)
    if not isinstance(module, (QuantConv, nn.Conv)):
        if not isinstance(module, (QuantDense, nn.Dense)):
            raise ConfigError(f"packed engine: {type(module).__name__} {path} is not supported (Dense and Conv are)")
        return Geometry(policy, role, False)
    strides = module.strides if module.strides is not None else 1
    kernel_size = (module.kernel_size,) if isinstance(module.kernel_size, int) else tuple(module.kernel_size)
    strides = (strides,) * len(kernel_size) if isinstance(strides, int) else tuple(strides)
    dilated = any(d != 1 for d in np.atleast_1d(getattr(module, "kernel_dilation", None) or 1))
    if module.feature_group_count != 1 or dilated or len(kernel_size) != 2:
        raise ConfigError(f"packed engine: conv {path} is grouped, dilated or not 2-D; "
                          "only plain 2-D convs are supported")
    return Geometry(policy, role, True, kernel_size, strides, module.padding)


def takes_bits(geometry: Geometry, path: str, layer: PackedLayer) -> bool:
    """Its input quantizer gives sign bits (two levels, input mask on): its sums are integers."""
    policy = geometry.policy
    return (layer.binary_inputs and policy.quantizes_inputs(geometry.role, path)
            and policy.input_quantizer.levels == 2)


def inputs(geometry: Geometry, path: str, layer: PackedLayer, x: jax.Array):
    """(x or its sign bits, whether they are bits) as the layer's input quantizer would see them."""
    policy = geometry.policy
    if not (layer.binary_inputs and policy.quantizes_inputs(geometry.role, path)):
        return x, False
    quantized = policy.input_quantizer(x, train=False)
    if takes_bits(geometry, path, layer):
        return quantized > 0, True
    return quantized, False


def sums(geometry: Geometry, layer: PackedLayer, x: jax.Array, bits: bool) -> jax.Array:
    """The layer's dot products before its scale: int32 on bits, float on real inputs."""
    if geometry.conv:
        pads = kernels.conv_pads(x.shape[1:3], geometry.kernel_size, geometry.strides, geometry.padding)
        conv = kernels.xnor_conv if bits else kernels.select_conv
        return conv(x, layer.planes, layer.kernel_shape, geometry.strides, pads)
    flat = x.reshape(-1, x.shape[-1])
    y = (kernels.xnor_dense(flat, layer.planes, layer.kernel_shape[0]) if bits
         else kernels.select_dense(flat, layer.planes))
    return y.reshape(*x.shape[:-1], -1)


def sums_shape(geometry: Geometry, layer: PackedLayer, x: jax.Array) -> tuple:
    """The shape `sums` gives, without tracing its kernels."""
    if not geometry.conv:
        return (*x.shape[:-1], layer.kernel_shape[-1])
    pads = kernels.conv_pads(x.shape[1:3], geometry.kernel_size, geometry.strides, geometry.padding)
    spatial = [(size + low + high - k) // stride + 1 for size, (low, high), k, stride
               in zip(x.shape[1:3], pads, geometry.kernel_size, geometry.strides)]
    return (x.shape[0], *spatial, layer.kernel_shape[-1])


def scaled(layer: PackedLayer, y: jax.Array) -> jax.Array:
    """The layer's output from its sums: float32, times the scale, plus the bias."""
    y = y.astype(jnp.float32)
    if layer.scale is not None:
        y = y * layer.scale
    return y if layer.bias is None else y + layer.bias
