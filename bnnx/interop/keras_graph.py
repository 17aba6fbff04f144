"""A flax model generated from an imported larq/Keras architecture: a list of nodes run in order.

`bnnx import larq` writes the node list (`graph`, as JSON) into the run's config (model=external, target
`bnnx.interop.keras_graph:KerasGraph`), so the run is self-contained: eval, predict, export and
`method.init_from` rebuild the model from config.yaml alone.

Each node is a plain dict {"name", "op", "inputs", ...}; module names are the Keras layer names, so
parameter paths read like the Keras model. Quantized layers are bnnx's `QuantConv`/`QuantDense`
with a per-layer `QuantPolicy` built from the larq layer's own `kernel_quantizer`/`input_quantizer`
(the model config's quantizer settings do not apply; `model.fp=true` makes every layer real, as for
any bnnx model's full-precision twin). Keras semantics kept: NHWC and HWIO (flax's own layout),
TF "SAME" padding (extra row/column at the bottom/right, as XLA's SAME), larq's `pad_values`
(the quantized input padded with that value), BatchNormalization's own epsilon and momentum,
average pooling that excludes padding, as TF does."""

from __future__ import annotations

import json
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from bnnx.layers import FULL_PRECISION, QuantConv, QuantDense, QuantPolicy
from bnnx.quantizers import Identity, make_quantizer

INPUT = "__input__"  # the graph input's name in node inputs
ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": nn.relu,
    "relu6": nn.relu6,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "hard_tanh": lambda x: jnp.clip(x, -1.0, 1.0),  # larq.activations.hard_tanh
    "leaky_relu": lambda x: nn.leaky_relu(x, 0.2),  # Keras' default alpha for the string
    "leaky_tanh": lambda x: (jnp.clip(x, -1.0, 1.0) + (jnp.maximum(x, 1.0) - 1.0) * 0.2  # larq.activations
                             + (jnp.minimum(x, -1.0) + 1.0) * 0.2),
    "hard_sigmoid": lambda x: jnp.clip(x * 0.2 + 0.5, 0.0, 1.0),  # Keras 2's
    "swish": nn.silu,
    "silu": nn.silu,
    "elu": nn.elu,
    "gelu": lambda x: nn.gelu(x, approximate=False),  # Keras' default
    "softplus": nn.softplus,
    "softsign": nn.soft_sign,
}


def _quantizer(spec: dict | None):
    return Identity() if spec is None else make_quantizer(spec["name"], **dict(spec.get("args") or {}))


def layer_policy(node: dict, base: QuantPolicy) -> QuantPolicy:
    """The node's own policy: its larq quantizers, or all real when the model is the FP twin."""
    if isinstance(base.kernel_quantizer, Identity) or node.get("kernel_quantizer") is None:
        return FULL_PRECISION
    return QuantPolicy(kernel_quantizer=_quantizer(node["kernel_quantizer"]),
                       input_quantizer=_quantizer(node.get("input_quantizer")),
                       scaling=node.get("scaling", "none"), real_roles=(), real_paths=())


