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

from bnnx.binarizer import layer_kind
from bnnx.export import Exported, unpack
from bnnx.layers import _Quantized
from bnnx.packed.layer import PackedLayer, geometry_of, inputs, scaled, sums


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
            geometry = geometry_of(module, module.policy, module.role)
        else:  # its export recorded whether its inputs are binary; its quantizers are the model's rule's
            policy = dataclasses.replace(model.policy_of(tuple(path.split("/"))), real_roles=(), real_paths=())
            geometry = geometry_of(module, policy, "hidden")
        x, bits = inputs(geometry, path, layer, args[0])
        return scaled(layer, sums(geometry, layer, x, bits))

    with nn.intercept_methods(interceptor):
        return model.apply(packed.variables, x, train=False)


def load(path: Path | str):
    """(model, PackedModel, manifest) of an export file."""
    exported = unpack(path)
    return exported.model(), packed_model(exported), exported.manifest
