"""The ops of `bnnx export --format lce`: a `Mapper` appends a run's layers to a TFLite graph, one
bnnx layer at a time, as LCE's converter maps a larq model (the mapping: `bnnx.export.lce`)."""

from __future__ import annotations

import numpy as np

from bnnx.errors import CheckpointError, ConfigError
from bnnx.export import tflite
from bnnx.export.format import Exported
from bnnx.packed.bits import pack_rows_np

EPSILON = 1e-5  # bnnx.models.common.batch_norm
PADDINGS = {"SAME": tflite.SAME, "VALID": tflite.VALID}


def window_padding(size, window, stride: int) -> str:
    """How TFLite reproduces a window sliding at `stride`, padded by window // 2 on each side as
    the zoo pads (torchvision's layout, flax's SAME at stride 1): "VALID" for a 1×1 window,
    "SAME" where TFLite's SAME pads alike, else "explicit" (at stride 2 on an even size, SAME puts
    its one padded row after the input, torchvision before it)."""
    if all(k == 1 for k in window):
        return "VALID"
    for n, k in zip(size, window):
        out = -(-n // stride)
        before = max((out - 1) * stride + k - n, 0) // 2
        if out != (n + 2 * (k // 2) - k) // stride + 1 or before != k // 2:
            return "explicit"
    return "SAME"


def output_size(size, window, stride: int, padding: str) -> tuple[int, ...]:
    if padding == "VALID":
        return tuple((n - k) // stride + 1 for n, k in zip(size, window))
    return tuple(-(-n // stride) for n in size)


class Mapper:
    """A TFLite graph under construction plus the run's tensors it reads."""

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

    def shape(self, x: int) -> tuple:
        return self.graph.shape(x)

    def reshape(self, x: int, shape) -> int:
        return self.graph.op(tflite.RESHAPE, [x, self.graph.constant(np.asarray(shape, np.int32))], shape)

    def flatten(self, x: int) -> int:
        return self.reshape(x, (self.shape(x)[0], int(np.prod(self.shape(x)[1:]))))

    def add(self, x: int, y: int) -> int:
        """x + y: two tensors of one shape, or a tensor and a per-channel constant's index."""
        return self.graph.op(tflite.ADD, [x, y], self.shape(x))

    def shift(self, module: str, x: int) -> int:
        """ReActNet's LearnableShift `module`: x + a per-channel constant."""
        return self.add(x, self.graph.constant(self.param(module, "shift")))

    def affine(self, x: int, batch_norm: str) -> int:
        """The BatchNorm `batch_norm` on its own: MUL + ADD."""
        g, b = self.batch_norm_affine(batch_norm)
        y = self.graph.op(tflite.MUL, [x, self.graph.constant(g)], self.shape(x))
        return self.add(y, self.graph.constant(b))

    def layer(self, layer: str, x: int, batch_norm: str | None = None, *, conv: bool, pool: bool = False,
              stride: int = 1) -> int:
        """The layer `layer` (a max-pool 2×2 after it with `pool`), then the BatchNorm `batch_norm`
        if any, on the float tensor x. A binary layer's BN is folded into LceBconv2d where nothing
        stands between them (a max-pool does not commute with a BN of negative scale)."""
        if self.is_binary(layer) and not pool:
            g, b = self.batch_norm_affine(batch_norm) if batch_norm else (None, None)
            return self.binary(layer, x, conv, g, b, stride)
        y = self.binary(layer, x, conv, stride=stride) if self.is_binary(layer) else self.real(layer, x, conv, stride)
        if pool:
            y = self.max_pool(y)
        return self.affine(y, batch_norm) if batch_norm else y

    def real(self, layer: str, x: int, conv: bool, stride: int = 1) -> int:
        kernel, bias = self.param(layer, "kernel"), self.optional(layer, "bias")
        if not conv:
            inputs = [x, self.graph.constant(np.ascontiguousarray(kernel.T))]
            inputs.append(-1 if bias is None else self.graph.constant(bias))
            return self.graph.op(tflite.FULLY_CONNECTED, inputs, (self.shape(x)[0], kernel.shape[-1]))
        padding = window_padding(self.shape(x)[1:3], kernel.shape[:2], stride)
        if padding == "explicit":  # zeros, as the float conv pads
            x, padding = self.pad(x, [k // 2 for k in kernel.shape[:2]]), "VALID"
        filters = np.ascontiguousarray(np.moveaxis(kernel, -1, 0))  # (kh, kw, cin, N) → (N, kh, kw, cin)
        bias = np.zeros(kernel.shape[-1], np.float32) if bias is None else bias
        batch, *size, _ = self.shape(x)
        out = (batch, *output_size(size, kernel.shape[:2], stride, padding), kernel.shape[-1])
        options = {0: ("Int8", PADDINGS[padding]), 1: ("Int32", stride), 2: ("Int32", stride)}
        return self.graph.op(tflite.CONV_2D, [x, self.graph.constant(filters), self.graph.constant(bias)], out,
                             options=options)

    def binary(self, layer: str, x: int, conv: bool, g=None, b=None, stride: int = 1) -> int:
        """LceQuantize + LceBconv2d (float output; padded taps count 0: SAME with pad_values 0), its
        output g·(scale·y + bias) + b on the integer sums y (g = 1, b = 0 without a BN to fold).
        Where SAME pads otherwise than the zoo, it runs at stride 1 and is subsampled: a binary
        tensor cannot take an explicit zero padding (a padded 0 would binarize to +1)."""
        levels = self.exported.decoded(f"params/{layer}/kernel")
        flat = len(self.shape(x)) == 2
        if flat:
            x = self.reshape(x, (self.shape(x)[0], 1, 1, self.shape(x)[1]))
        levels = levels if conv else levels[None, None]
        cin, n = levels.shape[-2:]
        filters = pack_rows_np(np.moveaxis(levels, -1, 0) < 0).view(np.int32)  # (N, kh, kw, ⌈cin/32⌉)
        batch, height, width, _ = self.shape(x)
        padding = window_padding((height, width), levels.shape[:2], stride)
        conv_stride = 1 if padding == "explicit" else stride
        padding = "SAME" if padding == "explicit" else padding
        packed = self.graph.op("LceQuantize", [x], (batch, height, width, filters.shape[-1]), np.int32)
        multiplier, bias = self.post_activation(layer, n, g, b)
        options = {"channels_in": int(cin), "dilation_height_factor": 1, "dilation_width_factor": 1,
                   "fused_activation_function": 0, "pad_values": 0, "padding": PADDINGS[padding],
                   "stride_height": conv_stride, "stride_width": conv_stride}
        inputs = [packed, self.graph.constant(filters), self.graph.constant(multiplier), self.graph.constant(bias), -1]
        out = (batch, *output_size((height, width), levels.shape[:2], conv_stride, padding), n)
        y = self.graph.op("LceBconv2d", inputs, out, options=options)
        y = self.subsample(y, stride) if conv_stride != stride else y
        return self.reshape(y, (batch, n)) if flat else y

    def post_activation(self, layer: str, n: int, g, b) -> tuple[np.ndarray, np.ndarray]:
        """LceBconv2d's post_activation_multiplier and _bias: the layer's scale and bias, then g·y + b."""
        scale = self.exported.tensors.get(f"params/{layer}/kernel_scale", self.optional(layer, "scale"))
        multiplier = np.ones(n, np.float32) if scale is None else np.asarray(scale, np.float32).reshape(n)
        bias = self.optional(layer, "bias")
        bias = np.zeros(n, np.float32) if bias is None else bias
        g = np.ones(n, np.float32) if g is None else g
        b = np.zeros(n, np.float32) if b is None else b
        return (multiplier * g).astype(np.float32), (bias * g + b).astype(np.float32)

    def activation(self, name: str, x: int, before_binary: bool = False, prelu: str = "") -> int:
        """The zoo's activation `name` (`prelu`: the PReLU module holding its slopes)."""
        if name == "identity" or (name == "hardtanh" and before_binary):
            return x
        if name == "prelu":
            return self.graph.op(tflite.PRELU, [x, self.graph.constant(self.param(prelu, "slope"))], self.shape(x))
        codes = {"hardtanh": tflite.RELU_N1_TO_1, "relu": tflite.RELU}
        if name not in codes:
            raise ConfigError(f"export --format lce: activation {name!r} is not covered; "
                              f"covered: {', '.join(['identity', *codes, 'prelu'])}")
        return self.graph.op(codes[name], [x], self.shape(x))

    def max_pool(self, x: int, size: int = 2, stride: int = 2, padded: bool = False) -> int:
        """A max-pool (`padded`: by size // 2 on each side, which TFLite's SAME leaves out of the max,
        as flax's -inf padding does; subsampled from stride 1 where SAME pads otherwise)."""
        padding = window_padding(self.shape(x)[1:3], (size, size), stride) if padded else "VALID"
        if padding == "explicit":
            return self.subsample(self.pool(tflite.MAX_POOL_2D, x, size, 1, "SAME"), stride)
        return self.pool(tflite.MAX_POOL_2D, x, size, stride, padding)

    def pool(self, code: int, x: int, size: int, stride: int, padding: str = "VALID") -> int:
        n, *spatial, c = self.shape(x)
        options = {0: ("Int8", PADDINGS[padding]), 1: ("Int32", stride), 2: ("Int32", stride),
                   3: ("Int32", size), 4: ("Int32", size)}
        out = (n, *output_size(spatial, (size, size), stride, padding), c)
        return self.graph.op(code, [x], out, options=options)

    def global_average(self, x: int) -> int:
        """The mean over height and width: MEAN, as TensorFlow converts GlobalAveragePooling2D."""
        n, _, _, c = self.shape(x)
        return self.graph.op(tflite.MEAN, [x, self.graph.constant(np.asarray([1, 2], np.int32))], (n, c))

    def concatenate(self, xs: list[int]) -> int:
        n, h, w, _ = self.shape(xs[0])
        channels = sum(self.shape(x)[-1] for x in xs)
        return self.graph.op(tflite.CONCATENATION, xs, (n, h, w, channels), options={0: ("Int32", 3)})

    def pad(self, x: int, spatial) -> int:
        """Zeros around the height and width: spatial[0] rows and spatial[1] columns on each side."""
        pads = np.asarray([[0, 0], *[[p, p] for p in spatial], [0, 0]], np.int32)
        shape = tuple(int(n + 2 * p) for n, p in zip(self.shape(x), [0, *spatial, 0]))
        return self.graph.op(tflite.PAD, [x, self.graph.constant(pads)], shape)

    def subsample(self, x: int, stride: int) -> int:
        """Every stride-th row and column from the first: a strided op's outputs from its stride-1 run."""
        shape = self.shape(x)
        begin, end = np.zeros(4, np.int32), np.asarray(shape, np.int32)
        strides = np.asarray([1, stride, stride, 1], np.int32)
        out = (shape[0], -(-shape[1] // stride), -(-shape[2] // stride), shape[3])
        inputs = [x, *(self.graph.constant(v) for v in (begin, end, strides))]
        return self.graph.op(tflite.STRIDED_SLICE, inputs, out)
