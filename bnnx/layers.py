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


def quantize_operands(owner, policy: QuantPolicy, role: str, path: str, kernel: jax.Array, x: jax.Array,
                      train: bool):
    """(kernel, inputs) as the forward pass of a binary-bound layer sees them.

    `owner` (a bound module or its scope) holds the layer's `quant` variables and learned scale.
    """
    if not policy.binarizes(role, path):
        return kernel, x
    kernel_mask = owner.variable("quant", "kernel_mask", _ones).value
    beta = owner.variable("quant", "beta", _ones).value
    check(kernel_mask.shape in ((), kernel.shape),
          f"precision mask of {path} has shape {kernel_mask.shape}; expected () or {kernel.shape}")
    quantized = policy.kernel_quantizer(kernel, beta=beta, train=train) * _scale(owner, policy, kernel)
    kernel = jnp.where(kernel_mask > 0, quantized, kernel)
    if policy.quantizes_inputs(role, path):
        input_mask = owner.variable("quant", "input_mask", _ones).value
        x = jnp.where(input_mask > 0, policy.input_quantizer(x, beta=beta, train=train), x)
    return kernel, x


def _scale(owner, policy: QuantPolicy, kernel: jax.Array):
    if policy.scaling == "mean_abs":
        return mean_abs_scale(kernel)
    if policy.scaling == "learned":
        return owner.param("scale", nn.initializers.ones, (kernel.shape[-1],))
    return 1.0


class _Quantized(nn.Module):
    """Shared quantization logic of QuantDense and QuantConv (which declare `policy` and `role`)."""

    def _quantize(self, kernel: jax.Array, x: jax.Array, train: bool):
        return quantize_operands(self, self.policy, self.role, "/".join(self.path), kernel, x, train)


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
    kernel_levels: int | None = 2  # of its kernel quantizer: 2 binary, 3 ternary

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


_RECORDERS: list[dict] = []  # open `record_layers` calls; layers that are not _Quantized report here


def report_layer(record: LayerRecord) -> None:
    """Called by a quantizable layer that `record_layers` cannot recognise by its class
    (`bnnx.binarize`'s intercepted flax layers)."""
    for records in _RECORDERS:
        records.setdefault(record.path, record)


def _quant_record(module: _Quantized, x, out) -> LayerRecord:
    path = tuple(module.path)
    kind = "conv" if isinstance(module, QuantConv) else "dense"
    in_features = x.shape[-1] // getattr(module, "feature_group_count", 1)
    kshape = (*module.kernel_size, in_features, module.features) if kind == "conv" else (x.shape[-1], module.features)
    name = "/".join(path)
    return LayerRecord(path, kind, module.role, module.policy.binarizes(module.role, name),
                       module.policy.quantizes_inputs(module.role, name), tuple(kshape), tuple(out.shape[1:]),
                       module.policy.kernel_quantizer.levels)


def record_layers(model: nn.Module, example: jax.Array) -> list[LayerRecord]:
    """Every quantizable layer of `model` in forward order, from an abstract init."""
    records: dict[tuple, LayerRecord] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, _Quantized) and context.method_name == "__call__":
            record = _quant_record(context.module, args[0], out)
            records.setdefault(record.path, record)
        return out

    _RECORDERS.append(records)
    try:
        with nn.intercept_methods(interceptor):
            jax.eval_shape(lambda: model.init(jax.random.key(0), example, train=False))
    finally:
        _RECORDERS.pop()
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
