"""Quantized Dense and Conv layers, the quantization policy, and the layer record.

A layer is *binary-bound* when the policy binarizes its role and path. A binary-bound
layer owns three variables in the `quant` collection:

- `kernel_mask`: precision mask, a scalar (per layer: PPT, ILB) or an array shaped like the
  kernel (per weight: RPR); 1 = the forward pass sees q(w), 0 = it sees w;
- `input_mask`: scalar, 1 = inputs go through the input quantizer (binary activations);
- `beta`: runtime value for quantizers that anneal (BMD's tanh mirror map).

Mixing is `where(mask, q(w), w)`, so one compiled graph serves every phase.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from bnnx.errors import ConfigError, check
from bnnx.quantizers import SCALINGS, Identity, SignSTE, mean_abs_scale

ROLES = ("first", "hidden", "last", "shortcut")


@dataclasses.dataclass(frozen=True)
class QuantPolicy:
    """Which layers are binary-bound and how they quantize.

    `real_roles` and `real_paths` (regexes over the '/'-joined module path) name the layers
    that stay real; by default the first and last layers and the shortcut projections.
    """

    kernel_quantizer: Any = SignSTE()
    input_quantizer: Any = SignSTE()
    scaling: str = "none"
    real_roles: tuple[str, ...] = ("first", "last", "shortcut")
    real_paths: tuple[str, ...] = ()

    def __post_init__(self):
        check(self.scaling in SCALINGS, f"unknown scaling '{self.scaling}'; valid options: {', '.join(SCALINGS)}")
        bad = set(self.real_roles) - set(ROLES)
        check(not bad, f"unknown layer role {sorted(bad)}; valid options: {', '.join(ROLES)}")

    def binarizes(self, role: str, path: str) -> bool:
        if isinstance(self.kernel_quantizer, Identity) or role in self.real_roles:
            return False
        return not any(re.search(pattern, path) for pattern in self.real_paths)

    def quantizes_inputs(self, role: str, path: str) -> bool:
        return self.binarizes(role, path) and not isinstance(self.input_quantizer, Identity)


FULL_PRECISION = QuantPolicy(kernel_quantizer=Identity(), input_quantizer=Identity())


def _ones():
    return jnp.ones((), jnp.float32)


class _Quantized(nn.Module):
    """Shared quantization logic of QuantDense and QuantConv (which declare `policy` and `role`)."""

    def _quantize(self, kernel: jax.Array, x: jax.Array, train: bool):
        path = "/".join(self.scope.path)
        if not self.policy.binarizes(self.role, path):
            return kernel, x
        kernel_mask = self.variable("quant", "kernel_mask", _ones).value
        beta = self.variable("quant", "beta", _ones).value
        check(kernel_mask.shape in ((), kernel.shape),
              f"precision mask of {path} has shape {kernel_mask.shape}; expected () or {kernel.shape}")
        quantized = self.policy.kernel_quantizer(kernel, beta=beta, train=train) * self._scale(kernel)
        kernel = jnp.where(kernel_mask > 0, quantized, kernel)
        if self.policy.quantizes_inputs(self.role, path):
            input_mask = self.variable("quant", "input_mask", _ones).value
            x = jnp.where(input_mask > 0, self.policy.input_quantizer(x, beta=beta, train=train), x)
        return kernel, x

    def _scale(self, kernel: jax.Array):
        if self.policy.scaling == "mean_abs":
            return mean_abs_scale(kernel)
        if self.policy.scaling == "learned":
            return self.param("scale", nn.initializers.ones, (kernel.shape[-1],))
        return 1.0


class QuantDense(_Quantized):
    features: int
    policy: QuantPolicy = QuantPolicy()
    role: str = "hidden"
    use_bias: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x, train: bool = False):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        kernel, x = self._quantize(kernel, x, train)
        y = jnp.dot(x, kernel)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class QuantConv(_Quantized):
    features: int
    policy: QuantPolicy = QuantPolicy()
    role: str = "hidden"
    kernel_size: Sequence[int] = (3, 3)
    strides: Sequence[int] = (1, 1)
    padding: Any = "SAME"
    feature_group_count: int = 1
    use_bias: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x, train: bool = False):
        in_features = x.shape[-1] // self.feature_group_count
        shape = (*self.kernel_size, in_features, self.features)
        kernel = self.param("kernel", self.kernel_init, shape)
        kernel, x = self._quantize(kernel, x, train)
        padding = self.padding if isinstance(self.padding, str) else [(p, p) for p in self.padding]
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), tuple(self.strides), padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.feature_group_count)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y


class LayerRecord(NamedTuple):
    """One quantizable layer as seen in a forward pass, in call order."""

    path: tuple[str, ...]
    kind: str  # "dense" | "conv"
    role: str
    binary: bool
    binary_inputs: bool
    kernel_shape: tuple[int, ...]
    output_shape: tuple[int, ...]  # without the batch axis

    @property
    def name(self) -> str:
        return "/".join(self.path)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per example."""
        spatial = 1
        for size in self.output_shape[:-1]:
            spatial *= size
        weights = 1
        for size in self.kernel_shape:
            weights *= size
        return spatial * weights


