"""The program a C export runs: the packed engine's own forward pass, traced once for one example.

The run's flax model is traced (`jax.make_jaxpr`) under an interceptor that mirrors the packed
engine (`bnnx.packed.engine`): a packed layer becomes one `packed` primitive on its input bits
(or real inputs) giving its sums, its input bits come from the layer's input quantizer (`sign`:
every two-level quantizer's eval forward is sign(x) with sign(0) = +1, so the bit is x ≥ 0) or,
where the engine folds a BatchNorm (its `Link`s and `SignThresholds`), from the producer's integer
sums (`fold`: multiplier·y ≥ threshold). Everything else (real layers, BN, activations, pools,
scales) stays as JAX's own primitives, which `bnnx.deploy.c_emit` writes as C loops.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.core import ShapedArray  # pyright: ignore[reportPrivateImportUsage]
from jax.extend.core import Primitive

from bnnx.errors import ConfigError
from bnnx.packed import kernels
from bnnx.packed.engine import Engine, PackedModel, folded_links, run_engine
from bnnx.packed.graph import MARK, equations, mark
from bnnx.packed.layer import scaled, sums_shape, takes_bits


def _primitive(name: str, abstract):
    primitive = Primitive(name)
    primitive.def_abstract_eval(abstract)
    return primitive


SIGN = _primitive("bnnx_c_sign", lambda x: ShapedArray(x.shape, jnp.bool_))
FOLD = _primitive("bnnx_c_fold", lambda y, consumer: ShapedArray(y.shape, jnp.bool_))
PACKED = _primitive("bnnx_c_packed", lambda x, layer, shape, bits, conv: ShapedArray(
    shape, jnp.int32 if bits else jnp.float32))


class _Tracer(Engine):
    """The packed engine's interceptor, with each packed layer and folded link as one primitive."""

    def __call__(self, next_fun, args, kwargs, context):
        module = context.module
        path = "/".join(module.scope.path) if context.method_name == "__call__" else None
        layer = self.packed.layers.get(path) if path is not None else None
        if path is None or layer is None or not self._packs(module):
            return next_fun(*args, **kwargs)
        geometry, call = self._geometry(module, path), self._call(path)
        policy: Any
        bits, policy = takes_bits(geometry, path, layer), geometry.policy
        if call in self.links:
            link = self.links[call]
            y = self.sums[link.producer]
            for pool in link.pools:
                y = pool(y)
            x = FOLD.bind(y, consumer=path)
            for op in link.on_bits:
                x = op(x)
        elif bits:
            x = SIGN.bind(args[0])
        elif layer.binary_inputs and policy.quantizes_inputs(geometry.role, path):
            raise ConfigError(f"C export: layer {path} has a {type(policy.input_quantizer).__name__} "
                              "input quantizer; only two-level (sign) inputs or real inputs are supported")
        else:
            x = args[0]
        conv = None
        if geometry.conv:
            pads = kernels.conv_pads(x.shape[1:3], geometry.kernel_size, geometry.strides, geometry.padding)
            conv = (tuple(geometry.kernel_size), tuple(geometry.strides), tuple(tuple(p) for p in pads))
        y = PACKED.bind(x, layer=path, shape=tuple(sums_shape(geometry, layer, x)), bits=bits, conv=conv)
        if call in self.producers:
            self.sums[call] = y
        return scaled(layer, y)

    @staticmethod
    def _packs(module) -> bool:
        from bnnx.binarizer import layer_kind
        from bnnx.layers import _Quantized

        return isinstance(module, _Quantized) or bool(layer_kind(module))


@dataclasses.dataclass
class Program:
    """A traced program: its equations (graph._Eqn, calls inlined, constants resolved), its input
    node and output node."""

    eqns: list
    input: object
    output: object
    input_shape: tuple
    links: tuple


def trace(model, packed: PackedModel, input_shape) -> Program:
    """The program of `model` on one example of `input_shape` (H, W, C), batch 1."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    links = folded_links(model, packed, x)

    def forward(x):
        out = run_engine(_Tracer(model, packed, links), mark(x, "input", ()))
        if not isinstance(out, jax.Array) or out.ndim != 2:
            raise ConfigError("C export: the model must return one (batch, classes) array of logits")
        return mark(out, "output", ())

    eqns = equations(jax.make_jaxpr(forward)(x))
    ends = {eqn.params["tag"][0]: eqn for eqn in eqns if eqn.primitive is MARK and eqn.params["tag"][1] == ()}
    return Program(_live(eqns, ends["output"].ins[0]), ends["input"].ins[0], ends["output"].ins[0],
                   tuple(input_shape), links)


def _live(eqns, output) -> list:
    """The equations the output depends on (the float path a folded BN replaces is dropped)."""
    needed, kept = {id(output)}, []
    for eqn in reversed(eqns):
        if any(id(node) in needed for node in eqn.outs):
            kept.append(eqn)
            needed.update(id(node) for node in eqn.ins)
    return kept[::-1]
