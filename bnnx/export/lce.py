"""`bnnx export RUN --format lce OUT.tflite`: a Larq Compute Engine flatbuffer of a trained run.

The flatbuffer is written directly (`bnnx.export.tflite`), not by LCE's converter, so exporting
needs neither TensorFlow nor LCE. Each layer maps as LCE's converter maps a larq model
(`bnnx.export.lce_graph` holds the ops, `lce_residual` the residual families):

- a binary layer whose inputs are binarized: `LceQuantize` (sign bits, 1 for a negative value,
  32 channels to an int32 word) then `LceBconv2d` (a dense layer as a 1×1 conv on a 1×1 map)
  with float output and zero padding (pad_values 0: a padded tap counts 0, as bnnx's conv pads
  sign(x) with zeros); its scale and the BatchNorm after it are folded into
  post_activation_multiplier/bias (out = m·(K − 2·popcount(x xor w)) + b), except where a
  max-pool stands between them (BinaryNet): then MAX_POOL_2D and the BN as MUL + ADD follow;
- a strided binary 3×3 conv whose padding TFLite's SAME does not reproduce (on an even size SAME
  pads after, the zoo's torchvision layout before): LceBconv2d at stride 1, then STRIDED_SLICE;
- a real layer: FULLY_CONNECTED / CONV_2D with float weights (PAD + VALID where SAME pads
  otherwise); a BatchNorm after it: MUL + ADD;
- hardtanh: RELU_N1_TO_1, left out before a binary layer (sign(hardtanh(x)) = sign(x)); relu:
  RELU; PReLU: PRELU; max-pool: MAX_POOL_2D on floats (a padded 3×3/2 one as a stride-1 SAME
  pool, then STRIDED_SLICE); avg-pool: AVERAGE_POOL_2D; global average pool: MEAN;
- a residual sum: ADD; ReActNet's learnable shifts: ADD (before LceQuantize for RSign; ADD,
  PRELU, ADD for RPReLU); its concatenated halves: CONCATENATION.

Covered: the zoo's MLP, ConvNet, BinaryNet, ResNets, Bi-Real Net-18 and ReActNet-A with binary
weights and activations (W1A1). Other families (GoogLeNet, ViT, external models), ternary or
weight-only-binary layers (the ResNets' default) are refused in one line.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bnnx.errors import ConfigError
from bnnx.export import tflite
from bnnx.export.format import Exported, unpack
from bnnx.export.lce_graph import Mapper
from bnnx.export.lce_residual import RESIDUAL_BUILDERS


def _mlp(mapper: Mapper, model: dict, x: int) -> int:
    hidden, act = list(model.get("hidden", (256, 256))), model.get("activation", "hardtanh")
    x = mapper.flatten(x)
    for i in range(len(hidden)):
        x = mapper.layer(f"QuantDense_{i}", x, f"BatchNorm_{i}", conv=False)
        x = mapper.activation(act, x, before_binary=mapper.is_binary(f"QuantDense_{i + 1}"))
    return mapper.layer(f"QuantDense_{len(hidden)}", x, f"BatchNorm_{len(hidden)}", conv=False)


def _binarynet(mapper: Mapper, model: dict, x: int) -> int:
    from bnnx.models.vgg import CONV_WIDTHS, DENSE_WIDTHS  # the layer count; widths are the stored kernels'

    act = model.get("activation", "hardtanh")
    for i in range(len(CONV_WIDTHS)):
        x = mapper.layer(f"QuantConv_{i}", x, f"BatchNorm_{i}", conv=True, pool=i % 2 == 1)
        following = f"QuantConv_{i + 1}" if i + 1 < len(CONV_WIDTHS) else "QuantDense_0"
        x = mapper.activation(act, x, before_binary=mapper.is_binary(following))
    x = mapper.flatten(x)
    for j in range(len(DENSE_WIDTHS)):
        x = mapper.layer(f"QuantDense_{j}", x, f"BatchNorm_{len(CONV_WIDTHS) + j}", conv=False)
        x = mapper.activation(act, x, before_binary=mapper.is_binary(f"QuantDense_{j + 1}"))
    return mapper.layer(f"QuantDense_{len(DENSE_WIDTHS)}", x, f"BatchNorm_{len(CONV_WIDTHS) + len(DENSE_WIDTHS)}",
                        conv=False)


def _convnet(mapper: Mapper, model: dict, x: int) -> int:
    widths, act = list(model.get("widths", (16, 32, 32))), model.get("activation", "hardtanh")
    for i in range(len(widths)):
        x = mapper.layer(f"QuantConv_{i}", x, f"BatchNorm_{i}", conv=True)
        following = f"QuantConv_{i + 1}" if i + 1 < len(widths) else "QuantDense_0"
        # a max-pool commutes with the sign, so hardtanh stays out before a pooled binary layer too
        x = mapper.activation(act, x, before_binary=mapper.is_binary(following))
        if i > 0:
            x = mapper.max_pool(x)
    x = mapper.flatten(x)
    return mapper.layer("QuantDense_0", x, f"BatchNorm_{len(widths)}", conv=False)


BUILDERS = {"mlp": _mlp, "convnet": _convnet, "binarynet": _binarynet, **RESIDUAL_BUILDERS}


def check_family(family) -> None:
    if family not in BUILDERS:
        raise ConfigError(f"export --format lce covers the model families {', '.join(BUILDERS)}; "
                          f"this run's is {family!r}")


def lce_bytes(exported: Exported, batch: int = 1) -> bytes:
    """The TFLite flatbuffer of an export, for inputs of `batch` examples in the run's input layout."""
    model = exported.manifest["model"]
    family = model.get("name")
    check_family(family)
    mapper = Mapper(exported)
    x = mapper.graph.tensor((batch, *exported.manifest["input_shape"]), name="input")
    mapper.graph.inputs, mapper.graph.outputs = [x], [BUILDERS[family](mapper, model, x)]
    return tflite.serialize(mapper.graph, description=f"bnnx {family} for Larq Compute Engine")


def export_lce(config, run_dir: Path | str, out: Path | str | None = None, batch: int = 1) -> Path:
    """Write the LCE flatbuffer of the run in `run_dir` (default `<run_dir>/model.tflite`)."""
    from bnnx.export.writer import export_run
    from bnnx.io import check_writable, write_bytes

    path = Path(out) if out is not None else Path(run_dir) / "model.tflite"
    check_writable(path, "--out")
    check_family(config.model.name)  # refuse before the export's work
    with tempfile.TemporaryDirectory() as scratch:
        exported = unpack(export_run(config, run_dir, Path(scratch) / "export.npz")[0])
    write_bytes(path, lce_bytes(exported, batch))
    return path
