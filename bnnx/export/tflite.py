"""A minimal TFLite flatbuffer writer (schema v3): the few tables a Larq Compute Engine model needs
(Model, SubGraph, Tensor, Buffer, Operator, OperatorCode), written with the `flatbuffers`
package's Builder so that exporting needs neither TensorFlow nor LCE. Field indices follow
tensorflow/lite/schema/schema.fbs; custom ops carry their options as a FlexBuffer map.
"""

from __future__ import annotations

import dataclasses

import numpy as np

FLOAT32, INT32 = 0, 2  # TensorType
TYPES = {np.dtype(np.float32): FLOAT32, np.dtype(np.int32): INT32}
ADD, AVERAGE_POOL_2D, CONCATENATION, CONV_2D, FULLY_CONNECTED, MAX_POOL_2D, MUL = 0, 1, 2, 3, 9, 17, 18
RELU, RELU_N1_TO_1, RESHAPE, CUSTOM, PAD, MEAN, STRIDED_SLICE, PRELU = 19, 20, 22, 32, 34, 40, 45, 54
# BuiltinOptions union members, for the ops above that take options
OPTIONS = {CONV_2D: 1, AVERAGE_POOL_2D: 5, MAX_POOL_2D: 5, FULLY_CONNECTED: 8, CONCATENATION: 10, ADD: 11,
           RESHAPE: 17, MUL: 21, PAD: 22, MEAN: 27, STRIDED_SLICE: 32}
SAME, VALID = 0, 1  # Padding


@dataclasses.dataclass
class _Op:
    code: int | str  # a builtin code, or a custom op's name
    inputs: list[int]
    outputs: list[int]
    options: dict  # builtin options: field index → (kind, value); custom: the FlexBuffer map


@dataclasses.dataclass
class Graph:
    """One subgraph under construction: tensors (constants hold their data), ops in order."""

    tensors: list[tuple[tuple, int, np.ndarray | None, str]] = dataclasses.field(default_factory=list)
    ops: list[_Op] = dataclasses.field(default_factory=list)
    inputs: list[int] = dataclasses.field(default_factory=list)
    outputs: list[int] = dataclasses.field(default_factory=list)

    def tensor(self, shape, dtype=np.float32, name: str = "") -> int:
        self.tensors.append((tuple(int(s) for s in shape), TYPES[np.dtype(dtype)], None, name))
        return len(self.tensors) - 1

    def constant(self, value: np.ndarray, name: str = "") -> int:
        value = np.ascontiguousarray(value)
        self.tensors.append((value.shape, TYPES[value.dtype], value, name))
        return len(self.tensors) - 1

    def shape(self, index: int) -> tuple:
        return self.tensors[index][0]

    def op(self, code, inputs, out_shape, out_dtype: type = np.float32, options=None) -> int:
        out = self.tensor(out_shape, out_dtype)
        self.ops.append(_Op(code, list(inputs), [out], options or {}))
        return out


def _vector(builder, values, prepend: str, width: int) -> int:
    builder.StartVector(width, len(values), width)
    for value in reversed(values):
        getattr(builder, prepend)(value)
    return builder.EndVector()


def _table(builder, fields: dict) -> int:
    """A table from {field index: (kind, value)}: kind 'offset' (a child written before) or a
    scalar Prepend…Slot name such as 'Int32'."""
    builder.StartObject(max(fields, default=-1) + 1)
    for index, (kind, value) in sorted(fields.items()):
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(index, value, 0)
        else:
            getattr(builder, f"Prepend{kind}Slot")(index, value, None)  # None: always written
    return builder.EndObject()


def _offsets(builder, offsets: list[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _buffer(builder, data: np.ndarray | None) -> int:
    if data is None:
        return _table(builder, {})
    raw = data.astype(data.dtype.newbyteorder("<")).tobytes()
    builder.StartVector(1, len(raw), 16)  # TFLite aligns buffer data to 16 bytes
    builder.head -= len(raw)
    builder.Bytes[builder.head:builder.head + len(raw)] = raw
    return _table(builder, {0: ("offset", builder.EndVector(len(raw)))})


def _custom_options(options: dict) -> bytes:
    from flatbuffers import flexbuffers

    return bytes(flexbuffers.Dumps(options))


def serialize(graph: Graph, description: str = "bnnx") -> bytes:
    """The graph as a TFLite model file."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    codes = list(dict.fromkeys(op.code for op in graph.ops))
    code_tables = []
    for code in codes:
        if isinstance(code, str):
            fields = {0: ("Int8", CUSTOM), 1: ("offset", builder.CreateString(code)), 2: ("Int32", 1),
                      3: ("Int32", CUSTOM)}
        else:
            fields = {0: ("Int8", code), 2: ("Int32", 1), 3: ("Int32", code)}
        code_tables.append(_table(builder, fields))
    constants = [data for _, _, data, _ in graph.tensors if data is not None]
    buffers = [_buffer(builder, None)] + [_buffer(builder, data) for data in constants]  # 0: the empty buffer
    tensors, buffer_index = [], 0
    for shape, dtype, data, name in graph.tensors:
        buffer_index += data is not None
        fields = {0: ("offset", _vector(builder, list(shape), "PrependInt32", 4)), 1: ("Int8", dtype),
                  2: ("Uint32", buffer_index if data is not None else 0)}
        if name:  # only the graph's input and output are named: names are metadata the size budget pays for
            fields[3] = ("offset", builder.CreateString(name))
        tensors.append(_table(builder, fields))
    ops = []
    for op in graph.ops:
        fields = {0: ("Uint32", codes.index(op.code)),
                  1: ("offset", _vector(builder, op.inputs, "PrependInt32", 4)),
                  2: ("offset", _vector(builder, op.outputs, "PrependInt32", 4))}
        if isinstance(op.code, str):
            raw = _custom_options(op.options)
            fields[5] = ("offset", builder.CreateByteVector(raw))
            fields[6] = ("Int8", 0)  # FLEXBUFFERS
        elif op.code in OPTIONS:
            fields[3] = ("Uint8", OPTIONS[op.code])
            fields[4] = ("offset", _table(builder, op.options))
        ops.append(_table(builder, fields))
    subgraph = _table(builder, {0: ("offset", _offsets(builder, tensors)),
                                1: ("offset", _vector(builder, graph.inputs, "PrependInt32", 4)),
                                2: ("offset", _vector(builder, graph.outputs, "PrependInt32", 4)),
                                3: ("offset", _offsets(builder, ops)), 4: ("offset", builder.CreateString("main"))})
    model = _table(builder, {0: ("Uint32", 3), 1: ("offset", _offsets(builder, code_tables)),
                             2: ("offset", _offsets(builder, [subgraph])),
                             3: ("offset", builder.CreateString(description)),
                             4: ("offset", _offsets(builder, buffers))})
    builder.Finish(model, file_identifier=b"TFL3")
    return bytes(builder.Output())
