"""larq quantizers → bnnx quantizer specs, with larq's inference forward kept exactly.

ste_sign(clip) → sign_ste(clip); approx_sign → approx_sign; swish_sign(β) → swish_sign(β) (all
sign(0) = +1, as larq.math.sign); magnitude_aware_sign (kernels) → sign_ste with per-output-channel
mean|w| scaling (bnnx's `mean_abs`, Bi-Real Net §3.3); larq-zoo's xnor_weight_scale → the same on
the kernel clipped to [−1, 1]; ste_tern(Δ) → ternary with |x| ≥ Δ mapped to ±1 (larq's
sign(sign(x+Δ) + sign(x−Δ))); its TWN threshold 0.7·mean|W| over the whole kernel, fixed at
import; NoOp → real. Refused in one line: DoReFa (k-bit), SteHeaviside ({0, 1} outputs), the
data-dependent scales of magnitude_aware_sign and TWN on inputs, per-tensor scales."""

from __future__ import annotations

import numpy as np

from bnnx.errors import ConfigError

QUANTIZERS = {  # larq class name, alias or function name -> bnnx quantizer kind
    "stesign": "sign_ste", "ste_sign": "sign_ste", "approxsign": "approx_sign", "approx_sign": "approx_sign",
    "swishsign": "swish_sign", "swish_sign": "swish_sign", "magnitudeawaresign": "magnitude_aware_sign",
    "magnitude_aware_sign": "magnitude_aware_sign", "stetern": "ternary", "ste_tern": "ternary",
    "noop": "noop", "noopquantizer": "noop", "xnor_weight_scale": "xnor_weight_scale",
}
DOREFA = "DoReFa is a k-bit quantizer; bnnx quantizes to 1 bit (or ternary)"
HEAVISIDE = "SteHeaviside outputs {0, 1}; bnnx's binary quantizers output {-1, +1}"
REFUSED = {
    "dorefa": DOREFA, "dorefaquantizer": DOREFA, "dorefa_quantizer": DOREFA,
    "steheaviside": HEAVISIDE, "ste_heaviside": HEAVISIDE,
    "magnitude_aware_sign_unclipped": "DoReFa-Net's kernel quantizer scales by one mean|w| per tensor; bnnx "
                                      "scales per output channel",
}
MAPPED = "ste_sign, approx_sign, swish_sign, magnitude_aware_sign, ste_tern, noop"


def serialized_name(value) -> str | None:
    """The name of a serialized Keras object: an alias string, {"class_name": ...}, or a plain
    function, which both of Keras' formats write as {"class_name": "function", "config": NAME}."""
    if value is None or isinstance(value, str):
        return value
    if value.get("class_name") == "function":
        return str(value.get("config"))
    return str(value.get("class_name", value.get("config")))


def _parse(value, where: str) -> tuple[str, dict]:
    """(bnnx kind, larq arguments) of a serialized larq quantizer."""
    name = serialized_name(value)
    args = value.get("config") if isinstance(value, dict) and value.get("class_name") != "function" else {}
    key = str(name).lower()
    if key in REFUSED:
        raise ConfigError(f"{where}: cannot import {name}: {REFUSED[key]}")
    if key not in QUANTIZERS:
        raise ConfigError(f"{where}: unknown larq quantizer {name!r}; bnnx maps {MAPPED}")
    return QUANTIZERS[key], dict(args or {})


def _sign_spec(kind: str, args: dict) -> dict:
    if kind == "approx_sign":
        return {"name": "approx_sign", "args": {}}
    if kind == "swish_sign":
        return {"name": "swish_sign", "args": {"beta": float(args.get("beta", 5.0))}}
    clip = args.get("clip_value", 1.0)
    return {"name": "sign_ste", "args": {"clip": 3.0e38 if clip is None else float(clip)}}  # None: never clipped


def ternary_spec(threshold: float) -> dict:
    """bnnx's ternary zeroes |x| ≤ t; larq's ste_tern zeroes |x| < Δ only: t is Δ's float32 predecessor."""
    below = np.nextafter(np.float32(threshold), np.float32(0.0))
    return {"name": "ternary", "args": {"threshold": float(below)}}


def input_quantizer(value, where: str) -> dict | None:
    """The bnnx spec of a layer's larq `input_quantizer` (None: real inputs)."""
    if value is None:
        return None
    kind, args = _parse(value, where)
    if kind == "noop":
        return None
    if kind in ("magnitude_aware_sign", "xnor_weight_scale"):
        raise ConfigError(f"{where}: {serialized_name(value)} as an input quantizer is not expressible in bnnx "
                          "(its scale is per output channel of a kernel)")
    if kind == "ternary":
        if args.get("ternary_weight_networks"):
            raise ConfigError(f"{where}: ste_tern with ternary_weight_networks=True as an input quantizer is not "
                              "expressible (its threshold depends on each batch)")
        return ternary_spec(float(args.get("threshold_value", 0.05)))
    return _sign_spec(kind, args)


def kernel_quantizer(value, kernel: np.ndarray, where: str, depthwise: bool = False
                     ) -> tuple[dict | None, str, np.ndarray]:
    """(bnnx spec or None, scaling, kernel as bnnx stores it) for a layer's larq kernel quantizer."""
    if value is None:
        return None, "none", kernel
    kind, args = _parse(value, where)
    if kind == "noop":
        return None, "none", kernel
    if kind == "ternary":
        threshold = float(args.get("threshold_value", 0.05))
        if args.get("ternary_weight_networks"):  # larq: Δ = 0.7·mean|W| over the tensor, a constant for a saved W
            threshold = float(np.float32(0.7) * np.sum(np.abs(kernel), dtype=np.float32) / np.float32(kernel.size))
        return ternary_spec(threshold), "none", kernel
    if kind in ("magnitude_aware_sign", "xnor_weight_scale"):
        if depthwise:
            raise ConfigError(f"{where}: {serialized_name(value)} on a depthwise kernel is not expressible in bnnx "
                              "(larq scales per depth multiplier, bnnx per output channel)")
        if kind == "xnor_weight_scale":
            if kernel.ndim != 4:
                raise ConfigError(f"{where}: xnor_weight_scale is defined for convolution kernels only")
            kernel = np.clip(kernel, -1.0, 1.0)  # larq-zoo clips before the sign and the mean|w|
        return _sign_spec("sign_ste", args), "mean_abs", kernel
    return _sign_spec(kind, args), "none", kernel
