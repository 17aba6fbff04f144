"""A flax NNX model as a linen module, so `bnnx.binarize` and everything after it work unchanged.

`FromNNX(build)` builds the NNX module (`build(rngs=...)`, the user's class, partial or function)
inside the linen call, keeps each NNX variable as the linen variable of the same path and
collection (`nnx.Param` → `params/conv1/kernel`, `nnx.BatchStat` → `batch_stats/...`), and
replaces each `nnx.Linear`, `nnx.LinearGeneral` (so `nnx.MultiHeadAttention`'s projections),
`nnx.Conv` and `nnx.Einsum` by the equivalent linen layer bound at that path, reading the same
kernel. The layers rules, policies, methods, the summary, the export and the packed engine see
are then plain linen layers named by the NNX attribute path (`conv1`, `blocks/0/linear`).

Training mode reaches the model as NNX teaches it (`module.train()` / `module.eval()`), plus a
`train`/`training`/`deterministic` argument and an `rngs` argument where its `__call__` takes one
(flax's MNIST CNN passes `rngs` to its dropout). Normalization layers with an `axis_name` get none:
bnnx's step computes batch statistics over the whole (device-sharded) batch already.
Stateful NNX pieces other than variables (a layer cached on the instance between calls, an
`nnx.Rngs` counter advanced across steps) are rebuilt on every call.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import flax.linen as nn
import jax
from flax import nnx
from flax.nnx import variablelib

NORMS = (nnx.BatchNorm, nnx.LayerNorm, nnx.GroupNorm, nnx.RMSNorm)


def _linen_layer(layer) -> nn.Module | None:
    """The linen layer computing what the NNX `layer` computes from the same kernel and bias."""
    if type(layer) not in (nnx.Conv, nnx.Linear, nnx.LinearGeneral, nnx.Einsum):
        return None
    dtype, param_dtype, precision = layer.dtype, layer.param_dtype, layer.precision
    if type(layer) is nnx.Conv:
        return nn.Conv(layer.out_features, layer.kernel_size, layer.strides, padding=layer.padding,
                       input_dilation=layer.input_dilation, kernel_dilation=layer.kernel_dilation,
                       feature_group_count=layer.feature_group_count, use_bias=layer.use_bias, mask=layer.mask,
                       dtype=dtype, param_dtype=param_dtype, precision=precision, parent=None)
    if type(layer) is nnx.Linear:
        return nn.Dense(layer.out_features, use_bias=layer.use_bias, dtype=dtype, param_dtype=param_dtype,
                        precision=precision, parent=None)
    if type(layer) is nnx.LinearGeneral:
        return nn.DenseGeneral(layer.out_features, axis=layer.axis, batch_dims=tuple(layer.batch_axis),
                               use_bias=layer.use_bias, dtype=dtype, param_dtype=param_dtype, precision=precision,
                               parent=None)
    if type(layer) is nnx.Einsum:
        return nn.Einsum(tuple(layer.kernel_shape), layer.einsum_str, use_bias=layer.bias is not None, dtype=dtype,
                         param_dtype=param_dtype, precision=precision, parent=None)
    return None


class _LinenCall:
    """Stands in an NNX module's attribute for a replaced layer: calls the linen layer."""

    def __init__(self, layer: nn.Module):
        self.layer = layer

    def __call__(self, *args, out_sharding=None, **kwargs):
        # NNX's sharding hint has no linen counterpart; bnnx shards the batch itself (train/devices.py)
        return self.layer(*args, **kwargs)


def _scope_at(scope, path: tuple) -> Any:
    for key in path:
        scope = scope.push(str(key), reuse=True)
    return scope


def _value(variable):
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _replace(parent, key, value) -> None:
    if isinstance(key, int) or not hasattr(parent, str(key)):
        parent[key] = value
    else:
        object.__setattr__(parent, key, value)


def _call_flags(module, train: bool, rngs: nnx.Rngs) -> dict[str, Any]:
    parameters = inspect.signature(type(module).__call__).parameters
    flags: dict[str, Any] = {"rngs": rngs} if "rngs" in parameters else {}
    for name, value in (("train", train), ("training", train), ("is_training", train), ("deterministic", not train)):
        if name in parameters:
            return {**flags, name: value}
    return flags


class FromNNX(nn.Module):
    """The NNX module `build(**options, rngs=nnx.Rngs(...))` returns (without `rngs` when
    `takes_rngs` is false), as a linen module called like `model(x, train=...)` (see the module doc)."""

    build: Callable[..., Any]
    options: tuple[tuple[str, Any], ...] = ()  # keyword arguments of `build`, hashable: a model compiles once
    takes_rngs: bool = True

    @nn.compact
    def __call__(self, x, *args, train: bool = False, **kwargs):
        initializing = self.is_initializing()
        key = lambda name: self.make_rng(name) if self.has_rng(name) else jax.random.key(0)  # noqa: E731
        rngs = nnx.Rngs(params=key("params") if initializing else jax.random.key(0),
                        dropout=key("dropout"), default=key("dropout"))
        options = dict(self.options)
        module = self.build(**options, rngs=rngs) if self.takes_rngs else self.build(**options)
        linen_vars = self._bind_state(module, initializing)
        self._replace_layers(module)
        module.train() if train else module.eval()
        out = module(x, *args, **kwargs, **_call_flags(module, train, rngs))
        for (collection, _), (variable, linen_var) in linen_vars.items():
            if collection != "params" and self.is_mutable_collection(collection):
                linen_var.value = _value(variable)
        return out

    def _bind_state(self, module, initializing: bool) -> dict:
        """Each NNX variable ↔ the linen variable of its path; values flow linen → NNX."""
        linen_vars = {}
        for path, variable in nnx.to_flat_state(nnx.state(module, nnx.Not(nnx.RngState))):
            collection = variablelib.variable_name_from_type(type(variable), allow_register=True)
            scope, name = _scope_at(self.scope, path[:-1]), str(path[-1])
            if not initializing and not scope.has_variable(collection, name):
                continue  # a packed layer's kernel (bnnx.packed keeps it as bits): its linen layer is replaced too
            value = _value(variable)
            linen_var = scope.variable(collection, name, lambda v=value: v)
            if not initializing:
                variable.set_value(linen_var.value) if hasattr(variable, "set_value") else setattr(
                    variable, "value", linen_var.value)
            linen_vars[(collection, path)] = (variable, linen_var)
        return linen_vars

    def _replace_layers(self, module) -> None:
        nodes = dict(nnx.iter_graph(module))
        for path, node in nodes.items():
            if isinstance(node, NORMS) and getattr(node, "axis_name", None) is not None:
                object.__setattr__(node, "axis_name", None)
                object.__setattr__(node, "axis_index_groups", None)
            linen = _linen_layer(node) if path else None
            if linen is not None:
                _replace(nodes[path[:-1]], path[-1], _LinenCall(linen.clone(parent=_scope_at(self.scope, path))))


def from_instance(module) -> FromNNX:
    """An NNX module instance as a linen module whose initial variables are the instance's own."""
    graphdef, state = nnx.split(module)
    return FromNNX(functools.partial(nnx.merge, graphdef, state), takes_rngs=False)
