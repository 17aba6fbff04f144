"""larq/Keras model → a `KerasGraph` node list and its bnnx variables.

Mapping (inference forward identical; see docs/larq-migration.md for the table and the gradients):
ste_sign(clip) → sign_ste(clip); approx_sign → approx_sign; swish_sign(β) → swish_sign(β);
magnitude_aware_sign (kernels) → sign_ste with per-output-channel mean|w| scaling (bnnx's
`mean_abs`, Bi-Real Net §3.3); ste_tern(Δ) → ternary(threshold=Δ); NoOp → real. Refused in one
line: DoReFa (k-bit), SteHeaviside ({0, 1} outputs), TWN's whole-tensor threshold, layers bnnx
cannot express (separable/1-D/locally connected convs, dilation, channels_first, shared layers).
A final softmax is dropped: bnnx models return logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnnx.errors import CheckpointError, ConfigError
from bnnx.interop.keras_file import KerasFile
from bnnx.interop.keras_graph import INPUT

QUANTIZERS = {  # larq class name or alias -> bnnx quantizer name (None: not expressible, with why)
    "stesign": "sign_ste", "ste_sign": "sign_ste", "approxsign": "approx_sign", "approx_sign": "approx_sign",
    "swishsign": "swish_sign", "swish_sign": "swish_sign", "magnitudeawaresign": "magnitude_aware_sign",
    "magnitude_aware_sign": "magnitude_aware_sign", "stetern": "ternary", "ste_tern": "ternary",
    "noop": "noop", "noopquantizer": "noop",
}
REFUSED = {
    "dorefa": "DoReFa is a k-bit quantizer; bnnx quantizes to 1 bit (or ternary)",
    "dorefaquantizer": "DoReFa is a k-bit quantizer; bnnx quantizes to 1 bit (or ternary)",
    "dorefa_quantizer": "DoReFa is a k-bit quantizer; bnnx quantizes to 1 bit (or ternary)",
    "steheaviside": "SteHeaviside outputs {0, 1}; bnnx's binary quantizers output {-1, +1}",
    "ste_heaviside": "SteHeaviside outputs {0, 1}; bnnx's binary quantizers output {-1, +1}",
}
ACTIVATIONS = ("linear", "relu", "relu6", "tanh", "sigmoid", "hard_tanh", "leaky_relu")
CONV = ("QuantConv2D", "Conv2D")
DEPTHWISE = ("QuantDepthwiseConv2D", "DepthwiseConv2D")
DENSE = ("QuantDense", "Dense")
POOLS = {"MaxPooling2D": "max_pool", "MaxPool2D": "max_pool", "AveragePooling2D": "avg_pool",
         "AvgPool2D": "avg_pool"}
IDENTITIES = ("Dropout", "SpatialDropout2D", "GaussianNoise", "ActivityRegularization")
ADD_OPS = ("__operators__.add", "math.add", "add")


def quantizer(value, role: str, where: str) -> tuple[dict | None, str]:
    """(bnnx quantizer spec or None, scaling) for a larq quantizer given as alias or serialized object."""
    if value is None:
        return None, "none"
    name, args = (value, {}) if isinstance(value, str) else (value.get("class_name", ""), value.get("config") or {})
    key = str(name).lower()
    if key in REFUSED:
        raise ConfigError(f"{where}: cannot import {name}: {REFUSED[key]}")
    if key not in QUANTIZERS:
        raise ConfigError(f"{where}: unknown larq quantizer {name!r}; bnnx maps ste_sign, approx_sign, swish_sign, "
                          "magnitude_aware_sign, ste_tern, noop")
    kind = QUANTIZERS[key]
    clip = args.get("clip_value", 1.0)
    clip = 3.0e38 if clip is None else float(clip)  # larq's None: gradient never clipped
    if kind == "noop":
        return None, "none"
    if kind == "sign_ste":
        return {"name": "sign_ste", "args": {"clip": clip}}, "none"
    if kind == "approx_sign":
        return {"name": "approx_sign", "args": {}}, "none"
    if kind == "swish_sign":
        return {"name": "swish_sign", "args": {"beta": float(args.get("beta", 5.0))}}, "none"
    if kind == "magnitude_aware_sign":
        if role != "kernel":
            raise ConfigError(f"{where}: magnitude_aware_sign as an input quantizer is not expressible in bnnx "
                              "(its scale is per output channel of a kernel)")
        return {"name": "sign_ste", "args": {"clip": clip}}, "mean_abs"
    if args.get("ternary_weight_networks"):
        raise ConfigError(f"{where}: ste_tern with ternary_weight_networks=True (one threshold per tensor) is not "
                          "expressible; bnnx's TWN threshold is per output channel")
    return {"name": "ternary", "args": {"threshold": float(args.get("threshold_value", 0.05))}}, "none"


def _pair(value) -> list[int]:
    return [int(value), int(value)] if isinstance(value, (int, float)) else [int(v) for v in value]


def _activation(value, where: str) -> str:
    name = value if isinstance(value, str) or value is None else value.get("class_name", value.get("config"))
    name = "linear" if name is None else str(name)
    if name not in ACTIVATIONS and name != "softmax":
        raise ConfigError(f"{where}: activation {name!r} is not supported; valid: {', '.join(ACTIVATIONS)}")
    return name


def _check_conv(config: dict, where: str) -> None:
    if config.get("data_format", "channels_last") != "channels_last":
        raise ConfigError(f"{where}: data_format={config['data_format']} is not supported; bnnx is NHWC")
    if _pair(config.get("dilation_rate", 1)) != [1, 1]:
        raise ConfigError(f"{where}: dilated convolutions are not supported")
    if int(config.get("groups", 1)) != 1:
        raise ConfigError(f"{where}: grouped convolutions (groups={config['groups']}) are not supported")


def layer_node(class_name: str, config: dict, weights: list[np.ndarray], where: str
               ) -> tuple[dict | None, dict, dict]:
    """(node without name/inputs, params, batch_stats) for one Keras layer; node None: identity."""
    if class_name in CONV + DEPTHWISE + DENSE:
        return _weight_layer(class_name, config, weights, where)
    if class_name == "BatchNormalization":
        axis = config.get("axis", -1)
        # -1, or the last axis spelled out (1 after a Dense, 3 after a conv): channels_first is refused at the conv
        if (axis if isinstance(axis, int) else axis[0] if len(axis) == 1 else 0) not in (-1, 1, 3):
            raise ConfigError(f"{where}: BatchNormalization over axis {axis} is not supported (only channels)")
        scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
        if len(weights) != scale + center + 2:
            raise CheckpointError(f"{where}: expected {scale + center + 2} weights, found {len(weights)}")
        params = dict(zip([k for k, on in (("scale", scale), ("bias", center)) if on], weights))
        node = {"op": "batch_norm", "epsilon": float(config.get("epsilon", 1e-3)),
                "momentum": float(config.get("momentum", 0.99)), "use_scale": scale, "use_bias": center}
        return node, params, {"mean": weights[-2], "var": weights[-1]}
    if class_name == "Activation":
        return {"op": "activation", "activation": _activation(config.get("activation"), where)}, {}, {}
    if class_name in POOLS:
        window = _pair(config.get("pool_size", 2))
        strides = _pair(config.get("strides") or window)
        _check_conv({**config, "dilation_rate": 1, "groups": 1}, where)
        return {"op": POOLS[class_name], "window": window, "strides": strides,
                "padding": str(config.get("padding", "valid")).upper()}, {}, {}
    if class_name == "GlobalAveragePooling2D":
        if config.get("keepdims") or config.get("data_format", "channels_last") != "channels_last":
            raise ConfigError(f"{where}: GlobalAveragePooling2D with keepdims or channels_first is not supported")
        return {"op": "global_avg_pool"}, {}, {}
    if class_name == "Flatten":
        return {"op": "flatten"}, {}, {}
    if class_name == "Reshape":
        return {"op": "reshape", "shape": [int(v) for v in config["target_shape"]]}, {}, {}
    if class_name in ("Add",) or (class_name == "TFOpLambda" and config.get("function") in ADD_OPS):
        return {"op": "add"}, {}, {}
    if class_name in IDENTITIES:
        return None, {}, {}
    raise ConfigError(f"{where}: layer {class_name} is not supported by bnnx import larq (see docs/larq-migration.md)")


def _weight_layer(class_name: str, config: dict, weights: list[np.ndarray], where: str):
    _check_conv(config, where)
    kernel_q, scaling = quantizer(config.get("kernel_quantizer") or config.get("depthwise_quantizer"), "kernel", where)
    input_q, _ = quantizer(config.get("input_quantizer"), "input", where)
    use_bias = bool(config.get("use_bias", True))
    if len(weights) != 1 + use_bias:
        raise CheckpointError(f"{where}: expected {1 + use_bias} weights, found {len(weights)}")
    kernel = weights[0]
    node: dict[str, Any] = {"op": "dense" if class_name in DENSE else "conv", "use_bias": use_bias,
                            "activation": _activation(config.get("activation"), where),
                            "kernel_quantizer": kernel_q, "input_quantizer": input_q, "scaling": scaling}
    if class_name in DENSE:
        node["features"] = int(kernel.shape[-1])
    else:
        node.update(kernel_size=list(kernel.shape[:2]), strides=_pair(config.get("strides", 1)),
                    padding=str(config.get("padding", "valid")).upper(), pad_value=float(config.get("pad_values", 0.0)))
        if node["pad_value"] not in (0.0, 1.0, -1.0):
            raise ConfigError(f"{where}: pad_values={node['pad_value']} is not supported (0 or ±1)")
        if class_name in DEPTHWISE:
            if scaling != "none":
                raise ConfigError(f"{where}: magnitude_aware_sign on a depthwise kernel is not expressible in bnnx")
            height, width, channels, multiplier = kernel.shape
            kernel = kernel.reshape(height, width, 1, channels * multiplier)  # TF's output channel c·m + k
            node.update(groups=int(channels))
        node["features"] = int(kernel.shape[-1])
    params = {"kernel": kernel}
    if use_bias:
        params["bias"] = weights[1]
    return node, params, {}


def import_model(keras: KerasFile) -> tuple[list[dict], dict, tuple[int, ...]]:
    """(graph, variables {"params", "batch_stats"}, input shape without batch)."""
    kind, config = keras.config.get("class_name"), keras.config.get("config") or {}
    if kind not in ("Sequential", "Functional", "Model"):
        raise ConfigError(f"cannot import a Keras {kind!r}; expected a Sequential or functional Model")
    layers = config.get("layers") or []
    if kind == "Sequential":
        layers = _chain(layers)
    aliases: dict[str, str] = {}
    graph, params, stats, shape = [], {}, {}, None
    for layer in layers:
        class_name, layer_config = layer["class_name"], layer.get("config") or {}
        name = str(layer_config.get("name") or layer.get("name"))
        where = f"layer {name} ({class_name})"
        inputs = [aliases.get(i, i) for i in _inbound(layer, where)]
        shape = shape or _input_shape(layer_config)
        if class_name == "InputLayer":
            aliases[name] = INPUT
            continue
        node, layer_params, layer_stats = layer_node(class_name, layer_config, keras.weights.get(name, []), where)
        if node is None:
            aliases[name] = inputs[0]
            continue
        graph.append({"name": name, "inputs": inputs, **node})
        if layer_params:
            params[name] = layer_params
        if layer_stats:
            stats[name] = layer_stats
    if shape is None:
        raise ConfigError("the model records no input shape; build it with an Input or input_shape before saving")
    return _finish(graph, keras, aliases, kind, config), {"params": params, "batch_stats": stats}, shape


def _finish(graph: list[dict], keras: KerasFile, aliases: dict, kind: str, config: dict) -> list[dict]:
    """The graph ending at the model's output, a final softmax dropped (bnnx returns logits)."""
    if kind != "Sequential":
        outputs = config.get("output_layers") or []
        if len(outputs) != 1:
            raise ConfigError(f"the model has {len(outputs)} outputs; bnnx imports single-output classifiers")
        output = aliases.get(_history(outputs[0])[0], _history(outputs[0])[0])
        if output != graph[-1]["name"]:
            graph = graph + [{"name": "output", "op": "activation", "activation": "linear", "inputs": [output]}]
    last = graph[-1]
    if last.get("activation") == "softmax":
        graph = graph[:-1] if last["op"] == "activation" else graph[:-1] + [{**last, "activation": "linear"}]
    for node in graph:
        if node.get("activation") == "softmax":
            raise ConfigError(f"layer {node['name']}: softmax inside the model is not supported (only a final one)")
    if graph[-1]["op"] not in ("dense", "conv", "batch_norm", "flatten", "reshape", "add", "global_avg_pool"):
        raise ConfigError(f"the model ends in {graph[-1]['op']}; bnnx imports classifiers ending in logits")
    return graph


