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

import dataclasses
from pathlib import Path

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bnnx.errors import ConfigError
from bnnx.export import Exported, unpack
from bnnx.binarizer import layer_kind
from bnnx.layers import QuantConv, QuantDense, _Quantized
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
        binary_inputs = bool(np.all(input_mask > 0)) and layer in exported.manifest.get("binary_inputs", [layer])
        layers[layer] = PackedLayer(
            planes={k: jnp.asarray(v) for k, v in exported.planes[tensor["name"]].items()},
            scale=None if scale is None else jnp.asarray(scale), bias=_layer_tensor(exported, layer, "bias"),
            kernel_shape=tuple(tensor["shape"]), binary_inputs=binary_inputs)
    return PackedModel(exported.variables(packed=False), layers)


@dataclasses.dataclass(frozen=True)
class _Geometry:
    """What a packed layer needs of its module: bnnx's QuantDense/QuantConv or a plain flax
    nn.Dense/nn.Conv that `bnnx.binarize` quantizes (its policy then comes from the model)."""

    policy: object
    role: str
    conv: bool
    kernel_size: tuple = ()
    strides: tuple = ()
    padding: object = "SAME"


def _geometry(module, policy, role: str) -> _Geometry:
    path = "/".join(module.scope.path)
    if not isinstance(module, (QuantConv, nn.Conv)):
        if not isinstance(module, (QuantDense, nn.Dense)):
            raise ConfigError(f"packed engine: {type(module).__name__} {path} is not supported (Dense and Conv are)")
        return _Geometry(policy, role, False)
    strides = module.strides if module.strides is not None else 1
    strides = (strides,) * len(module.kernel_size) if isinstance(strides, int) else tuple(strides)
    dilated = any(d != 1 for d in np.atleast_1d(getattr(module, "kernel_dilation", None) or 1))
    if module.feature_group_count != 1 or dilated or len(module.kernel_size) != 2:
        raise ConfigError(f"packed engine: conv {path} is grouped, dilated or not 2-D; only plain 2-D convs are supported")
    return _Geometry(policy, role, True, tuple(module.kernel_size), strides, module.padding)


def _inputs(geometry: _Geometry, path: str, layer: PackedLayer, x: jax.Array):
    """(x or its sign bits, whether they are bits) as the layer's input quantizer would see them."""
    policy = geometry.policy
    if not (layer.binary_inputs and policy.quantizes_inputs(geometry.role, path)):
        return x, False
    quantized = policy.input_quantizer(x, train=False)
    if policy.input_quantizer.levels == 2:
        return quantized > 0, True
    return quantized, False


def layer_forward(geometry: _Geometry, path: str, layer: PackedLayer, x: jax.Array) -> jax.Array:
    """The packed twin of the layer's forward pass in eval mode."""
    x, bits = _inputs(geometry, path, layer, x)
    if geometry.conv:
        pads = kernels.conv_pads(x.shape[1:3], geometry.kernel_size, geometry.strides, geometry.padding)
        conv = kernels.xnor_conv if bits else kernels.select_conv
        y = conv(x, layer.planes, layer.kernel_shape, geometry.strides, pads)
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
    """Logits of `model` on `x` with its packed layers computed on bits (jit this). The layers are
    bnnx's QuantDense/QuantConv, or a `bnnx.binarize`d model's nn.Dense/nn.Conv."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        path = "/".join(module.scope.path) if context.method_name == "__call__" else None
        layer = packed.layers.get(path)
        if layer is None or not (isinstance(module, _Quantized) or layer_kind(module)):
            return next_fun(*args, **kwargs)
        if isinstance(module, _Quantized):
            geometry = _geometry(module, module.policy, module.role)
        else:  # its export recorded whether its inputs are binary; its quantizers are the model's rule's
            policy = dataclasses.replace(model.policy_of(tuple(path.split("/"))), real_roles=(), real_paths=())
            geometry = _geometry(module, policy, "hidden")
        return layer_forward(geometry, path, layer, args[0])

    with nn.intercept_methods(interceptor):
        return model.apply(packed.variables, x, train=False)


def load(path: Path | str):
    """(model, PackedModel, manifest) of an export file."""
    exported = unpack(path)
    return exported.model(), packed_model(exported), exported.manifest
