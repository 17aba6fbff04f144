"""torchvision state dicts → bnnx variables, for the RPR paper's baselines (torchvision v0.4.0's
ResNet-18, ResNet-50 and GoogLeNet; the current IMAGENET1K_V1 weights are those).

Read from a `.safetensors` file with the `safetensors` numpy API: no pickle is loaded. A `.pth`
converts in one line (in an environment with torch):

    python -c "import torch, safetensors.torch as st; st.save_file(torch.load('W.pth'), 'W.safetensors')"

Layouts: torch convs are OIHW (→ HWIO), dense weights (out, in) (→ (in, out)); BN's weight/bias/
running_mean/running_var → scale/bias/mean/var. bnnx's ResNets pad every conv by k // 2 on each
side and the stem's max-pool by 1, as torch does (not JAX's asymmetric SAME), and use BN eps 1e-5
as torchvision. GoogLeNet: torchvision's BasicConv2d uses BN eps 1e-3, which is folded into the
running variance (var + 1e-3 − 1e-5), exact in evaluation; its ceil-mode max-pools equal bnnx's
SAME pools on inputs whose sizes halve evenly (224×224, 64×64); `transform_input` (on for the
pretrained weights) is the model option of the same name; the auxiliary heads (aux1, aux2) are
dropped, as torchvision drops them in evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnnx.errors import CheckpointError, ConfigError

ARCHS = ("resnet18", "resnet50", "googlenet")
BN_EPS = 1e-5  # bnnx's (bnnx.models.common.batch_norm)
GOOGLENET_BN_EPS = 1e-3  # torchvision's BasicConv2d
RESNET_BLOCKS = {"resnet18": ((2, 2, 2, 2), 2), "resnet50": ((3, 4, 6, 3), 3)}  # blocks per stage, convs per block
INCEPTIONS = ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c", "inception4d",
              "inception4e", "inception5a", "inception5b")
# bnnx's ConvBN_k inside an Inception (construction order) → torchvision's branch
INCEPTION_UNITS = ("branch1", "branch2.1", "branch2.0", "branch3.1", "branch3.0", "branch4.1")


def layer_map(arch: str) -> list[tuple[str, tuple[str, ...], str]]:
    """(torchvision prefix, bnnx module path, kind) for every layer with weights; kind is conv,
    bn or dense."""
    if arch == "googlenet":
        return _googlenet_map()
    if arch not in RESNET_BLOCKS:
        raise ConfigError(f"unknown architecture '{arch}'; valid options: {', '.join(ARCHS)}")
    stages, convs = RESNET_BLOCKS[arch]
    block = "BasicBlock" if convs == 2 else "Bottleneck"
    out = [("conv1", ("QuantConv_0",), "conv"), ("bn1", ("BatchNorm_0",), "bn")]
    index = 0
    for stage, blocks in enumerate(stages):
        for b in range(blocks):
            name, torch = f"{block}_{index}", f"layer{stage + 1}.{b}"
            for k in range(convs):
                out += [(f"{torch}.conv{k + 1}", (name, f"QuantConv_{k}"), "conv"),
                        (f"{torch}.bn{k + 1}", (name, f"BatchNorm_{k}"), "bn")]
            if b == 0 and (stage > 0 or convs == 3):  # the projection shortcut where the shape changes
                out += [(f"{torch}.downsample.0", (name, f"QuantConv_{convs}"), "conv"),
                        (f"{torch}.downsample.1", (name, f"BatchNorm_{convs}"), "bn")]
            index += 1
    return out + [("fc", ("QuantDense_0",), "dense")]


def _googlenet_map() -> list[tuple[str, tuple[str, ...], str]]:
    out = []
    stems = [(f"conv{i}", (f"conv{i}",)) for i in (1, 2, 3)]
    branches = [(f"{name}.{branch}", (name, f"ConvBN_{k}"))
                for name in INCEPTIONS for k, branch in enumerate(INCEPTION_UNITS)]
    for torch, path in stems + branches:
        out += [(f"{torch}.conv", (*path, "QuantConv_0"), "conv"), (f"{torch}.bn", (*path, "BatchNorm_0"), "bn")]
    return out + [("fc", ("QuantDense_0",), "dense")]


def to_variables(arch: str, state: dict[str, np.ndarray]) -> dict:
    """bnnx {"params", "batch_stats"} (nested dicts of float32 arrays) from a torchvision state dict."""
    params, stats, used = {}, {}, set()
    bn_shift = GOOGLENET_BN_EPS - BN_EPS if arch == "googlenet" else 0.0

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise CheckpointError(f"the {arch} state dict has no '{key}' (is it torchvision's {arch}?)")
        used.add(key)
        return np.asarray(state[key], np.float32)

    for torch, path, kind in layer_map(arch):
        if kind == "conv":
            _put(params, path, {"kernel": take(f"{torch}.weight").transpose(2, 3, 1, 0)})
        elif kind == "dense":
            _put(params, path, {"kernel": take(f"{torch}.weight").T, "bias": take(f"{torch}.bias")})
        else:
            _put(params, path, {"scale": take(f"{torch}.weight"), "bias": take(f"{torch}.bias")})
            _put(stats, path, {"mean": take(f"{torch}.running_mean"), "var": take(f"{torch}.running_var") + bn_shift})
            used.add(f"{torch}.num_batches_tracked")
    unused = sorted(k for k in state if k not in used and not k.startswith(("aux1.", "aux2.")))
    if unused:
        raise CheckpointError(f"the state dict has keys torchvision's {arch} does not: {', '.join(unused[:3])}")
    return {"params": params, "batch_stats": stats}


def num_classes(variables: dict) -> int:
    """The classes of the imported classifier: the width of its fc layer (1000 for ImageNet's)."""
    return int(np.shape(variables["params"]["QuantDense_0"]["kernel"])[-1])


def _put(tree: dict, path: tuple[str, ...], leaves: dict) -> None:
    for part in path:
        tree = tree.setdefault(part, {})
    tree.update(leaves)


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a .safetensors file, as numpy arrays (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no weights file {path}")
    if path.suffix != ".safetensors":
        raise ConfigError(f"{path} is not a .safetensors file; "
                          "convert a .pth first (see `bnnx import torchvision --help`)")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: {' '.join(str(error).split())[:200]}") from None
