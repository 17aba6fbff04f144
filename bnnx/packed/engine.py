"""Run a whole exported model on packed bits: the run's own flax model, with every packed
QuantDense/QuantConv call replaced (`nn.intercept_methods`) by a kernel of `bnnx.packed.kernels`
fed from the export's words. Everything else (first/last and other real layers, BN, pooling,
shortcuts, float-stored relaxed kernels) runs in float exactly as in training's eval.

A layer's inputs go through the layer's own input quantizer: a two-level one gives sign bits
for XNOR-popcount; any other (none, or a layer whose input mask is off) gives real inputs for
the sign-select sum. Scales (mean|w| or learned) multiply the integer result per output channel.

BatchNorm folding: where the engine's own program proves (`graph`) that a packed layer's input
bits are the sign of a BN of the previous packed layer's sums (through exact elementwise ops such
as hardtanh and through max-pools), they are computed from its integer sums y as
multiplier·y ≥ threshold per channel (`fold`), thresholds found at load by evaluating the float32
path itself on every |y| ≤ K; the float BN then still runs only for its other consumers (residual
adds), and XLA drops it where there are none. Links are traced again for each input shape, and a
link is folded only where its thresholds were found for the same producer, BN and ops.
"""

from __future__ import annotations

import collections
import dataclasses

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from bnnx.binarizer import layer_kind
from bnnx.export.format import Exported, unpack
from bnnx.layers import _Quantized
from bnnx.packed.fold import SignThresholds, sign_thresholds
from bnnx.packed.graph import Link, find_links, mark
from bnnx.packed.layer import PackedLayer, geometry_of, inputs, scaled, sums, sums_shape, takes_bits


@flax.struct.dataclass
class PackedModel:
    variables: dict  # real params, batch stats, quant, without the packed kernels
    layers: dict  # layer path ('/'-joined) → PackedLayer
    folds: dict = flax.struct.field(default_factory=dict)  # consumer layer path → SignThresholds


def _layer_tensor(exported: Exported, layer: str, name: str):
    value = exported.tensors.get(f"params/{layer}/{name}")
    return None if value is None else jnp.asarray(value)


def packed_model(exported: Exported) -> PackedModel:
    """The arrays the engine needs, from an export: words stay words."""
    layers = {}
    for tensor in exported.manifest["tensors"]:
        if tensor["name"] not in exported.planes:
            continue
        layer = tensor["name"].removeprefix("params/").removesuffix("/kernel")
        scale = exported.tensors[tensor["scale"]] if "scale" in tensor else _layer_tensor(exported, layer, "scale")
        input_mask = exported.tensors.get(f"quant/{layer}/input_mask", np.ones(()))
        binary_inputs = bool(np.all(input_mask > 0)) and layer in exported.manifest.get("binary_inputs", [layer])
        layers[layer] = PackedLayer(
            planes={k: jnp.asarray(v) for k, v in exported.planes[tensor["name"]].items()},
            scale=None if scale is None else jnp.asarray(scale), bias=_layer_tensor(exported, layer, "bias"),
            kernel_shape=tuple(tensor["shape"]), binary_inputs=binary_inputs)
    return PackedModel(exported.variables(packed=False), layers)


def _evaluates_batch_norm(module, args, kwargs) -> bool:
    """A flax BatchNorm normalizing the last axis with its running statistics."""
    if type(module) is not nn.BatchNorm or not args or kwargs.get("mask") is not None:
        return False
    running = kwargs.get("use_running_average", args[1] if len(args) > 1 else None)
    running = module.use_running_average if running is None else running
    return running is True and module.axis in (-1, jnp.ndim(args[0]) - 1)


class Engine:
    """The interceptor: packed layers on bits; with `links`, folded input bits from the producers'
    integer sums; with `marking`, the tags `graph.find_links` reads (and what the thresholds need)."""

    def __init__(self, model, packed: PackedModel, links: tuple[Link, ...] = (), marking: bool = False):
        self.model, self.packed, self.marking = model, packed, marking
        self.links = {link.consumer: link for link in links}
        self.producers = {link.producer for link in links}
        self.calls, self.sums = collections.Counter(), {}
        self.batch_norms, self.quantizers = {}, {}  # seen while marking

    def _call(self, path: str):
        self.calls[path] += 1
        return path, self.calls[path] - 1

    def _geometry(self, module, path: str):
        if isinstance(module, _Quantized):
            return geometry_of(module, module.policy, module.role)
        # a binarized flax layer: its export recorded whether its inputs are binary; its quantizers are the rule's
        policy = dataclasses.replace(self.model.policy_of(tuple(path.split("/"))), real_roles=(), real_paths=())
        return geometry_of(module, policy, "hidden")

    def __call__(self, next_fun, args, kwargs, context):
        module = context.module
        path = "/".join(module.scope.path) if context.method_name == "__call__" else None
        if self.marking and path is not None and _evaluates_batch_norm(module, args, kwargs):
            call = self._call(path)
            self.batch_norms[path] = module.clone(parent=None, name=None)  # unnamed: equal BNs share a compile
            return mark(next_fun(mark(args[0], "bn_in", call), *args[1:], **kwargs), "bn_out", call)
        layer = self.packed.layers.get(path)
        if path is None or layer is None or not (isinstance(module, _Quantized) or layer_kind(module)):
            return next_fun(*args, **kwargs)
        geometry, call = self._geometry(module, path), self._call(path)
        bits = takes_bits(geometry, path, layer)
        if call in self.links:
            x = self._folded_bits(self.links[call], args[0].shape)
        else:
            x = args[0]
            if self.marking and bits:
                x = mark(x, "consumer", call)
                self.quantizers[call] = geometry.policy.input_quantizer
            x, bits = inputs(geometry, path, layer, x)
        if self.marking:  # links depend on what the sums feed, not on how they are computed
            y = jnp.zeros(sums_shape(geometry, layer, x), jnp.int32 if bits else jnp.float32)
        else:
            y = sums(geometry, layer, x, bits)
        if call in self.producers:
            self.sums[call] = y
        out = scaled(layer, y)
        return mark(out, "producer", call) if self.marking and bits else out

    def _folded_bits(self, link: Link, shape) -> jax.Array:
        y = self.sums[link.producer]
        for pool in link.pools:
            y = pool(y)
        bits = self.packed.folds[link.consumer[0]].bits(y)
        for op in link.on_bits:
            bits = op(bits)
        if bits.shape != tuple(shape):
            raise AssertionError(f"folded bits of {link.consumer[0]} have shape {bits.shape}, its input {shape}")
        return bits


