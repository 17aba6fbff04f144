"""A traced program (`c_graph.Program`) as C99: constants, one function body, an arena plan.

Elementwise primitives become loops written here (`c_values.element_loop`); layers, pools and
the packed kernels call `bnnx_runtime.c`. Constants computed only from constants (a BN's
scale·rsqrt(var + ε)) are evaluated here by JAX, so the C code needs no math.h. Arena buffers
are placed by a first-fit scan over their lifetimes (a buffer is free after its last reader).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jax import lax

from bnnx.deploy import c_graph
from bnnx.deploy.c_values import ALIGN, C_TYPES, Value, const_value, dtype_of, element_loop
from bnnx.errors import ConfigError
from bnnx.packed.graph import MARK, _Const

BINARY = {"add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
          "max": "BNNX_MAX({0}, {1})", "min": "BNNX_MIN({0}, {1})", "ge": "({0} >= {1})", "gt": "({0} > {1})",
          "le": "({0} <= {1})", "lt": "({0} < {1})", "eq": "({0} == {1})", "ne": "({0} != {1})",
          "and": "({0} && {1})", "or": "({0} || {1})"}
UNARY = {"neg": "(-{0})", "copy": "{0}", "copy_p": "{0}", "not": "(!{0})", "abs": "BNNX_ABS({0})",
         "sign": "(float)(({0} > 0) - ({0} < 0))", "square": "({0} * {0})", c_graph.SIGN.name: "({0} >= 0.0f)"}
CASTS = {"f32": "(float)({0})", "i32": "(int32_t)({0})", "u8": "(uint8_t)({0} != 0)"}
NHWC = ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))


class Emitter:
    def __init__(self, packed, prefix: str = "bnnx"):
        self.packed, self.prefix = packed, prefix
        self.env: dict[int, Value] = {}
        self.consts: list[str] = []  # C definitions
        self.body: list[str] = []
        self.buffers: dict[str, list] = {}  # name → [bytes, first op, last op]
        self.step = 0
        self.dumps: list[tuple[str, int]] = []
        self.dtypes: dict[str, str] = {}

    # ---- values -----------------------------------------------------------------------
    def value(self, node) -> Value:
        if isinstance(node, _Const):
            return const_value(node.value, np.shape(node.value))
        value = self.env[id(node)]
        if value.storage in self.buffers:
            self.buffers[value.storage][2] = self.step
        return value

    def buffer(self, dtype: str, shape) -> Value:
        name = f"b{len(self.buffers)}"
        self.dtypes[name] = dtype
        self.buffers[name] = [max(4, math.prod(shape) * (1 if dtype == "u8" else 4)), self.step, self.step]
        return Value(dtype, shape, name)

    def scratch(self, words: int) -> str:
        return self.buffer("i32", (words,)).storage

    def array(self, array: np.ndarray, ctype: str) -> str:
        name = f"{self.prefix}_c{len(self.consts)}"
        flat = np.asarray(array).ravel()
        if ctype == "float":
            items = [f"{float(v):.9g}f" if math.isfinite(v) else "0.0f" for v in flat.astype(np.float32)]
        elif ctype == "uint32_t":
            items = [f"0x{int(v):08x}u" for v in flat.astype(np.uint32)]
        else:
            items = [str(int(v)) for v in flat]
        rows = [", ".join(items[i:i + 8]) for i in range(0, len(items), 8)] or ["0"]
        self.consts.append(f"static const {ctype} {name}[{max(1, flat.size)}] = {{\n  " + ",\n  ".join(rows) + "\n};")
        return name

    def dense(self, value: Value) -> Value:
        """`value` as a contiguous buffer (a constant as a static array, a view copied)."""
        if value.const is not None:
            full = np.ascontiguousarray(np.broadcast_to(value.const, value.shape))
            return Value(value.dtype, value.shape, self.array(full, C_TYPES[value.dtype]))
        if value.is_contiguous:
            return value
        out = self.buffer(value.dtype, value.shape)
        self.body += element_loop(out, [value], "{0}", [value.storage])
        return out

    # ---- the program ------------------------------------------------------------------
    def run(self, program: c_graph.Program) -> Value:
        self.env[id(program.input)] = Value("f32", (1, *program.input_shape), "input")
        for self.step, eqn in enumerate(program.eqns, start=1):
            if isinstance(eqn.outs[0], _Const):  # resolved by graph.equations already
                continue
            outs = self.equation(eqn)
            for node, value in zip(eqn.outs, outs):
                self.env[id(node)] = value
        self.step += 1
        return self.value(program.output)

    def equation(self, eqn) -> list[Value]:
        name = eqn.primitive.name
        if eqn.primitive is MARK:
            return [self.value(eqn.ins[0])]
        operands = [self.value(node) for node in eqn.ins]
        if all(v.const is not None for v in operands) and not name.startswith("bnnx_c_"):
            return [self.fold_constant(eqn, operands)]
        out_aval = eqn.outs[0].aval
        shape, dtype = tuple(out_aval.shape), dtype_of(out_aval.dtype) if name != "bnnx_c_packed" else None
        method = getattr(self, "op_" + name.removeprefix("bnnx_c_"), None)
        if method is not None:
            return [method(eqn, shape)]
        if name in BINARY or name in UNARY or name in ("clamp", "select_n", "convert_element_type", "integer_pow"):
            return [self.elementwise(eqn, shape, dtype)]
        raise ConfigError(f"C export: op {name} is not supported by the C runtime")

    def fold_constant(self, eqn, operands: list[Value]) -> Value:
        """An op on constants, evaluated by JAX; elementwise ops and broadcasts keep them small."""
        shape = tuple(eqn.outs[0].aval.shape)
        if eqn.primitive is lax.broadcast_in_dim_p:
            return self.broadcast(operands[0], eqn.params, shape)
        if eqn.primitive.name in BINARY or eqn.primitive.name in UNARY or eqn.primitive.name in (
                "clamp", "select_n", "convert_element_type", "rsqrt", "sqrt", "integer_pow", "exp", "log"):
            common = np.broadcast_shapes(*[np.asarray(v.const).shape for v in operands])
            ins = [jnp.broadcast_to(jnp.asarray(v.const), common) for v in operands]
        else:
            ins = [jnp.asarray(np.broadcast_to(np.asarray(v.const), v.shape)) for v in operands]
        try:
            return const_value(np.asarray(eqn.primitive.bind(*ins, **eqn.params)), shape)
        except (TypeError, ValueError):  # e.g. a pool's window over a broadcast scalar, whose shape the trace drops
            raise ConfigError(f"C export: op {eqn.primitive.name} on constants is not supported by the C runtime "
                              "(average pooling that excludes padding, for one)") from None

    def broadcast(self, value: Value, params, shape) -> Value:
        dims = params["broadcast_dimensions"]
        if value.const is not None:
            small = value.const.reshape([value.const.shape[dims.index(d)] if d in dims else 1
                                         for d in range(len(shape))]) if value.const.ndim else value.const
            return const_value(small, shape)
        strides = [0] * len(shape)
        for source, d in enumerate(dims):
            strides[d] = value.strides[source] if value.shape[source] == shape[d] else 0
        return Value(value.dtype, shape, value.storage, tuple(strides))

    def elementwise(self, eqn, shape, dtype) -> Value:
        name = eqn.primitive.name
        operands = [self.value(node) for node in eqn.ins]
        if name == "convert_element_type":
            expression = CASTS[dtype]
        elif name == "clamp":
            expression = "BNNX_MIN(BNNX_MAX({1}, {0}), {2})"
        elif name == "select_n":
            if len(operands) != 3 or operands[0].dtype != "u8":
                raise ConfigError("C export: op select_n with an integer selector is not supported")
            expression = "({0} ? {2} : {1})"
        elif name == "integer_pow":
            if eqn.params["y"] != 2:
                raise ConfigError(f"C export: op integer_pow with exponent {eqn.params['y']} is not supported")
            expression = "({0} * {0})"
        else:
            expression = BINARY.get(name) or UNARY[name]
        operands = [self.broadcast_rank(v, shape) for v in operands]
        names = [self.array(v.const, C_TYPES[v.dtype]) if v.const is not None and v.const.size > 1 else v.storage
                 for v in operands]
        out = self.buffer(dtype, shape)
        self.body += element_loop(out, operands, expression, names)
        return out

    @staticmethod
    def broadcast_rank(value: Value, shape) -> Value:
        """`value` read at `shape`: scalars, and axes of size 1 (lax broadcasts them implicitly)."""
        if value.shape == tuple(shape):
            return value
        if value.const is not None and value.const.size == 1:
            return const_value(value.const.reshape(()), shape)
        if len(value.shape) != len(shape) or any(a not in (1, b) for a, b in zip(value.shape, shape)):
            raise ConfigError(f"C export: an operand of shape {value.shape} does not match {tuple(shape)}")
        if value.const is not None:
            return const_value(value.const, shape)
        strides = tuple(0 if a != b else s for a, b, s in zip(value.shape, shape, value.strides))
        return Value(value.dtype, shape, value.storage, strides)

    # ---- structural ops: views where possible ------------------------------------------
    def op_broadcast_in_dim(self, eqn, shape):
        return self.broadcast(self.value(eqn.ins[0]), eqn.params, shape)

    def op_reshape(self, eqn, shape):
        value = self.dense(self.value(eqn.ins[0]))
        return Value(value.dtype, shape, value.storage)

    op_squeeze = op_expand_dims = op_reshape

    def op_transpose(self, eqn, shape):
        value = self.value(eqn.ins[0])
        order = eqn.params["permutation"]
        return Value(value.dtype, shape, value.storage, tuple(value.strides[d] for d in order), value.const)

    # ---- layers -----------------------------------------------------------------------
    def op_dot_general(self, eqn, shape):
        from bnnx.deploy.c_layers import dot_general

        return dot_general(self, eqn, shape)

    def op_conv_general_dilated(self, eqn, shape):
        from bnnx.deploy.c_layers import conv

        return conv(self, eqn, shape)

    def op_reduce_window_max(self, eqn, shape):
        from bnnx.deploy.c_layers import pool

        return pool(self, eqn, shape, "max")

    def op_reduce_window_sum(self, eqn, shape):
        from bnnx.deploy.c_layers import pool

        return pool(self, eqn, shape, "sum")

    def op_fold(self, eqn, shape):
        from bnnx.deploy.c_layers import fold

        return fold(self, eqn, shape)

    def op_packed(self, eqn, shape):
        from bnnx.deploy.c_layers import packed_layer

        return packed_layer(self, eqn, shape)

    # ---- the arena --------------------------------------------------------------------
    def place(self) -> tuple[dict[str, int], int]:
        """Byte offsets of the buffers and the arena size: first fit among buffers whose
        lifetimes overlap."""
        offsets, placed, top = {}, [], 0
        for name, (size, first, last) in sorted(self.buffers.items(), key=lambda kv: -kv[1][0]):
            size = -(-size // ALIGN) * ALIGN
            busy = sorted((o, o + s) for o, s, f, la in placed if not (la < first or last < f))
            offset = 0
            for low, high in busy:
                if offset + size <= low:
                    break
                offset = max(offset, high)
            offsets[name] = offset
            placed.append((offset, size, first, last))
            top = max(top, offset + size)
        return offsets, top
