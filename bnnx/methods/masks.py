"""Masks shared by methods that wrap another: composition, and optimizer moments held where frozen.

A schedule-level method (ILB) decides per layer whether it is binary yet; the method it wraps
(RPR, BNEW, ...) decides per weight what the forward pass quantizes and what trains. Composed:

    precision = inner precision  where the schedule has binarized the layer, 0 elsewhere
    trainable = inner trainable  where the schedule has binarized the layer, 1 elsewhere

so a layer the schedule holds real is wholly real and trainable, and a binarized layer carries
the inner method's masks unchanged (RPR's partition, BNEW's relaxation and lock).
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from bnnx.layers import flat, unflat

PRECISION_MASKS = ("kernel_mask", "input_mask")


def _fill(tree, value: float, paths: set[tuple]) -> Any:
    out = dict(flat(tree))
    for path, leaf in out.items():
        if path in paths:
            out[path] = jnp.full(jnp.shape(leaf), value, jnp.float32)
    return unflat(out)


def _mask_paths(state, layers) -> set[tuple]:
    return {layer + (name,) for layer in layers for name in PRECISION_MASKS if layer + (name,) in flat(state.quant)}


def reset_layers(state, layers):
    """`state` with the masks of `layers` back at the layers' defaults (every weight quantized and
    trainable, shapes kept): what a wrapped method's hooks find in a layer nobody has masked."""
    kernels = {layer + ("kernel",) for layer in layers}
    return state.replace(quant=_fill(state.quant, 1.0, _mask_paths(state, layers)),
                         trainable=_fill(state.trainable, 1.0, kernels))


def hold_real(state, layers):
    """`state` with `layers` real: precision masks 0, kernels trainable; other layers untouched."""
    kernels = {layer + ("kernel",) for layer in layers}
    return sync_frozen(state.replace(quant=_fill(state.quant, 0.0, _mask_paths(state, layers)),
                                     trainable=_fill(state.trainable, 1.0, kernels)))


class HeldState(NamedTuple):
    inner: optax.ScaleByAdamState
    frozen: Any  # like the parameters: 1 where the trainable mask is 0


def hold_frozen_moments(adam: optax.GradientTransformation) -> optax.GradientTransformation:
    """`scale_by_adam` whose moments stay unchanged where the parameter is frozen (and whose update
    there is 0): a frozen weight's optimizer state is masked like its update. `frozen` lives in the
    state, set by `sync_frozen` whenever a hook changes the trainable mask."""

    def init(params):
        return HeldState(cast(optax.ScaleByAdamState, adam.init(params)), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        new_updates, new = adam.update(updates, state.inner, params)
        new = cast(optax.ScaleByAdamState, new)
        keep = lambda old, fresh, f: jnp.where(f > 0, old, fresh)  # noqa: E731
        new = new._replace(mu=jax.tree.map(keep, state.inner.mu, new.mu, state.frozen),
                           nu=jax.tree.map(keep, state.inner.nu, new.nu, state.frozen))
        new_updates = jax.tree.map(lambda u, f: jnp.where(f > 0, jnp.zeros_like(u), u), new_updates, state.frozen)
        return new_updates, HeldState(new, state.frozen)

    return optax.GradientTransformation(init, update)


def _path_key(path) -> tuple:
    return tuple(str(getattr(entry, "key", entry)) for entry in path)


def sync_frozen(state):
    """`state` whose held-moment transformations freeze exactly what its trainable mask freezes."""
    trainable = flat(state.trainable)

    def frozen_of(node):
        if not isinstance(node, HeldState):
            return node
        frozen = jax.tree_util.tree_map_with_path(lambda path, f: 1.0 - trainable[_path_key(path)].astype(f.dtype),
                                                  node.frozen)
        return node._replace(frozen=frozen)

    opt_state = jax.tree.map(frozen_of, state.opt_state, is_leaf=lambda node: isinstance(node, HeldState))
    return state.replace(opt_state=opt_state)