def same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """TF's SAME: output ceil(size/stride), the odd pixel of padding at the end."""
    total = max((math.ceil(size / stride) - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


class PReLU(nn.Module):
    """Keras' PReLU: relu(x) − α·relu(−x), α of the layer's shape (1 along its shared_axes)."""

    alpha_shape: tuple[int, ...]

    @nn.compact
    def __call__(self, x):
        alpha = self.param("alpha", nn.initializers.constant(0.25), self.alpha_shape)
        return nn.relu(x) - alpha * nn.relu(-x)


class KerasGraph(nn.Module):
    num_classes: int
    policy: QuantPolicy = QuantPolicy()
    graph: str = "[]"  # the node list as JSON (a module attribute must hash: jit takes the module as static)

    @nn.compact
    def __call__(self, x, train: bool = False):
        nodes = json.loads(self.graph)
        values: dict[str, Any] = {INPUT: x}
        for node in nodes:
            values[node["name"]] = self._node(node, [values[name] for name in node["inputs"]], train)
        return values[nodes[-1]["name"]]

    def policy_of(self, path: tuple[str, ...]) -> QuantPolicy:
        """The policy of the layer at `path` (the export packs each kernel with its own quantizer)."""
        node = next((n for n in json.loads(self.graph) if n["name"] == path[-1]), {})
        return layer_policy(node, self.policy)

    def _node(self, node: dict, inputs: list, train: bool):
        op, x = node["op"], inputs[0]
        if op in ("conv", "dense"):
            return ACTIVATIONS[node.get("activation", "linear")](self._weight_layer(node, x, train))
        if op == "batch_norm":
            return nn.BatchNorm(use_running_average=not train, momentum=node["momentum"], epsilon=node["epsilon"],
                                use_scale=node["use_scale"], use_bias=node["use_bias"], name=node["name"])(x)
        if op == "activation":
            return ACTIVATIONS[node["activation"]](x)
        if op in ("max_pool", "avg_pool"):
            return self._pool(node, x)
        if op in ("global_avg_pool", "global_max_pool"):
            reduce = jnp.mean if op == "global_avg_pool" else jnp.max
            return reduce(x, axis=(1, 2), keepdims=bool(node.get("keepdims")))
        if op == "flatten":
            return x.reshape(x.shape[0], -1)
        if op == "reshape":
            return x.reshape(x.shape[0], *node["shape"])
        return self._elementwise(node, inputs)

    def _elementwise(self, node: dict, inputs: list):
        op, x = node["op"], inputs[0]
        if op == "add":
            return sum(inputs[1:], inputs[0])
        if op == "multiply":
            return math.prod(inputs[1:], start=inputs[0])
        if op == "concat":
            return jnp.concatenate(inputs, axis=-1)
        if op == "pad":
            return jnp.pad(x, ((0, 0), *node["pads"], (0, 0)))
        if op == "prelu":
            return PReLU(tuple(node["alpha_shape"]), name=node["name"])(x)
        if op == "leaky_relu":
            return nn.leaky_relu(x, node["alpha"])
        if op == "rescale":
            return x * jnp.asarray(node["scale"], x.dtype) + jnp.asarray(node["offset"], x.dtype)
        if op == "normalize":
            return (x - jnp.asarray(node["mean"], x.dtype)) / jnp.asarray(node["std"], x.dtype)
        if op == "identity":
            return x
        raise ValueError(f"unknown graph op {op!r}")  # the importer writes only the ops above

    def _weight_layer(self, node: dict, x, train: bool):
        policy = layer_policy(node, self.policy)
        real_kernel = policy is FULL_PRECISION
        if real_kernel and node.get("input_quantizer") is not None and not isinstance(self.policy.kernel_quantizer,
                                                                                       Identity):
            x = _quantizer(node["input_quantizer"])(x, train=train)  # larq: quantized inputs, real kernel
        if node["op"] == "dense":
            return QuantDense(node["features"], policy=policy, use_bias=node["use_bias"], name=node["name"])(x, train)
        padding: Any = node["padding"]
        if padding == "SAME" and node.get("pad_value", 0.0) != 0.0:
            # padded before QuantConv quantizes: the importer admits only pad values that sign keeps (±1)
            pads = [same_padding(x.shape[1 + i], node["kernel_size"][i], node["strides"][i]) for i in range(2)]
            x = jnp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=node["pad_value"])
            padding = "VALID"
        return QuantConv(node["features"], policy=policy, kernel_size=tuple(node["kernel_size"]),
                         strides=tuple(node["strides"]), padding=padding, feature_group_count=node.get("groups", 1),
                         use_bias=node["use_bias"], name=node["name"])(x, train)

    def _pool(self, node: dict, x):
        window, strides, padding = tuple(node["window"]), tuple(node["strides"]), node["padding"]
        if node["op"] == "max_pool":
            return nn.max_pool(x, window, strides, padding)
        return nn.avg_pool(x, window, strides, padding, count_include_pad=False)