def record_layers(model: nn.Module, example: jax.Array) -> list[LayerRecord]:
    """Every QuantDense/QuantConv of `model` in forward order, from an abstract init."""
    records: dict[tuple, LayerRecord] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if isinstance(module, _Quantized) and context.method_name == "__call__":
            path = tuple(module.scope.path)
            x = args[0]
            kind = "conv" if isinstance(module, QuantConv) else "dense"
            in_features = x.shape[-1] // getattr(module, "feature_group_count", 1)
            kshape = (*module.kernel_size, in_features, module.features) if kind == "conv" else (x.shape[-1], module.features)
            name = "/".join(path)
            records.setdefault(path, LayerRecord(
                path, kind, module.role, module.policy.binarizes(module.role, name),
                module.policy.quantizes_inputs(module.role, name), tuple(kshape), tuple(out.shape[1:])))
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(lambda: model.init(jax.random.key(0), example, train=False))
    return list(records.values())


# ---- the quant collection and the label tree -------------------------------------------

def flat(tree) -> dict[tuple, Any]:
    return traverse_util.flatten_dict(tree) if tree else {}


def unflat(flat_tree: dict[tuple, Any]):
    return traverse_util.unflatten_dict(flat_tree)


def binary_layer_paths(quant) -> list[tuple[str, ...]]:
    return sorted({path[:-1] for path in flat(quant)})


def param_labels(params, quant) -> Any:
    """'binary' for the kernel of every binary-bound layer, 'real' for everything else."""
    binary_layers = set(binary_layer_paths(quant))
    return unflat({path: "binary" if path[-1] == "kernel" and path[:-1] in binary_layers else "real"
                   for path in flat(params)})


def set_quant(quant, name: str, value: Callable[[tuple], Any] | Any, layers=None):
    """Return `quant` with leaf `name` of each layer (or of `layers`) replaced.

    `value` is an array/scalar, or a function of the layer path returning one.
    """
    out = dict(flat(quant))
    for path in binary_layer_paths(quant):
        if (path + (name,)) not in out or (layers is not None and path not in layers):
            continue
        new = value(path) if callable(value) else value
        out[path + (name,)] = jnp.asarray(new, jnp.float32)
    return unflat(out)


def check_masks(quant, params) -> None:
    """Each kernel mask is a scalar or shaped like its kernel."""
    flat_params = flat(params)
    for path, mask in flat(quant).items():
        if path[-1] != "kernel_mask":
            continue
        kernel = flat_params[path[:-1] + ("kernel",)]
        if jnp.shape(mask) not in ((), kernel.shape):
            raise ConfigError(f"precision mask of {'/'.join(path[:-1])} has shape {jnp.shape(mask)}; "
                              f"expected () or {kernel.shape}")
