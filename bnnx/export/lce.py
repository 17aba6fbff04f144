"""`bnnx export RUN --format lce OUT.tflite`: a Larq Compute Engine flatbuffer of a trained run.

The flatbuffer is written directly (`bnnx.export.tflite`), not by LCE's converter, so exporting
needs neither TensorFlow nor LCE. Each layer maps as LCE's converter maps a larq model:

- a binary layer whose inputs are binarized: `LceQuantize` (sign bits, 1 for a negative value,
  32 channels to an int32 word) then `LceBconv2d` (a dense layer as a 1×1 conv on a 1×1 map)
  with float output; its scale and the BatchNorm after it are folded into
  post_activation_multiplier/bias (out = m·(K − 2·popcount(x xor w)) + b), except where a
  max-pool stands between them (BinaryNet): then MAX_POOL_2D and the BN as MUL + ADD follow;
- a real layer: FULLY_CONNECTED / CONV_2D with float weights; a BatchNorm after it: MUL + ADD;
- hardtanh: RELU_N1_TO_1, left out before a binary layer (sign(hardtanh(x)) = sign(x)); relu:
  RELU; max-pool: MAX_POOL_2D on floats.

Covered: the zoo's MLP, ConvNet and BinaryNet with binary weights and activations (W1A1). Other
families (ResNets, ReActNet, ...), ternary or weight-only-binary layers are refused in one line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bnnx.errors import CheckpointError, ConfigError
from bnnx.export import tflite
from bnnx.export.format import Exported, unpack
from bnnx.packed.bits import pack_rows_np

FAMILIES = ("mlp", "convnet", "binarynet")
EPSILON = 1e-5  # bnnx.models.common.batch_norm


class _Mapper:
    """Appends a run's layers to a TFLite graph, one bnnx layer at a time."""

    def __init__(self, exported: Exported):
        self.exported, self.graph = exported, tflite.Graph()
        self.binary_inputs = set(exported.manifest.get("binary_inputs", []))

    def optional(self, layer: str, name: str, collection: str = "params") -> np.ndarray | None:
        value = self.exported.tensors.get(f"{collection}/{layer}/{name}")
        return None if value is None else np.asarray(value, np.float32)

    def param(self, layer: str, name: str, collection: str = "params") -> np.ndarray:
        value = self.optional(layer, name, collection)
        if value is None:
            raise CheckpointError(f"export --format lce: the run has no {collection}/{layer}/{name}; "
                                  "is it a run of the model it names?")
        return value

    def batch_norm_affine(self, name: str):
        """(g, b) with BN(x) = g·x + b, as flax computes it in eval: (x − mean)·(γ/√(var+ε)) + β."""
        g = self.param(name, "scale") / np.sqrt(self.param(name, "var", "batch_stats") + np.float32(EPSILON))
        return g.astype(np.float32), (self.param(name, "bias") - self.param(name, "mean", "batch_stats") * g)

    def is_binary(self, layer: str) -> bool:
        name = f"params/{layer}/kernel"
        if name not in self.exported.planes:
            return False
        if "nonzero" in self.exported.planes[name] or layer not in self.binary_inputs:
            raise ConfigError(f"export --format lce: layer {layer} is ternary or has real inputs; "
                              "LCE runs binary weights with binary activations (W1A1) only")
        return True

    def reshape(self, x: int, shape) -> int:
        return self.graph.op(tflite.RESHAPE, [x, self.graph.constant(np.asarray(shape, np.int32))], shape)

    def layer(self, layer: str, batch_norm: str, x: int, conv: bool, pool: bool = False) -> int:
        """The layer `layer` (a max-pool 2×2 after it with `pool`), then the BatchNorm `batch_norm`,
        on the float tensor x. A binary layer's BN is folded into LceBconv2d where nothing stands
        between them (a max-pool does not commute with a BN of negative scale)."""
        if self.is_binary(layer) and not pool:
            g, b = self.batch_norm_affine(batch_norm)
            return self.binary(layer, x, conv, g, b)
        if self.is_binary(layer):
            y = self.binary(layer, x, conv)
        else:
            y = self.real(layer, x, conv)
        if pool:
            y = self.max_pool(y)
        g, b = self.batch_norm_affine(batch_norm)
        y = self.graph.op(tflite.MUL, [y, self.graph.constant(g)], self.graph.shape(y))
        return self.graph.op(tflite.ADD, [y, self.graph.constant(b)], self.graph.shape(y))

    def real(self, layer: str, x: int, conv: bool) -> int:
        kernel, bias = self.param(layer, "kernel"), self.optional(layer, "bias")
        shape = self.graph.shape(x)
        if not conv:
            inputs = [x, self.graph.constant(np.ascontiguousarray(kernel.T))]
            inputs.append(-1 if bias is None else self.graph.constant(bias))
            return self.graph.op(tflite.FULLY_CONNECTED, inputs, (shape[0], kernel.shape[-1]))
        filters = np.ascontiguousarray(np.moveaxis(kernel, -1, 0))  # (kh, kw, cin, N) → (N, kh, kw, cin)
        bias = np.zeros(kernel.shape[-1], np.float32) if bias is None else bias
        return self.graph.op(tflite.CONV_2D, [x, self.graph.constant(filters), self.graph.constant(bias)],
                             (*shape[:3], kernel.shape[-1]),
                             options={0: ("Int8", tflite.SAME), 1: ("Int32", 1), 2: ("Int32", 1)})

    def binary(self, layer: str, x: int, conv: bool, g=None, b=None) -> int:
        """LceQuantize + LceBconv2d (stride 1, SAME zero padding, as the zoo's convs), its output
        g·(scale·y + bias) + b on the integer sums y (g = 1, b = 0 without a BN to fold)."""
        levels = self.exported.decoded(f"params/{layer}/kernel")
        flat = len(self.graph.shape(x)) == 2
        if flat:
            x = self.reshape(x, (self.graph.shape(x)[0], 1, 1, self.graph.shape(x)[1]))
        levels = levels if conv else levels[None, None]
        cin, n = levels.shape[-2:]
        filters = pack_rows_np(np.moveaxis(levels, -1, 0) < 0).view(np.int32)  # (N, kh, kw, ⌈cin/32⌉)
        batch, height, width, _ = self.graph.shape(x)
        packed = self.graph.op("LceQuantize", [x], (batch, height, width, filters.shape[-1]), np.int32)
        scale = self.exported.tensors.get(f"params/{layer}/kernel_scale", self.optional(layer, "scale"))
        multiplier = np.ones(n, np.float32) if scale is None else np.asarray(scale, np.float32).reshape(n)
        bias = self.optional(layer, "bias")
        bias = np.zeros(n, np.float32) if bias is None else bias
        g = np.ones(n, np.float32) if g is None else g
        b = np.zeros(n, np.float32) if b is None else b
        options = {"channels_in": int(cin), "dilation_height_factor": 1, "dilation_width_factor": 1,
                   "fused_activation_function": 0, "pad_values": 0, "padding": tflite.SAME,
                   "stride_height": 1, "stride_width": 1}
        inputs = [packed, self.graph.constant(filters), self.graph.constant((multiplier * g).astype(np.float32)),
                  self.graph.constant((bias * g + b).astype(np.float32)), -1]
        y = self.graph.op("LceBconv2d", inputs, (batch, height, width, n), options=options)
        return self.reshape(y, (batch, n)) if flat else y

    def activation(self, name: str, x: int, before_binary: bool) -> int:
        if name == "identity" or (name == "hardtanh" and before_binary):
            return x
        codes = {"hardtanh": tflite.RELU_N1_TO_1, "relu": tflite.RELU}
        if name not in codes:
            raise ConfigError(f"export --format lce: activation {name!r} is not covered; "
                              f"covered: {', '.join(['identity', *codes])}")
        return self.graph.op(codes[name], [x], self.graph.shape(x))

    def max_pool(self, x: int) -> int:
        n, h, w, c = self.graph.shape(x)
        options = {0: ("Int8", tflite.VALID), 1: ("Int32", 2), 2: ("Int32", 2), 3: ("Int32", 2), 4: ("Int32", 2)}
        return self.graph.op(tflite.MAX_POOL_2D, [x], (n, h // 2, w // 2, c), options=options)


def _mlp(mapper: _Mapper, model: dict, x: int) -> int:
    hidden, act = list(model.get("hidden", (256, 256))), model.get("activation", "hardtanh")
    x = mapper.reshape(x, (mapper.graph.shape(x)[0], int(np.prod(mapper.graph.shape(x)[1:]))))
    for i in range(len(hidden)):
        x = mapper.layer(f"QuantDense_{i}", f"BatchNorm_{i}", x, conv=False)
        x = mapper.activation(act, x, before_binary=mapper.is_binary(f"QuantDense_{i + 1}"))
    return mapper.layer(f"QuantDense_{len(hidden)}", f"BatchNorm_{len(hidden)}", x, conv=False)


def _binarynet(mapper: _Mapper, model: dict, x: int) -> int:
    from bnnx.models.vgg import CONV_WIDTHS, DENSE_WIDTHS  # the layer count; widths are the stored kernels'

    act = model.get("activation", "hardtanh")
    for i in range(len(CONV_WIDTHS)):
        x = mapper.layer(f"QuantConv_{i}", f"BatchNorm_{i}", x, conv=True, pool=i % 2 == 1)
        following = f"QuantConv_{i + 1}" if i + 1 < len(CONV_WIDTHS) else "QuantDense_0"
        x = mapper.activation(act, x, before_binary=mapper.is_binary(following))
    shape = mapper.graph.shape(x)
    x = mapper.reshape(x, (shape[0], int(np.prod(shape[1:]))))
    for j in range(len(DENSE_WIDTHS)):
        x = mapper.layer(f"QuantDense_{j}", f"BatchNorm_{len(CONV_WIDTHS) + j}", x, conv=False)
        x = mapper.activation(act, x, before_binary=mapper.is_binary(f"QuantDense_{j + 1}"))
    return mapper.layer(f"QuantDense_{len(DENSE_WIDTHS)}", f"BatchNorm_{len(CONV_WIDTHS) + len(DENSE_WIDTHS)}", x,
                        conv=False)


def _convnet(mapper: _Mapper, model: dict, x: int) -> int:
    widths, act = list(model.get("widths", (16, 32, 32))), model.get("activation", "hardtanh")
    for i in range(len(widths)):
        x = mapper.layer(f"QuantConv_{i}", f"BatchNorm_{i}", x, conv=True)
        following = f"QuantConv_{i + 1}" if i + 1 < len(widths) else "QuantDense_0"
        # a max-pool commutes with the sign, so hardtanh stays out before a pooled binary layer too
        x = mapper.activation(act, x, before_binary=mapper.is_binary(following))
        if i > 0:
            x = mapper.max_pool(x)
    shape = mapper.graph.shape(x)
    x = mapper.reshape(x, (shape[0], int(np.prod(shape[1:]))))
    return mapper.layer("QuantDense_0", f"BatchNorm_{len(widths)}", x, conv=False)


BUILDERS = {"mlp": _mlp, "convnet": _convnet, "binarynet": _binarynet}


def lce_bytes(exported: Exported, batch: int = 1) -> bytes:
    """The TFLite flatbuffer of an export, for inputs of `batch` examples in the run's input layout."""
    model = exported.manifest["model"]
    family = model.get("name")
    if family not in BUILDERS:
        raise ConfigError(f"export --format lce covers the model families {', '.join(FAMILIES)}; "
                          f"this run's is {family!r}")
    mapper = _Mapper(exported)
    x = mapper.graph.tensor((batch, *exported.manifest["input_shape"]), name="input")
    mapper.graph.inputs, mapper.graph.outputs = [x], [BUILDERS[family](mapper, model, x)]
    return tflite.serialize(mapper.graph, description=f"bnnx {family} for Larq Compute Engine")


def export_lce(config, run_dir: Path | str, out: Path | str | None = None, batch: int = 1) -> Path:
    """Write the LCE flatbuffer of the run in `run_dir` (default `<run_dir>/model.tflite`)."""
    from bnnx.export.writer import export_run
    from bnnx.io import check_writable, write_bytes

    path = Path(out) if out is not None else Path(run_dir) / "model.tflite"
    check_writable(path, "--out")
    if config.model.name not in BUILDERS:  # refuse before the export's work
        raise ConfigError(f"export --format lce covers the model families {', '.join(FAMILIES)}; "
                          f"this run's is {config.model.name!r}")
    with tempfile.TemporaryDirectory() as scratch:
        exported = unpack(export_run(config, run_dir, Path(scratch) / "export.npz")[0])
    write_bytes(path, lce_bytes(exported, batch))
    return path
