"""The C calls of a C export's layers: real dense/conv, pools, folded bits, packed layers."""

from __future__ import annotations

import numpy as np

from bnnx.deploy.c_values import Value
from bnnx.errors import ConfigError
from bnnx.packed.bits import words_for

NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


def _ptr(value: Value) -> str:
    return value.storage


def dot_general(emitter, eqn, shape) -> Value:
    """A real Dense: x (…, K) · W (K, N) with W a constant."""
    x, w = (emitter.value(node) for node in eqn.ins)
    (contract_x, contract_w), batch = eqn.params["dimension_numbers"]
    if (batch != ((), ()) or tuple(contract_x) != (len(x.shape) - 1,) or tuple(contract_w) != (0,)
            or w.const is None or len(w.shape) != 2 or x.dtype != "f32"):
        raise ConfigError("C export: op dot_general other than a dense layer (inputs · constant (K, N)) "
                          "is not supported")
    x = emitter.dense(x)
    rows = int(np.prod(x.shape[:-1]))
    kernel = emitter.array(np.broadcast_to(w.const, w.shape), "float")
    out = emitter.buffer("f32", shape)
    emitter.body.append(f"  bnnx_dense_f32({_ptr(x)}, {rows}, {w.shape[0]}, {kernel}, {w.shape[1]}, {_ptr(out)});")
    return out


def _geometry(emitter, spatial, window, strides, pads, out_spatial) -> str:
    values = [*window, *strides, pads[0][0], pads[1][0], *out_spatial]
    return emitter.array(np.asarray(values, np.int32), "int32_t")


def conv(emitter, eqn, shape) -> Value:
    """A real 2-D conv, NHWC × HWIO, undilated, ungrouped, with a constant kernel."""
    x, w = (emitter.value(node) for node in eqn.ins)
    p = eqn.params
    numbers = p["dimension_numbers"]
    specs = (tuple(numbers.lhs_spec), tuple(numbers.rhs_spec), tuple(numbers.out_spec))
    if (specs != NHWC or p["feature_group_count"] != 1 or p["batch_group_count"] != 1 or w.const is None
            or set(p["lhs_dilation"]) != {1} or set(p["rhs_dilation"]) != {1} or len(x.shape) != 4):
        raise ConfigError("C export: op conv_general_dilated other than a plain 2-D NHWC conv is not supported")
    x = emitter.dense(x)
    kernel = emitter.array(np.broadcast_to(w.const, w.shape), "float")
    geometry = _geometry(emitter, x.shape[1:3], w.shape[:2], p["window_strides"], p["padding"], shape[1:3])
    out = emitter.buffer("f32", shape)
    emitter.body.append(f"  bnnx_conv_f32({_ptr(x)}, {x.shape[1]}, {x.shape[2]}, {x.shape[3]}, {kernel}, "
                        f"{w.shape[3]}, {geometry}, {_ptr(out)});")
    return out


def pool(emitter, eqn, shape, kind: str) -> Value:
    """A max (or sum) pool over space of an NHWC value (float, int32 sums or bits)."""
    x = emitter.dense(emitter.value(eqn.ins[0]))
    p = eqn.params
    window, strides, pads = p["window_dimensions"], p["window_strides"], p["padding"]
    if (len(x.shape) != 4 or window[0] != 1 or window[3] != 1 or strides[0] != 1 or strides[3] != 1
            or set(p["base_dilation"]) != {1} or set(p["window_dilation"]) != {1}
            or (kind == "sum" and x.dtype != "f32")):
        raise ConfigError(f"C export: op reduce_window_{kind} other than a pool over space is not supported")
    geometry = _geometry(emitter, x.shape[1:3], window[1:3], strides[1:3], pads[1:3], shape[1:3])
    out = emitter.buffer(x.dtype, shape)
    emitter.body.append(f"  bnnx_{kind}pool_{x.dtype}({_ptr(x)}, {x.shape[1]}, {x.shape[2]}, {x.shape[3]}, "
                        f"{geometry}, {_ptr(out)});")
    return out


def fold(emitter, eqn, shape) -> Value:
    """A folded BatchNorm: bit = multiplier·y ≥ threshold per channel of the producer's sums."""
    y = emitter.dense(emitter.value(eqn.ins[0]))
    thresholds = emitter.packed.folds[eqn.params["consumer"]]
    multiplier = emitter.array(np.asarray(thresholds.multiplier, np.int32), "int32_t")
    threshold = emitter.array(np.asarray(thresholds.threshold, np.int32), "int32_t")
    out = emitter.buffer("u8", shape)
    channels = shape[-1]
    emitter.body.append(f"  bnnx_fold_bits({_ptr(y)}, {y.size // channels}, {channels}, {multiplier}, {threshold}, "
                        f"{_ptr(out)});")
    return out


def packed_layer(emitter, eqn, shape) -> Value:
    """A packed Dense or Conv: bits (or real inputs) against the export's words."""
    p = eqn.params
    layer = emitter.packed.layers[p["layer"]]
    x = emitter.dense(emitter.value(eqn.ins[0]))
    words = {name: emitter.array(np.asarray(plane, np.uint32), "uint32_t") for name, plane in layer.planes.items()}
    nonzero = words.get("nonzero", "0")
    cin, n = layer.kernel_shape[-2], layer.kernel_shape[-1]
    out = emitter.buffer("i32" if p["bits"] else "f32", shape)
    a = ""  # the input's packed words
    if p["bits"]:
        a = emitter.buffer("i32", (x.size // cin * words_for(cin),)).storage
        emitter.body.append(f"  bnnx_pack_bits({_ptr(x)}, {x.size // cin}, {cin}, (uint32_t *){a});")
    if p["conv"] is None:
        rows = x.size // cin
        if p["bits"]:
            emitter.body.append(f"  bnnx_xnor_dense((const uint32_t *){a}, {rows}, {words['sign']}, {nonzero}, {n}, "
                                f"{words_for(cin)}, {cin}, {_ptr(out)});")
        else:
            emitter.body.append(f"  bnnx_select_dense({_ptr(x)}, {rows}, {cin}, {words['sign']}, {nonzero}, {n}, "
                                f"{words_for(cin)}, {_ptr(out)});")
    else:
        window, strides, pads = p["conv"]
        geometry = _geometry(emitter, x.shape[1:3], window, strides, pads, shape[1:3])
        if p["bits"]:
            taps = window[0] * window[1]  # the patch row, then per-(channel, tap) counts: BNNX_CONV_SCRATCH_WORDS
            scratch = emitter.buffer("i32", (shape[2] * taps * words_for(cin) + (2 * taps + 1) * n,)).storage
            emitter.body.append(f"  bnnx_xnor_conv((const uint32_t *){a}, {x.shape[1]}, {x.shape[2]}, {cin}, "
                                f"{words['sign']}, {nonzero}, {n}, {geometry}, (uint32_t *){scratch}, {_ptr(out)});")
        else:
            emitter.body.append(f"  bnnx_select_conv({_ptr(x)}, {x.shape[1]}, {x.shape[2]}, {cin}, {words['sign']}, "
                                f"{nonzero}, {n}, {geometry}, {_ptr(out)});")
    if p["bits"]:
        emitter.dumps.append((p["layer"], out.size))
        emitter.body.append(f'  BNNX_DUMP("{p["layer"]}", {_ptr(out)}, {out.size});')
    return out
