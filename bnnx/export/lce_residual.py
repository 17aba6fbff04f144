"""`bnnx export --format lce` of the zoo's residual families: the ResNets, Bi-Real Net-18 and
ReActNet-A (bnnx/models/resnet.py, reactnet.py), op by op as `bnnx.export.lce` describes.

Module names follow flax's auto-naming: a block's `QuantConv_i`/`BatchNorm_i` count in the order
the model builds them, so a projection shortcut's conv comes after the block's own convs.
"""

from __future__ import annotations

from bnnx.export import tflite
from bnnx.export.lce_graph import Mapper
from bnnx.models import model_class, model_options
from bnnx.models.resnet import BasicBlock, Bottleneck, scale_width


def _options(model: dict) -> dict:
    return {**model_options(model["name"]), **model}


def _block_strides(stage_sizes) -> list[int]:
    """Each block's stride, as the ResNets and Bi-Real Net lay them out: 2 at the first block of
    every stage after the first."""
    return [2 if stage > 0 and block == 0 else 1 for stage, blocks in enumerate(stage_sizes) for block in range(blocks)]


def _stem(mapper: Mapper, x: int, options: dict, act: str) -> int:
    """conv (3×3/1 with cifar_stem, else 7×7/2) → BN → act (→ max-pool 3×3/2 without cifar_stem)."""
    cifar = options["cifar_stem"]
    x = mapper.layer("QuantConv_0", x, "BatchNorm_0", conv=True, stride=1 if cifar else 2)
    x = mapper.activation(act, x, prelu="PReLU_0")
    return x if cifar else mapper.max_pool(x, size=3, stride=2, padded=True)


def _classifier(mapper: Mapper, x: int) -> int:
    return mapper.layer("QuantDense_0", mapper.global_average(x), conv=False)


def _needs_projection(mapper: Mapper, x: int, y: int, stride: int) -> bool:
    return stride != 1 or mapper.shape(x)[-1] != mapper.shape(y)[-1]


def _resnet_block(mapper: Mapper, block: str, x: int, strides: tuple[int, ...], act: str) -> int:
    """conv → BN per stride in `strides` with act between them, plus the shortcut (a 1×1 conv + BN
    where the shape changes), → act."""
    y = x
    for i, stride in enumerate(strides):
        y = mapper.layer(f"{block}/QuantConv_{i}", y, f"{block}/BatchNorm_{i}", conv=True, stride=stride)
        if i + 1 < len(strides):
            following = mapper.is_binary(f"{block}/QuantConv_{i + 1}")
            y = mapper.activation(act, y, before_binary=following, prelu=f"{block}/PReLU_{i}")
    n = len(strides)
    if _needs_projection(mapper, x, y, max(strides)):
        x = mapper.layer(f"{block}/QuantConv_{n}", x, f"{block}/BatchNorm_{n}", conv=True, stride=max(strides))
    return mapper.activation(act, mapper.add(y, x), prelu=f"{block}/PReLU_{n - 1}")


# a block's convs' strides, from the block's stride (the stride sits on the 3×3 conv)
BLOCK_STRIDES = {BasicBlock: lambda stride: (stride, 1), Bottleneck: lambda stride: (1, stride, 1)}


def _resnet(mapper: Mapper, model: dict, x: int) -> int:
    cls, options = model_class(model["name"]), _options(model)
    x = _stem(mapper, x, options, options["activation"])
    for index, stride in enumerate(_block_strides(cls.stage_sizes)):
        strides = BLOCK_STRIDES[cls.block_cls](stride)
        x = _resnet_block(mapper, f"{cls.block_cls.__name__}_{index}", x, strides, options["activation"])
    return _classifier(mapper, x)


def _bireal_block(mapper: Mapper, block: str, x: int, stride: int, act: str) -> int:
    """BN(conv3×3(sign x)) + shortcut (avg-pool 2×2/2 where strided, → conv1×1 → BN where the
    shape changes), → act."""
    y = mapper.layer(f"{block}/QuantConv_0", x, f"{block}/BatchNorm_0", conv=True, stride=stride)
    if _needs_projection(mapper, x, y, stride):
        x = mapper.pool(tflite.AVERAGE_POOL_2D, x, 2, 2) if stride != 1 else x
        x = mapper.layer(f"{block}/QuantConv_1", x, f"{block}/BatchNorm_1", conv=True)
    return mapper.activation(act, mapper.add(y, x), prelu=f"{block}/PReLU_0")


def _birealnet(mapper: Mapper, model: dict, x: int) -> int:
    cls, options = model_class(model["name"]), _options(model)
    x = _stem(mapper, x, options, "identity")  # the sign is the nonlinearity
    for index, stride in enumerate(_block_strides(cls.stage_sizes)):
        x = _bireal_block(mapper, f"BiRealBlock_{index}", x, stride, options["activation"])
    return _classifier(mapper, x)


def _rprelu(mapper: Mapper, module: str, x: int, act: str) -> int:
    """RPReLU: shift → activation → shift. Its outer shift is built first, so flax names it
    LearnableShift_0 and the inner one, applied first, LearnableShift_1."""
    x = mapper.shift(f"{module}/LearnableShift_1", x)
    x = mapper.activation(act, x, prelu=f"{module}/PReLU_0")
    return mapper.shift(f"{module}/LearnableShift_0", x)


def _react_block(mapper: Mapper, block: str, x: int, stride: int, features: int, act: str) -> int:
    """RSign (a shift before the conv's LceQuantize) → conv3×3 → BN (+ x, avg-pooled where strided)
    → RPReLU, then RSign → conv1×1 → BN (+ that), twice and concatenated where the width doubles,
    → RPReLU."""
    width = mapper.shape(x)[-1]
    y = mapper.layer(f"{block}/QuantConv_0", mapper.shift(f"{block}/LearnableShift_0", x), f"{block}/BatchNorm_0",
                     conv=True, stride=stride)
    y = _rprelu(mapper, f"{block}/RPReLU_0", mapper.add(y, mapper.pool(tflite.AVERAGE_POOL_2D, x, 2, 2)
                                                          if stride != 1 else x), act)
    shifted = mapper.shift(f"{block}/LearnableShift_1", y)
    halves = [mapper.add(mapper.layer(f"{block}/QuantConv_{i}", shifted, f"{block}/BatchNorm_{i}", conv=True), y)
              for i in range(1, features // width + 1)]
    return _rprelu(mapper, f"{block}/RPReLU_1", mapper.concatenate(halves) if len(halves) > 1 else halves[0], act)


def _reactnet(mapper: Mapper, model: dict, x: int) -> int:
    from bnnx.models.reactnet import reactnet_widths

    options = _options(model)
    widths = reactnet_widths(scale_width(32, options["width_multiplier"]))
    x = mapper.layer("QuantConv_0", x, "BatchNorm_0", conv=True, stride=1 if options["cifar_stem"] else 2)
    for index, (previous, width) in enumerate(zip(widths, widths[1:])):
        # as ReActNetA: the width doubles with a stride-2 block, except at the first block
        stride = 2 if width != previous and previous != widths[0] else 1
        x = _react_block(mapper, f"ReActBlock_{index}", x, stride, width, options["activation"])
    return _classifier(mapper, x)


RESIDUAL_BUILDERS = {"resnet20": _resnet, "resnet18": _resnet, "resnet50": _resnet, "birealnet18": _birealnet,
                     "reactnet_a": _reactnet}
