"""Where a BatchNorm can be folded, read off the engine's own program (its jaxpr).

The engine traces the model once with identity markers (`mark`) on every packed layer's integer
sums ("producer"), on every packed layer's input that it turns into sign bits ("consumer"), and on
the input and output of every BatchNorm it runs in eval mode. A `Link` is proven when, in that
jaxpr, the consumer's input is reached from a BN's output only through

- exact elementwise ops with constant operands (max, min, clamp: `hardtanh`, ReLU, `jnp.clip`;
  copies): they are replayed on the threshold table, so they need no sign argument; they never
  decrease, so max-pools commute with them and with the sign;
- max-pools (sign(max v) = max sign(v): an OR of the bits) and reshapes, replayed on the bits;

and the BN's input is the producer's sums (as float32, scaled) directly or through max-pools over
space only (replayed on the integer sums, valid where no channel's scale is negative, see `fold`).
Anything else on the way (a residual add, a PReLU with a learned slope, a concatenation, an
average-pool) leaves that consumer on the float path; the BN's other consumers always stay on it.
Calls (jit, custom_jvp/vjp, remat) are inlined; control flow stays opaque.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np
from jax import lax
from jax.extend.core import Jaxpr, Literal, Primitive

MARK = Primitive("bnnx_packed_mark")
MARK.def_impl(lambda x, tag: x)
MARK.def_abstract_eval(lambda x, tag: x)

CALLS = ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "remat2", "checkpoint")
EXACT_ELEMENTWISE = (lax.max_p, lax.min_p, lax.clamp_p)
ON_BITS = (lax.reduce_window_max_p, lax.reshape_p, lax.squeeze_p, lax.transpose_p)

Call = tuple  # (module path, index of the call): a module called twice is two calls


def mark(x, kind: str, call: Call):
    """x, tagged in the jaxpr as `kind` ("producer", "consumer", "bn_in", "bn_out") of `call`."""
    return MARK.bind(x, tag=(kind, call))


@dataclasses.dataclass(frozen=True)
class Replay:
    """A primitive with its parameters, applied again to integer sums or to bits."""

    primitive: Primitive
    params: tuple

    def __call__(self, x):
        return self.primitive.bind(x, **dict(self.params))


@dataclasses.dataclass(frozen=True)
class ElementOp:
    """An exact elementwise op; `operands` holds None for the value and floats for constants."""

    primitive: Primitive
    operands: tuple

    def __call__(self, v):
        return self.primitive.bind(*[v if c is None else np.asarray(c, v.dtype) for c in self.operands])


@dataclasses.dataclass(frozen=True)
class Link:
    """The consumer's input bits are the sign of `elementwise`(BN(producer's scaled sums after
    `pools`)), then `on_bits`."""

    producer: Call
    batch_norm: Call
    consumer: Call
    pools: tuple[Replay, ...]
    elementwise: tuple[ElementOp, ...]
    on_bits: tuple[Replay, ...]


class _Node:
    __slots__ = ("aval",)

    def __init__(self, aval):
        self.aval = aval


class _Const:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = np.asarray(value)


class _Eqn(NamedTuple):
    primitive: Primitive
    ins: list
    outs: list
    params: dict


def _callee(eqn):
    if eqn.primitive.name not in CALLS:
        return None
    sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))
    jaxpr = sub if isinstance(sub, Jaxpr) else getattr(sub, "jaxpr", None)
    if jaxpr is None or len(jaxpr.invars) != len(eqn.invars) or len(jaxpr.outvars) != len(eqn.outvars):
        return None
    return jaxpr, getattr(sub, "consts", ())


def _constant(eqn, ins):
    """The value of a cast or broadcast of a constant (how jnp passes a scalar to max/min)."""
    if len(ins) != 1 or not isinstance(ins[0], _Const):
        return None
    if eqn.primitive is lax.convert_element_type_p:
        return _Const(ins[0].value.astype(eqn.params["new_dtype"]))
    return _Const(ins[0].value) if eqn.primitive is lax.broadcast_in_dim_p and ins[0].value.ndim == 0 else None


def equations(closed) -> list[_Eqn]:
    """The jaxpr's equations with calls inlined, each variable a fresh node (a call's body may be
    shared by several call sites), constants resolved where they are literals or cast literals."""
    found: list[_Eqn] = []

    def inline(jaxpr, env):
        read = lambda v: _Const(v.val) if isinstance(v, Literal) else env[v]  # noqa: E731
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            callee = _callee(eqn)
            if callee is not None:
                body, consts = callee
                outs = inline(body, {**dict(zip(body.constvars, map(_Const, consts))), **dict(zip(body.invars, ins))})
            else:
                constant = _constant(eqn, ins)
                outs = [constant] if constant is not None else [_Node(v.aval) for v in eqn.outvars]
                found.append(_Eqn(eqn.primitive, ins, outs, eqn.params))
            env.update(zip(eqn.outvars, outs))
        return [read(v) for v in jaxpr.outvars]

    jaxpr = closed.jaxpr
    inline(jaxpr, {**dict(zip(jaxpr.constvars, map(_Const, closed.consts))),
                   **{v: _Node(v.aval) for v in jaxpr.invars}})
    return found


def _scalar(node) -> float | None:
    if not isinstance(node, _Const) or node.value.size == 0 or np.any(node.value != node.value.flat[0]):
        return None
    return float(node.value.flat[0])


def _value_operand(eqn):
    """The single non-constant operand of `eqn`, or None."""
    values = [node for node in eqn.ins if isinstance(node, _Node)]
    return values[0] if len(values) == 1 else None


def _step(eqn):
    """(operand, ElementOp | Replay | None) for an op a sign bit can be traced back through
    (None: it changes nothing), or None where it cannot."""
    value = _value_operand(eqn)
    if value is None:
        return None
    if eqn.primitive is lax.copy_p or (eqn.primitive is lax.convert_element_type_p
                                       and eqn.params["new_dtype"] == value.aval.dtype):
        return value, None
    if eqn.primitive in EXACT_ELEMENTWISE:
        constants = [None if node is value else _scalar(node) for node in eqn.ins]
        if any(c is None or np.isnan(c) for node, c in zip(eqn.ins, constants) if node is not value):
            return None
        return value, ElementOp(eqn.primitive, tuple(constants))
    if eqn.primitive in ON_BITS and len(eqn.ins) == 1:
        return value, Replay(eqn.primitive, tuple(sorted(eqn.params.items())))
    return None


def _spatial_pool(eqn) -> bool:
    """A max-pool over space only, without padding: it commutes with a non-decreasing map per channel."""
    params = eqn.params
    return (eqn.primitive is lax.reduce_window_max_p and params["window_dimensions"][-1] == 1
            and params["window_strides"][-1] == 1 and all(p == (0, 0) for p in params["padding"])
            and set(params["base_dilation"]) == {1} and set(params["window_dilation"]) == {1})


def _tag(eqn) -> tuple[Any, Any]:  # (kind, call) of a mark, else (None, None)
    return eqn.params["tag"] if eqn.primitive is MARK else (None, None)


def _to_batch_norm(start, made_by):
    """(BN call, elementwise ops, ops on bits) from a consumer's input back to a BN's output."""
    node, elementwise, on_bits = start, [], []
    while (eqn := made_by.get(node)) is not None:
        kind, call = _tag(eqn)
        if kind is not None:
            return (call, tuple(reversed(elementwise)), tuple(reversed(on_bits))) if kind == "bn_out" else None
        step = _step(eqn)
        if step is None:
            return None
        node, op = step
        if isinstance(op, ElementOp):
            elementwise.append(op)
        elif op is not None:
            on_bits.append(op)
    return None


def _to_producer(start, made_by):
    """(producer call, pools) from a BN's input back to a packed layer's sums."""
    node, pools = start, []
    while (eqn := made_by.get(node)) is not None:
        kind, call = _tag(eqn)
        if kind is not None:
            return (call, tuple(reversed(pools))) if kind == "producer" else None
        if not (_spatial_pool(eqn) and _value_operand(eqn) is eqn.ins[0]):
            return None
        pools.append(Replay(eqn.primitive, tuple(sorted(eqn.params.items()))))
        node = eqn.ins[0]
    return None


def find_links(closed) -> list[Link]:
    """Every consumer whose input bits are proven to come from a BN of a producer's sums."""
    found = equations(closed)
    made_by = {node: eqn for eqn in found for node in eqn.outs}
    marks = {_tag(eqn): eqn for eqn in found if eqn.primitive is MARK}
    links = []
    for (kind, consumer), eqn in marks.items():
        to_batch_norm = _to_batch_norm(eqn.ins[0], made_by) if kind == "consumer" else None
        if to_batch_norm is None:
            continue
        batch_norm, elementwise, on_bits = to_batch_norm
        bn_input = marks.get(("bn_in", batch_norm))
        to_producer = _to_producer(bn_input.ins[0], made_by) if bn_input is not None else None
        if to_producer is not None:
            links.append(Link(to_producer[0], batch_norm, consumer, to_producer[1], elementwise, on_bits))
    return links
