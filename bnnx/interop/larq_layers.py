"""One Keras/larq layer → a `KerasGraph` node, its params and its batch statistics (see
docs/larq-migration.md for the table); what bnnx cannot express is refused in one line."""

from __future__ import annotations

from typing import Any

import numpy as np

from bnnx.errors import CheckpointError, ConfigError
from bnnx.interop.keras_graph import ACTIVATIONS
from bnnx.interop.larq_quantizers import input_quantizer, kernel_quantizer, serialized_name

CONV = ("QuantConv2D", "Conv2D")
DEPTHWISE = ("QuantDepthwiseConv2D", "DepthwiseConv2D")
DENSE = ("QuantDense", "Dense")
POOLS = {"MaxPooling2D": "max_pool", "MaxPool2D": "max_pool", "AveragePooling2D": "avg_pool",
         "AvgPool2D": "avg_pool"}
GLOBAL_POOLS = {"GlobalAveragePooling2D": "global_avg_pool", "GlobalAvgPool2D": "global_avg_pool",
                "GlobalMaxPooling2D": "global_max_pool", "GlobalMaxPool2D": "global_max_pool"}
MERGES = {"Add": "add", "Concatenate": "concat", "Multiply": "multiply"}
IDENTITIES = ("Dropout", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "ActivityRegularization")
ADD_OPS = ("__operators__.add", "math.add", "add")
LAMBDA = "Lambda layers hold arbitrary Python code, which bnnx does not run"


def activation_name(value, where: str) -> str:
    name = serialized_name(value) or "linear"
    if name not in ACTIVATIONS and name != "softmax":
        raise ConfigError(f"{where}: activation {name!r} is not supported; valid: {', '.join(ACTIVATIONS)}")
    return name


def _pair(value) -> list[int]:
    return [int(value), int(value)] if isinstance(value, (int, float)) else [int(v) for v in value]


def _check_conv(config: dict, where: str) -> None:
    if config.get("data_format") not in (None, "channels_last"):
        raise ConfigError(f"{where}: data_format={config['data_format']} is not supported; bnnx is NHWC")
    if _pair(config.get("dilation_rate", 1)) != [1, 1]:
        raise ConfigError(f"{where}: dilated convolutions are not supported")
    if int(config.get("groups", 1)) != 1:
        raise ConfigError(f"{where}: grouped convolutions (groups={config['groups']}) are not supported")


def _channels_axis(axis, where: str, what: str) -> None:
    """-1, or the last axis spelled out (1 after a Dense, 3 after a conv): channels_first is refused at the conv."""
    if (axis if isinstance(axis, int) else axis[0] if len(axis) == 1 else 0) not in (-1, 1, 3):
        raise ConfigError(f"{where}: {what} over axis {axis} is not supported (only channels)")


def layer_node(class_name: str, config: dict, weights: list[np.ndarray], where: str
               ) -> tuple[dict | None, dict, dict]:
    """(node without name/inputs, params, batch_stats) for one Keras layer; node None: identity."""
    if class_name in CONV + DEPTHWISE + DENSE:
        return _weight_layer(class_name, config, weights, where)
    if class_name == "BatchNormalization":
        return _batch_norm(config, weights, where)
    if class_name == "PReLU":
        return {"op": "prelu", "alpha_shape": list(weights[0].shape)}, {"alpha": weights[0]}, {}
    node = _plain_node(class_name, config, weights, where)
    return node, {}, {}


def _plain_node(class_name: str, config: dict, weights: list[np.ndarray], where: str) -> dict | None:
    """The node of a layer without params (None: identity at inference)."""
    if class_name in IDENTITIES:
        return None
    if class_name in POOLS:
        _check_conv({**config, "dilation_rate": 1, "groups": 1}, where)
        window = _pair(config.get("pool_size", 2))
        return {"op": POOLS[class_name], "window": window, "strides": _pair(config.get("strides") or window),
                "padding": str(config.get("padding", "valid")).upper()}
    if class_name in GLOBAL_POOLS:
        _check_conv({**config, "dilation_rate": 1, "groups": 1}, where)
        return {"op": GLOBAL_POOLS[class_name], "keepdims": bool(config.get("keepdims", False))}
    if class_name in MERGES or (class_name == "TFOpLambda" and config.get("function") in ADD_OPS):
        if class_name == "Concatenate":
            _channels_axis(config.get("axis", -1), where, "Concatenate")
        return {"op": MERGES.get(class_name, "add")}
    if class_name == "Flatten":
        return {"op": "flatten"}
    if class_name == "Reshape":
        return {"op": "reshape", "shape": [int(v) for v in config["target_shape"]]}
    if class_name == "ZeroPadding2D":
        _check_conv({**config, "dilation_rate": 1, "groups": 1}, where)
        padding = config.get("padding", 1)
        pads = [_pair(side) for side in (padding if isinstance(padding, (list, tuple)) else (padding, padding))]
        return {"op": "pad", "pads": pads}
    if class_name in ("Rescaling", "Normalization"):
        return _preprocessing(class_name, config, weights, where)
    return _activation_layer(class_name, config, where)