def run_engine(engine: Engine, x: jax.Array) -> jax.Array:
    """The model's logits with `engine` intercepting its layers (a subclass may record them)."""
    with nn.intercept_methods(engine):
        return engine.model.apply(engine.packed.variables, x, train=False)


def trace_links(model: nn.Module, packed: PackedModel, x) -> tuple[list[Link], Engine]:
    """The links of the engine's program on inputs shaped like `x`, and the marking engine (its
    BatchNorm modules and the consumers' quantizers)."""
    engines = []

    def marked(packed, x):
        engines.append(Engine(model, packed, marking=True))
        return run_engine(engines[-1], x)

    abstract = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))  # noqa: E731
    closed = jax.make_jaxpr(marked)(jax.tree.map(abstract, packed), abstract(x))
    return find_links(closed), engines[0]


def folded_links(model: nn.Module, packed: PackedModel, x) -> tuple[Link, ...]:
    """The links whose BatchNorm the export folded into thresholds, on inputs shaped like `x`."""
    if not packed.folds:
        return ()
    return tuple(link for link in trace_links(model, packed, x)[0] if _foldable(link, packed.folds))


def _foldable(link: Link, folds: dict) -> bool:
    fold = folds.get(link.consumer[0])
    return (fold is not None and (fold.producer, fold.batch_norm) == (link.producer[0], link.batch_norm[0])
            and fold.elementwise == link.elementwise and (fold.nondecreasing or not link.pools))


def packed_apply(model: nn.Module, packed: PackedModel, x: jax.Array) -> jax.Array:
    """Logits of `model` on `x` with its packed layers computed on bits (jit this). The layers are
    bnnx's QuantDense/QuantConv, or a `bnnx.binarize`d model's nn.Dense/nn.Conv."""
    return run_engine(Engine(model, packed, folded_links(model, packed, x)), x)


def _subtree(tree: dict, path: str):
    for key in path.split("/"):
        tree = tree.get(key, {}) if isinstance(tree, dict) else {}
    return tree


def fold_thresholds(model: nn.Module, packed: PackedModel, input_shape) -> tuple[dict, dict]:
    """({consumer path: SignThresholds}, {consumer path: why it keeps the float path}) for the
    links of the model on one input of `input_shape` (without the batch axis)."""
    links, engine = trace_links(model, packed, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    folds, refused = {}, {}
    for link in links:
        consumer, producer, batch_norm = link.consumer[0], link.producer[0], link.batch_norm[0]
        if consumer in folds or consumer in refused:
            continue
        variables = {c: _subtree(packed.variables.get(c, {}), batch_norm) for c in ("params", "batch_stats")}
        found = sign_thresholds(packed.layers[producer], producer, batch_norm, engine.batch_norms[batch_norm],
                                variables, link.elementwise, engine.quantizers[link.consumer], bool(link.pools))
        (folds if isinstance(found, SignThresholds) else refused)[consumer] = found
    return folds, refused


def load(path, fold: bool = True):
    """(model, PackedModel, manifest) of an export (a path or a binary file object). `fold`: with
    the BN folds of its manifest's input shape (an export without one runs every BN in float).
    They are found again here, not read from the export's `fold/` entries: exactness is relative
    to the float path on the device that runs, and exports without them fold too."""
    return load_exported(unpack(path), fold)


def load_exported(exported: Exported, fold: bool = True):
    """`load` of an export already read (`unpack`, or `bnnx.export.format.exported` of entries)."""
    model, packed = exported.model(), packed_model(exported)
    if fold and exported.manifest.get("input_shape"):
        packed = dataclasses.replace(packed, folds=fold_thresholds(model, packed, exported.manifest["input_shape"])[0])
    return model, packed, exported.manifest
