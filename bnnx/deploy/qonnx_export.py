"""`bnnx export RUN --format qonnx OUT.onnx`: the export as a QONNX graph for FINN / hls4ml flows.

Standard ONNX (opset 13) plus QONNX's custom ops (domain `qonnx.custom_op.general`, version 1):
binary weights and activations go through `BipolarQuant` (scale 1: y = +1 where x ≥ 0, else −1),
ternary weights through `Quant` (2 bits, signed, narrow range: {−1, 0, +1}, scale 1, zero point
0). The program is the packed engine's (`bnnx.deploy.c_graph`, traced without BN folding): real
layers as MatMul / Conv, BatchNorm as its eval arithmetic (Sub, Mul, Add on per-channel
constants), activations as Clip / Max / Where, pools as MaxPool. Conv and MaxPool take NCHW, so
each sits between two Transposes (bnnx is NHWC). The graph takes one example (batch 1),
N×H×W×C float32 as the model takes it (normalized), and gives (1, classes) logits.
"""

from __future__ import annotations

import numpy as np

from bnnx.deploy.c_emit import BINARY, Emitter
from bnnx.deploy.c_graph import SIGN, trace
from bnnx.deploy.c_values import Value
from bnnx.errors import ConfigError
from bnnx.packed.bits import unpack_kernel

OPSET = 13
QONNX_DOMAIN = "qonnx.custom_op.general"
ONNX_BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
               "ge": "GreaterOrEqual", "gt": "Greater", "le": "LessOrEqual", "lt": "Less", "eq": "Equal",
               "and": "And", "or": "Or"}
ONNX_UNARY = {"neg": "Neg", "abs": "Abs", "sign": "Sign", "copy": "Identity", "copy_p": "Identity", "not": "Not"}
TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


class OnnxEmitter(Emitter):
    """The program as ONNX nodes; a value's `storage` is its tensor name."""

    def __init__(self, packed):
        super().__init__(packed)
        self.nodes, self.initializers, self.value_infos = [], {}, []

    def node(self, op: str, inputs: list[str], dtype: str, shape, domain: str = "", **attributes) -> Value:
        from onnx import TensorProto, helper

        out = self.buffer(dtype, shape)
        kind = {"f32": TensorProto.FLOAT, "i32": TensorProto.INT32, "u8": TensorProto.BOOL}[dtype]
        self.value_infos.append(helper.make_tensor_value_info(out.storage, kind, list(shape)))
        self.nodes.append(helper.make_node(op, inputs, [out.storage], name=f"{op}_{len(self.nodes)}", domain=domain,
                                           **attributes))
        return out

    def initializer(self, array) -> str:
        name = f"const_{len(self.initializers)}"
        self.initializers[name] = np.asarray(array)
        return name

    def name_of(self, value: Value) -> str:
        if value.const is None:
            return value.storage
        return self.initializer(value.const.astype(np.float32) if value.dtype == "f32" else value.const)

    def dense(self, value: Value) -> Value:
        return Value(value.dtype, value.shape, self.name_of(value)) if value.const is not None else value

    def broadcast(self, value: Value, params, shape) -> Value:
        if value.const is not None:
            return super().broadcast(value, params, shape)
        dims = params["broadcast_dimensions"]
        small = [value.shape[dims.index(d)] if d in dims else 1 for d in range(len(shape))]
        reshaped = self.node("Reshape", [value.storage, self.initializer(np.asarray(small, np.int64))],
                             value.dtype, small)
        return self.node("Expand", [reshaped.storage, self.initializer(np.asarray(shape, np.int64))],
                         value.dtype, shape)

    def elementwise(self, eqn, shape, dtype) -> Value:
        name = eqn.primitive.name
        names = [self.name_of(self.value(node)) for node in eqn.ins]
        if eqn.primitive is SIGN:
            return self.node("BipolarQuant", [names[0], self.initializer(np.float32(1.0))], "f32", shape,
                             domain=QONNX_DOMAIN)
        if name == "convert_element_type":
            from onnx import TensorProto

            to = {"f32": TensorProto.FLOAT, "i32": TensorProto.INT32, "u8": TensorProto.BOOL}[dtype]
            return self.node("Cast", names, dtype, shape, to=to)
        if name == "clamp":
            return self.node("Min", [self.node("Max", names[1::-1], dtype, shape).storage, names[2]], dtype, shape)
        if name == "select_n":
            return self.node("Where", [names[0], names[2], names[1]], dtype, shape)
        if name in ("integer_pow", "square") and eqn.params.get("y", 2) == 2:
            return self.node("Mul", [names[0], names[0]], dtype, shape)
        if name in ONNX_BINARY:
            return self.node(ONNX_BINARY[name], names, dtype, shape)
        if name in ONNX_UNARY:
            return self.node(ONNX_UNARY[name], names, dtype, shape)
        raise ConfigError(f"QONNX export: op {name} is not supported" + (" here" if name in BINARY else ""))

    def op_reshape(self, eqn, shape):
        value = self.dense(self.value(eqn.ins[0]))
        return self.node("Reshape", [value.storage, self.initializer(np.asarray(shape, np.int64))], value.dtype, shape)

    op_squeeze = op_expand_dims = op_reshape

    def op_transpose(self, eqn, shape):
        value = self.dense(self.value(eqn.ins[0]))
        return self.node("Transpose", [value.storage], value.dtype, shape, perm=list(eqn.params["permutation"]))

    def op_dot_general(self, eqn, shape):
        x, w = (self.value(node) for node in eqn.ins)
        if w.const is None or len(w.shape) != 2 or eqn.params["dimension_numbers"][0][1] != (0,):
            raise ConfigError("QONNX export: op dot_general other than a dense layer is not supported")
        return self.node("MatMul", [x.storage, self.initializer(np.broadcast_to(w.const, w.shape).astype(np.float32))],
                         "f32", shape)

    def nchw(self, x: Value, op: str, inputs: list[str], shape, **attributes) -> Value:
        """`op` on NCHW between two Transposes."""
        n, h, w, c = x.shape
        into = self.node("Transpose", [x.storage], x.dtype, (n, c, h, w), perm=list(TO_NCHW))
        ho, wo, co = shape[1], shape[2], shape[3]
        out = self.node(op, [into.storage, *inputs], x.dtype, (n, co, ho, wo), **attributes)
        return self.node("Transpose", [out.storage], x.dtype, shape, perm=list(TO_NHWC))

    def conv(self, x: Value, weights: str, window, strides, pads, shape) -> Value:
        return self.nchw(x, "Conv", [weights], shape, kernel_shape=list(window), strides=list(strides),
                         pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]])

    def op_conv_general_dilated(self, eqn, shape):
        x, w = (self.value(node) for node in eqn.ins)
        p = eqn.params
        if w.const is None or p["feature_group_count"] != 1 or set(p["rhs_dilation"]) != {1}:
            raise ConfigError("QONNX export: op conv_general_dilated other than a plain 2-D conv is not supported")
        kernel = np.broadcast_to(w.const, w.shape).transpose(3, 2, 0, 1).astype(np.float32)  # HWIO → OIHW
        return self.conv(x, self.initializer(kernel), w.shape[:2], p["window_strides"], p["padding"], shape)

    def op_reduce_window_max(self, eqn, shape):
        x = self.dense(self.value(eqn.ins[0]))
        p = eqn.params
        pads = p["padding"][1:3]
        return self.nchw(x, "MaxPool", [], shape, kernel_shape=list(p["window_dimensions"][1:3]),
                         strides=list(p["window_strides"][1:3]), pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]])

    def op_reduce_window_sum(self, eqn, shape):
        raise ConfigError("QONNX export: op reduce_window_sum is not supported")

    def op_fold(self, eqn, shape):
        raise AssertionError("the QONNX program is traced without folds")

    def op_packed(self, eqn, shape):
        """A packed layer: its ±1 (or −1/0/+1) kernel as an initializer through BipolarQuant (Quant)."""
        p = eqn.params
        layer = self.packed.layers[p["layer"]]
        x = self.value(eqn.ins[0])
        levels = unpack_kernel({k: np.asarray(v) for k, v in layer.planes.items()}, layer.kernel_shape)
        if p["conv"] is not None:
            levels = levels.transpose(3, 2, 0, 1)
        weights = self.quantized(levels, "nonzero" in layer.planes)
        if p["conv"] is None:
            return self.node("MatMul", [x.storage, weights], "f32", shape)
        window, strides, pads = p["conv"]
        return self.conv(x, weights, window, strides, pads, shape)

    def quantized(self, levels: np.ndarray, ternary: bool) -> str:
        one = self.initializer(np.float32(1.0))
        if ternary:
            out = self.node("Quant", [self.initializer(levels), one, self.initializer(np.float32(0.0)),
                                      self.initializer(np.float32(2.0))], "f32", levels.shape, domain=QONNX_DOMAIN,
                            signed=1, narrow=1, rounding_mode="ROUND")
        else:
            out = self.node("BipolarQuant", [self.initializer(levels), one], "f32", levels.shape, domain=QONNX_DOMAIN)
        return out.storage


