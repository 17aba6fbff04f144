"""Run a whole exported model on packed bits: the run's own flax model, with every packed
QuantDense/QuantConv call replaced (`nn.intercept_methods`) by a kernel of `bnnx.packed.kernels`
fed from the export's words. Everything else (first/last and other real layers, BN, pooling,
shortcuts, float-stored relaxed kernels) runs in float exactly as in training's eval.

A layer's inputs go through the layer's own input quantizer: a two-level one gives sign bits
for XNOR-popcount; any other (none, or a layer whose input mask is off) gives real inputs for
the sign-select sum. Scales (mean|w| or learned) multiply the integer result per output channel.
A BN before the next layer's sign stays in float: folding it into a threshold on the integer
sum would round differently from training's float BN near 0 and could flip a sign.
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bnnx.errors import ConfigError
from bnnx.export import Exported, unpack
from bnnx.layers import QuantConv, _Quantized
from bnnx.packed import kernels


@flax.struct.dataclass
class PackedLayer:
    planes: dict  # "sign" (and "nonzero") uint32 words (N, W)
    scale: jax.Array | None  # per output channel, or None
    bias: jax.Array | None
    kernel_shape: tuple = flax.struct.field(pytree_node=False)
    binary_inputs: bool = flax.struct.field(pytree_node=False)  # the input mask is on


@flax.struct.dataclass
class PackedModel:
    variables: dict  # real params, batch stats, quant, without the packed kernels
    layers: dict  # layer path ('/'-joined) → PackedLayer


def _layer_tensor(exported: Exported, layer: str, name: str):
    value = exported.tensors.get(f"params/{layer}/{name}")
    return None if value is None else jnp.asarray(value)


def packed_model(exported: Exported) -> PackedModel:
    """The arrays the engine needs, from an export: words stay words."""
    layers = {}
    for tensor in exported.manifest["tensors"]:
        if tensor["name"] not in exported.planes:
            continue
        layer = tensor["name"].removeprefix("params/").removesuffix("/kernel")
        scale = exported.tensors[tensor["scale"]] if "scale" in tensor else _layer_tensor(exported, layer, "scale")
        input_mask = exported.tensors.get(f"quant/{layer}/input_mask", np.ones(()))
        layers[layer] = PackedLayer(
            planes={k: jnp.asarray(v) for k, v in exported.planes[tensor["name"]].items()},
            scale=None if scale is None else jnp.asarray(scale), bias=_layer_tensor(exported, layer, "bias"),
            kernel_shape=tuple(tensor["shape"]), binary_inputs=bool(np.all(input_mask > 0)))
    return PackedModel(exported.variables(packed=False), layers)


def _inputs(module: _Quantized, layer: PackedLayer, x: jax.Array):
    """(x or its sign bits, whether they are bits) as the layer's input quantizer would see them."""
    path = "/".join(module.scope.path)
    if not (layer.binary_inputs and module.policy.quantizes_inputs(module.role, path)):
        return x, False
    quantized = module.policy.input_quantizer(x, train=False)
    if module.policy.input_quantizer.levels == 2:
        return quantized > 0, True
    return quantized, False


def layer_forward(module: _Quantized, layer: PackedLayer, x: jax.Array) -> jax.Array:
    """The packed twin of QuantDense/QuantConv.__call__ in eval mode."""
    x, bits = _inputs(module, layer, x)
    if isinstance(module, QuantConv):
        if module.feature_group_count != 1:
            raise ConfigError(f"packed engine: grouped conv {'/'.join(module.scope.path)} is not supported")
        pads = kernels.conv_pads(x.shape[1:3], module.kernel_size, module.strides, module.padding)
        conv = kernels.xnor_conv if bits else kernels.select_conv
        y = conv(x, layer.planes, layer.kernel_shape, tuple(module.strides), pads)
    else:
        flat = x.reshape(-1, x.shape[-1])
        y = (kernels.xnor_dense(flat, layer.planes, layer.kernel_shape[0]) if bits
             else kernels.select_dense(flat, layer.planes))
        y = y.reshape(*x.shape[:-1], -1)
    y = y.astype(jnp.float32)
    if layer.scale is not None:
        y = y * layer.scale
    return y if layer.bias is None else y + layer.bias


def packed_apply(model: nn.Module, packed: PackedModel, x: jax.Array) -> jax.Array:
    """Logits of `model` on `x` with its packed layers computed on bits (jit this)."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, _Quantized):
            return next_fun(*args, **kwargs)
        layer = packed.layers.get("/".join(module.scope.path))
        return next_fun(*args, **kwargs) if layer is None else layer_forward(module, layer, args[0])

    with nn.intercept_methods(interceptor):
        return model.apply(packed.variables, x, train=False)


def load(path: Path | str):
    """(model, PackedModel, manifest) of an export file."""
    exported = unpack(path)
    return exported.model(), packed_model(exported), exported.manifest