def _activation_layer(class_name: str, config: dict, where: str) -> dict:
    if class_name == "Activation":
        return {"op": "activation", "activation": activation_name(config.get("activation"), where)}
    if class_name == "Softmax":
        _channels_axis(config.get("axis", -1), where, "Softmax")
        return {"op": "activation", "activation": "softmax"}
    if class_name == "ReLU":
        slope, threshold, top = (config.get(key) for key in ("negative_slope", "threshold", "max_value"))
        if float(slope or 0) != 0 or float(threshold or 0) != 0 or top not in (None, 6, 6.0):
            raise ConfigError(f"{where}: ReLU with negative_slope, threshold or max_value other than 6 is not "
                              "supported")
        return {"op": "activation", "activation": "relu" if top is None else "relu6"}
    if class_name == "LeakyReLU":
        return {"op": "leaky_relu", "alpha": float(config.get("alpha", 0.3))}
    if class_name == "Lambda":
        raise ConfigError(f"{where}: cannot import a Lambda layer: {LAMBDA}")
    if class_name == "TFOpLambda":
        raise ConfigError(f"{where}: the TensorFlow op {config.get('function')} is not supported (only +)")
    raise ConfigError(f"{where}: layer {class_name} is not supported by bnnx import larq (see docs/larq-migration.md)")


def _preprocessing(class_name: str, config: dict, weights: list[np.ndarray], where: str) -> dict:
    """Rescaling: x·scale + offset. Normalization: (x − mean) / max(√var, 1e-7), Keras' float32 arithmetic."""
    if class_name == "Rescaling":
        return {"op": "rescale", "scale": config.get("scale", 1.0), "offset": config.get("offset", 0.0)}
    if config.get("invert"):
        raise ConfigError(f"{where}: Normalization(invert=True) is not supported")
    _channels_axis(config.get("axis", -1), where, "Normalization")
    mean, var = (config.get(key) for key in ("mean", "variance"))
    if mean is None or var is None:
        if len(weights) < 2:
            raise CheckpointError(f"{where}: expected the mean and variance weights, found {len(weights)} weights")
        mean, var = weights[0], weights[1]
    mean, var = (np.asarray(v, np.float32).reshape(-1) for v in (mean, var))
    std = np.maximum(np.sqrt(var), np.float32(1e-7))
    return {"op": "normalize", "mean": mean.tolist(), "std": std.tolist()}


def _batch_norm(config: dict, weights: list[np.ndarray], where: str) -> tuple[dict, dict, dict]:
    _channels_axis(config.get("axis", -1), where, "BatchNormalization")
    scale, center = bool(config.get("scale", True)), bool(config.get("center", True))
    if len(weights) != scale + center + 2:
        raise CheckpointError(f"{where}: expected {scale + center + 2} weights, found {len(weights)}")
    params = dict(zip([k for k, on in (("scale", scale), ("bias", center)) if on], weights))
    node = {"op": "batch_norm", "epsilon": float(config.get("epsilon", 1e-3)),
            "momentum": float(config.get("momentum", 0.99)), "use_scale": scale, "use_bias": center}
    return node, params, {"mean": weights[-2], "var": weights[-1]}


def _weight_layer(class_name: str, config: dict, weights: list[np.ndarray], where: str):
    _check_conv(config, where)
    use_bias = bool(config.get("use_bias", True))
    if len(weights) != 1 + use_bias:
        raise CheckpointError(f"{where}: expected {1 + use_bias} weights, found {len(weights)}")
    input_q = input_quantizer(config.get("input_quantizer"), where)  # first: DoReFa-Net is refused for DoReFa
    kernel_q, scaling, kernel = kernel_quantizer(config.get("kernel_quantizer") or config.get("depthwise_quantizer"),
                                                 weights[0], where, depthwise=class_name in DEPTHWISE)
    node: dict[str, Any] = {"op": "dense" if class_name in DENSE else "conv", "use_bias": use_bias,
                            "activation": activation_name(config.get("activation"), where),
                            "kernel_quantizer": kernel_q, "input_quantizer": input_q, "scaling": scaling}
    if class_name not in DENSE:
        node.update(kernel_size=list(kernel.shape[:2]), strides=_pair(config.get("strides", 1)),
                    padding=str(config.get("padding", "valid")).upper(), pad_value=float(config.get("pad_values", 0.0)))
        _check_pad_value(node, input_q, where)
        if class_name in DEPTHWISE:
            height, width, channels, multiplier = kernel.shape
            kernel = kernel.reshape(height, width, 1, channels * multiplier)  # TF's output channel c·m + k
            node.update(groups=int(channels))
    node["features"] = int(kernel.shape[-1])
    params = {"kernel": kernel}
    if use_bias:
        params["bias"] = weights[1]
    return node, params, {}


def _check_pad_value(node: dict, input_q: dict | None, where: str) -> None:
    """larq pads the quantized input; bnnx pads before quantizing, the same when q(pad) = pad."""
    pad = node["pad_value"]
    if node["padding"] != "SAME" or pad == 0.0:
        return
    kept = input_q is None or (pad in (1.0, -1.0) and (input_q["name"] != "ternary"
                                                       or input_q["args"]["threshold"] < 1.0))
    if not kept:
        raise ConfigError(f"{where}: pad_values={pad} is not supported with this input quantizer (only 0, or ±1 "
                          "that it keeps)")
