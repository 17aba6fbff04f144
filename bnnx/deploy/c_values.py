"""Values of a C export's program and the loops over them.

A value is an arena buffer, the input, or a constant (a NumPy array broadcastable to the value's
shape, so a BatchNorm's per-channel vectors stay per channel); `strides` (in elements, 0 on a
broadcast axis) let broadcasts and transposes be views that elementwise loops read directly.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

C_TYPES = {"f32": "float", "i32": "int32_t", "u8": "uint8_t"}
DTYPES = {np.dtype(np.float32): "f32", np.dtype(np.int32): "i32", np.dtype(np.bool_): "u8"}
ALIGN = 64  # bytes: every arena buffer starts on a cache line (and an AVX-512 vector)


def dtype_of(dtype) -> str:
    from bnnx.errors import ConfigError

    found = DTYPES.get(np.dtype(dtype))
    if found is None:
        raise ConfigError(f"C export: values of dtype {np.dtype(dtype)} are not supported (float32, int32, bool are)")
    return found


def contiguous(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


@dataclasses.dataclass
class Value:
    dtype: str
    shape: tuple
    storage: str  # a C pointer name, or "" for a constant
    strides: tuple = ()
    const: np.ndarray | None = None

    def __post_init__(self):
        self.shape = tuple(int(s) for s in self.shape)
        if not self.strides:
            self.strides = contiguous(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def is_contiguous(self) -> bool:
        return self.const is None and all(s == c for s, c, n in zip(self.strides, contiguous(self.shape), self.shape)
                                          if n > 1)


def const_value(array, shape) -> Value:
    """A constant of logical `shape`, kept as the small broadcastable `array`."""
    array = np.asarray(array)
    if array.dtype.kind in "fiu" and array.dtype not in DTYPES:  # Python scalars in the jaxpr
        array = array.astype(np.float32 if array.dtype.kind == "f" else np.int32)
    array = array.reshape((1,) * (len(shape) - array.ndim) + array.shape)
    strides = tuple(0 if a == 1 and n != 1 else s for a, n, s in zip(array.shape, shape, contiguous(array.shape)))
    return Value(dtype_of(array.dtype), shape, "", strides, array)


def literal(value: Value) -> str | None:
    """A C literal of a one-element constant (None for anything else)."""
    if value.const is None or value.const.size != 1:
        return None
    item = value.const.reshape(()).item()
    if value.dtype == "f32":
        if not math.isfinite(item):
            return f"bnnx_f32_from_bits(0x{np.float32(item).view(np.uint32):08x}u)"
        text = f"{item:.9g}"
        return f"{text}{'' if any(c in text for c in '.en') else '.0'}f"
    return str(int(item))


def element_loop(out: Value, operands: list[Value], expression: str, names: list[str]) -> list[str]:
    """Nested C loops writing `expression` (with {0}, {1}, … for the operands' elements) to every
    element of the contiguous `out`; axes of size 1 are dropped and mergeable axes merged."""
    all_strides = [out.strides] + [v.strides for v in operands]
    axes = [d for d, n in enumerate(out.shape) if n > 1]
    merged: list[tuple[int, list[int]]] = []  # (size, strides per array)
    for d in axes:
        size, strides = out.shape[d], [s[d] for s in all_strides]
        if merged and all(prev == stride * size for prev, stride in zip(merged[-1][1], strides)):
            merged[-1] = (merged[-1][0] * size, strides)
        else:
            merged.append((size, strides))
    lines, indent = [], "  "
    for level, (size, _) in enumerate(merged):
        lines.append(f"{indent}for (int32_t i{level} = 0; i{level} < {size}; ++i{level})")
        indent += "  "

    def index(which: int) -> str:
        terms = [f"i{level} * {strides[which]}" if strides[which] != 1 else f"i{level}"
                 for level, (_, strides) in enumerate(merged) if strides[which] != 0]
        return " + ".join(terms) or "0"

    items = []
    for which, (value, name) in enumerate(zip(operands, names), start=1):
        items.append(literal(value) or f"{name}[{index(which)}]")
    lines.append(f"{indent}{out.storage}[{index(0)}] = {expression.format(*items)};")
    return ["  {"] + lines + ["  }"]