def qonnx_model(model, packed, input_shape, num_classes: int):
    """The onnx ModelProto of a loaded export (`bnnx.packed.engine.load`)."""
    from onnx import TensorProto, helper, numpy_helper

    emitter = OnnxEmitter(packed.replace(folds={}))
    output = emitter.run(trace(model, packed.replace(folds={}), input_shape))
    logits = emitter.node("Identity", [emitter.name_of(output)], "f32", (1, num_classes))
    emitter.nodes[-1].output[0] = "logits"
    graph = helper.make_graph(
        emitter.nodes, "bnnx", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, *input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(logits.shape))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in emitter.initializers.items()],
        value_info=[info for info in emitter.value_infos if info.name != "logits"][:-1])
    onnx_model = helper.make_model(graph, producer_name="bnnx", opset_imports=[
        helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)])
    onnx_model.ir_version = 8
    return onnx_model


def write_qonnx(export_path, out) -> dict:
    """Write the QONNX graph of the export at `export_path` to `out`; returns facts about it."""
    from bnnx.io import write_bytes
    from bnnx.packed.engine import load

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ConfigError("QONNX export needs the onnx package: pip install 'bnnx[qonnx]'") from None
    model, packed, manifest = load(export_path, fold=False)
    onnx_model = qonnx_model(model, packed, tuple(manifest["input_shape"]), manifest["num_classes"])
    write_bytes(out, onnx_model.SerializeToString())
    ops = sorted({node.op_type for node in onnx_model.graph.node})
    return {"nodes": len(onnx_model.graph.node), "ops": ops}


def export_run_qonnx(config, run_dir, out) -> dict:
    """`bnnx export RUN --format qonnx OUT.onnx`."""
    import tempfile
    from pathlib import Path

    from bnnx.export import export_run

    with tempfile.TemporaryDirectory() as tmp:
        path, _ = export_run(config, run_dir, Path(tmp) / "export.npz")
        return write_qonnx(path, out)