def _chain(layers: list[dict]) -> list[dict]:
    """A Sequential's layers with the inbound links a functional model would record."""
    out, previous = [], INPUT
    for layer in layers:
        name = (layer.get("config") or {}).get("name")
        out.append({**layer, "inbound_nodes": [[[previous, 0, 0, {}]]]})
        previous = name
    return out


def _inbound(layer: dict, where: str) -> list[str]:
    nodes = layer.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ConfigError(f"{where} is called {len(nodes)} times; shared layers are not supported")
    return [] if not nodes else _history(nodes[0])


def _history(value) -> list[str]:
    """The layer names a serialized Keras call refers to (legacy [name, node, tensor, kwargs]
    lists or keras_history entries), first operand first."""
    if isinstance(value, dict):
        if "keras_history" in value:
            return [value["keras_history"][0]]
        return [name for item in value.values() for name in _history(item)]
    if isinstance(value, (list, tuple)):
        if len(value) >= 3 and isinstance(value[0], str) and isinstance(value[1], int) and isinstance(value[2], int):
            return [value[0]] + (_history(value[3]) if len(value) > 3 else [])
        return [name for item in value for name in _history(item)]
    return []


def _input_shape(config: dict) -> tuple[int, ...] | None:
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    if shape is None:
        return None
    if any(side is None for side in shape[1:]):
        raise ConfigError(f"the model's input shape {shape[1:]} is not fixed; save it with a fixed input shape")
    return tuple(int(side) for side in shape[1:])


TARGET = "bnnx.interop.keras_graph:KerasGraph"


def choose_dataset(shape: tuple[int, ...], classes: int, name: str | None = None) -> tuple[str, int | None]:
    """(data set, ImageNet image size or None) whose inputs and classes fit the model's: `name` if
    given, else the first that fits (digits, mnist, fashion_mnist, cifar10, cifar100, imagenet2012)."""
    from bnnx.data import DATASET_SHAPES

    fits = [d for d, (s, c) in DATASET_SHAPES.items() if c == classes and
            (list(s) == list(shape) or (None in s and len(shape) == 3 and shape[0] == shape[1] and shape[2] == s[2]))]
    if name is not None and name not in DATASET_SHAPES:
        raise ConfigError(f"unknown data set '{name}'; valid options: {', '.join(DATASET_SHAPES)}")
    if not fits or (name is not None and name not in fits):
        raise ConfigError(f"the model takes {'x'.join(map(str, shape))} inputs with {classes} classes; "
                          f"{'no bnnx data set fits' if name is None else name + ' does not fit'}"
                          f"{' (these do: ' + ', '.join(fits) + ')' if fits else ''}")
    chosen = name or fits[0]
    return chosen, (shape[0] if None in DATASET_SHAPES[chosen][0] else None)


def output_classes(graph: list[dict], variables: dict) -> int:
    """The logits' width: the last weight layer's or BN's features."""
    for node in reversed(graph):
        layer = variables["params"].get(node["name"]) or variables["batch_stats"].get(node["name"])
        if layer:
            return int(next(iter(layer.values())).shape[-1])
    raise ConfigError("the model has no weight layer")
