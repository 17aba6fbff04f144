"""Iterative layer binarization (Cheng-Chou Lan, "Iterative Training: Finding Binary Weight Deep
Neural Networks with Layer Binarization", arXiv 2111.07046, 2021; code rakutentech/iterative_training).

Training starts from one quantized layer (plus `initial_binary`) and binarizes one more layer
every `epochs_per_layer` epochs, in `order`, until the network is fully binary, as the official
code's `binarize_layer` (layer ⌊epoch / epochs_per_layer⌋ turns binary before that epoch):

    stage k = min(⌊epoch / epochs_per_layer⌋, n − 1),   binary layers = initial ∪ order[:k + 1]

so the network is fully binary from epoch (n − 1)·epochs_per_layer on. The paper's runs fix
epochs per layer and let the run grow with the depth (MNIST 300-100-10: 150 per layer, 450
epochs; ResNet-20: 50 per layer, 1200 epochs). `epochs_per_layer` unset instead splits the
budget: the fully binary last stage takes `final_fraction` of the run (unset: an equal share,
the budget split evenly over the n stages) and the other stages split the rest evenly.
`lr_milestones` (fractions f of the run) multiply the lr by 0.1 each, as the code's MultiStepLR,
which train.py steps before each epoch: the lr drops from 1-based epoch round(f·epochs) on,
i.e. from 0-based epoch round(f·epochs) − 1.
As in the paper, weights are binarized BinaryConnect-style, w_b = sign(w), with no scale
factor, activations stay real and the first and last layers are binarized too (the method's
`binarize_first_last`, `binary_activations` and `scaling` keys adapt the model). Parameters
move by SGD with momentum 0.9 and weight decay 1e−4 (the code's ResNet-20 optimizer) or by
Adam (`optimizer: adam`, the code's MLP optimizer, run there without weight decay). As in the
code (its clip_weights() is `pass`; the gradient w.r.t. sign(w) is applied to w unchanged),
latent weights are neither clipped nor is their gradient gated; `clip_latent: true` gives
BinaryConnect's reading instead: a binary layer's latent weights are clipped to
[−latent_clip, latent_clip] from the step it is binarized and the sign's gradient is gated by
|w| ≤ latent_clip. `inner` replaces that optimizer by any optimizer-level method (ste, bop,
...); ILB then only drives which layers are binary, and the inner method's own masks apply
unchanged inside every layer ILB has binarized (bnnx.methods.masks).

Orders: `forward` (input → output, the paper's best fixed order), `reverse`, `random` (the
run's seed) and `sensitivity`: sensitivity pre-training trains, for each layer i, a short run
(`sensitivity_epochs`) with only layer i binary, and ranks layers by their accuracy on a held-out
part of the training set. `sensitivity_descending: true` binarizes the most accurate (least
sensitive) layer first: our reading of the code's guided order, `ascend` (ascending
sensitivity; its ImageNet and CIFAR scripts use it), which neither the abstract nor the code
defines in words; `false` is the code's `descend`.
The ranking goes to `<run dir>/sensitivity.json` and is reused when present; `ranking` gives
one explicitly. `all_binary` binarizes every layer from the start with the same optimizer and
model: the code's `all_binary=True` baseline. `one_shot` keeps every layer real until the ordered
schedule would be fully binary and then binarizes them all at once: a baseline with the same
fully binary phase as ILB's, so that the gradual binarization is the only difference.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bnnx.config.schema import setting
from bnnx.errors import ConfigError, check
from bnnx.io import read_json, write_json
from bnnx.layers import flat
from bnnx.methods.base import MethodConfig, MethodContext, Recipe, adam, by_label, make_inner, round_half_up
from bnnx.methods.masks import hold_real, reset_layers
from bnnx.quantizers import SCALINGS

ORDERS = ("forward", "reverse", "random", "sensitivity")
OPTIMIZERS = ("sgd", "adam")
SENSITIVITY_FILE = "sensitivity.json"
UNGATED = float(np.finfo(np.float32).max)  # a sign_ste clip no finite float32 weight exceeds: the identity gradient


class ClipCountState(NamedTuple):
    count: jax.Array
    starts: jax.Array  # first clipped step per layer (sorted names): an array, so seeds of one program may differ


def project_box_from(start_steps: dict[str, int], low: float = -1.0, high: float = 1.0):
    """u ← clip(w + u, low, high) − w for the kernels of layer L from step start_steps[L] on
    (BinaryConnect's latent-weight clip, applied once the layer is binary); u elsewhere."""

    names = sorted(start_steps)

    def init(params):
        starts = jnp.asarray([start_steps[name] for name in names], jnp.int32).reshape(len(names))
        return ClipCountState(jnp.zeros([], jnp.int32), starts)

    def update(updates, state, params=None):
        def clip(path, u, w):
            name = _layer_name(path)
            if name not in start_steps or _key(path[-1]) != "kernel":
                return u
            start = state.starts[names.index(name)]
            return jnp.where(state.count >= start, jnp.clip(w + u, low, high) - w, u)

        return jax.tree_util.tree_map_with_path(clip, updates, params), state._replace(count=state.count + 1)

    return optax.GradientTransformation(init, update)


def _key(entry) -> str:
    return str(getattr(entry, "key", entry))


def _layer_name(path) -> str:
    return "/".join(_key(entry) for entry in path[:-1])


@dataclasses.dataclass
class ILB(MethodConfig):
    """`lr`, `schedule`, `optimizer`, `momentum`, `weight_decay`, `clip_latent`, `latent_clip`: the
    default BinaryConnect optimizer (unused when `inner` names a method)."""

    lr: float = 0.01
    optimizer: str = setting("sgd", choices=OPTIMIZERS)
    momentum: float = setting(0.9, ge=0)
    weight_decay: float = setting(1e-4, ge=0)
    clip_latent: bool = False  # true: clip binary layers' latent weights and gate the sign's gradient (BinaryConnect)
    latent_clip: float = setting(1.0, gt=0)
    order: str = setting("forward", choices=ORDERS)
    all_binary: bool = False  # every layer binary from the start: the paper's fully binary baseline
    one_shot: bool = False  # every layer binary at once, when the ordered schedule ends: equal binary phase
    epochs_per_layer: int | None = setting(None, ge=1)
    # with epochs_per_layer unset: the fully binary stage's share
    final_fraction: float | None = setting(None, gt=0, lt=1)
    lr_milestones: tuple[float, ...] = setting((), gt=0, lt=1)  # fractions of the run where the lr drops ×0.1
    initial_binary: tuple[str, ...] = ()
    ranking: tuple[str, ...] = ()
    sensitivity_epochs: int = setting(1, ge=1)
    sensitivity_descending: bool = True
    sensitivity_holdout: float = setting(0.1, ge=0, lt=1)
    binarize_first_last: bool = True
    binary_activations: bool = False
    scaling: str = setting("none", choices=SCALINGS)
    inner: str | None = None
    inner_config: dict | None = None

    def __post_init__(self):
        super().__post_init__()
        check(list(self.lr_milestones) == sorted(self.lr_milestones),
              f"method.lr_milestones must be increasing fractions in (0, 1) (got {list(self.lr_milestones)})")
        self.inner_method = make_inner(self.inner, self.inner_config) if self.inner else None

    def adapt_model(self, model):
        """The paper's network: weights binary in every layer (first and last included), real
        activations, no scale factor."""
        roles = tuple(r for r in model.real_roles if r not in ("first", "last")) if self.binarize_first_last \
            else tuple(model.real_roles)
        model = dataclasses.replace(model, real_roles=roles, binary_activations=self.binary_activations,
                                    scaling=self.scaling)
        if self.inner_method:
            return self.inner_method.adapt_model(model)
        if model.kernel_quantizer == "sign_ste":
            gate = self.latent_clip if self.clip_latent else UNGATED
            args = {**(model.kernel_quantizer_args or {}), "clip": gate}
            model = dataclasses.replace(model, kernel_quantizer_args=args)
        return model

    def build(self, ctx: MethodContext) -> Recipe:
        order = self.layer_order(ctx)
        binary_from = {**{name: 0 for name in self.initial_binary},
                       **dict(zip(order, self.binary_from_epochs(len(order), ctx.epochs)))}
        inner = self.inner_method.build(ctx) if self.inner_method else None
        tx = inner.tx if inner else self.binaryconnect_tx(
            ctx, {name: epoch * ctx.steps_per_epoch for name, epoch in binary_from.items()} if self.clip_latent else {})
        return _schedule_recipe(tx, inner, binary_from, ctx.layers)

    def binary_from_epochs(self, layers: int, epochs: int) -> list[int]:
        """The epoch each layer of the order turns binary: k·epochs_per_layer, all 0 (all_binary),
        or all at (n − 1)·epochs_per_layer (one_shot)."""
        if self.all_binary:
            return [0] * layers
        per_layer = self.stage_epochs(layers, epochs)
        if self.one_shot:
            return [max(layers - 1, 0) * per_layer] * layers
        return [k * per_layer for k in range(layers)]

    def lr_schedule(self, total_steps: int, steps_per_epoch: int = 1):
        """The method's schedule, or with `lr_milestones` the lr ×0.1 at each: MultiStepLR stepped
        before each epoch, so milestone epoch m = round(f·epochs) (1-based) trains at the lower lr."""
        if not self.lr_milestones:
            return super().lr_schedule(total_steps)
        epochs, scales = total_steps // max(steps_per_epoch, 1), {}
        for fraction in self.lr_milestones:
            step = max(round_half_up(fraction * epochs) - 1, 0) * steps_per_epoch
            scales[step] = scales.get(step, 1.0) * 0.1
        return optax.piecewise_constant_schedule(self.lr, scales)

    def binaryconnect_tx(self, ctx: MethodContext, clip_from_step: dict[str, int]):
        schedule = self.lr_schedule(ctx.total_steps, ctx.steps_per_epoch)
        if self.optimizer == "sgd":
            step = optax.inject_hyperparams(optax.sgd)(learning_rate=schedule, momentum=self.momentum)
        else:
            step = adam(schedule)
        if self.weight_decay > 0:
            step = optax.chain(optax.add_decayed_weights(self.weight_decay), step)
        if not clip_from_step:
            return by_label(ctx.labels, step, step)
        clip = project_box_from(clip_from_step, -self.latent_clip, self.latent_clip)
        return by_label(ctx.labels, optax.chain(step, clip), step)

    def stage_epochs(self, layers_to_binarize: int, epochs: int) -> int:
        """Epochs per stage; the last layer must turn binary by the final epoch."""
        per_layer = self.epochs_per_layer or self.split_budget(layers_to_binarize, epochs)
        last = max(layers_to_binarize - 1, 0) * per_layer
        check(last < epochs, f"method=ilb binarizes its last layer at epoch {last + 1} but the run has {epochs} "
                             f"epochs; {layers_to_binarize} layers need "
                             f"epochs > {layers_to_binarize - 1} x epochs_per_layer")
        return per_layer

    def split_budget(self, layers_to_binarize: int, epochs: int) -> int:
        """Epochs per stage when the budget is fixed: n equal stages, or the last `final_fraction`
        of the run fully binary and the n − 1 stages before it sharing the rest."""
        if self.final_fraction is None or layers_to_binarize <= 1:
            return max(1, epochs // max(layers_to_binarize, 1))
        partial = epochs - round_half_up(self.final_fraction * epochs)
        return max(1, partial // (layers_to_binarize - 1))

    def layer_order(self, ctx: MethodContext) -> list[str]:
        """The binary-bound layers not initially binary, in the order they are binarized."""
        names = [record.name for record in ctx.layers if record.binary]
        unknown = sorted(set(self.initial_binary) - set(names))
        check(not unknown, f"method.initial_binary names {unknown[0] if unknown else ''!r}, not a binary-bound "
                           f"layer; valid: {', '.join(names)}")
        rest = [name for name in names if name not in self.initial_binary]
        if self.order == "reverse":
            return rest[::-1]
        if self.order == "random":
            return [rest[i] for i in np.random.default_rng(ctx.seed).permutation(len(rest))]
        if self.order == "sensitivity":
            ranking = list(self.ranking) or self.sensitivity_ranking(ctx, rest)
            missing = sorted(set(rest) - set(ranking))
            check(not missing and set(ranking) <= set(names),
                  f"the sensitivity ranking {ranking} must list the layers {rest}")
            return [name for name in ranking if name in rest]
        return rest

    def sensitivity_ranking(self, ctx: MethodContext, names: list[str]) -> list[str]:
        """Sensitivity pre-training: one short run per layer with only that layer binary,
        ranked by held-out accuracy; saved to / reused from <run dir>/sensitivity.json."""
        if ctx.run_dir is None:
            raise ConfigError("method.order=sensitivity needs a run directory (or method.ranking)")
        saved = Path(ctx.run_dir) / SENSITIVITY_FILE
        if saved.exists():
            return list(read_json(saved)["ranking"])
        check(ctx.services is not None, "method.order=sensitivity needs the run's services for its probe runs")
        data = holdout_split(ctx.services.dataset, self.sensitivity_holdout)
        accuracy = {}
        for name in names:
            result = ctx.services.train_sub_run(self.probe_config(ctx.services.config, name, names, ctx.run_dir), data)
            accuracy[name] = result.summary["test_accuracy"] or 0.0
        sign = -1.0 if self.sensitivity_descending else 1.0
        ranking = sorted(names, key=lambda name: sign * accuracy[name])
        write_json(saved, {"ranking": ranking, "validation_accuracy": accuracy,
                           "descending": self.sensitivity_descending, "sensitivity_epochs": self.sensitivity_epochs,
                           "holdout_fraction": self.sensitivity_holdout})
        return ranking

    def probe_config(self, config, name: str, names: list[str], run_dir):
        """This run's config with only layer `name` binary-bound (and binary from the start)."""
        from bnnx.config import AnalysisConfig

        others = tuple(f"^{re.escape(other)}$" for other in names if other != name)
        model = dataclasses.replace(config.model, real_paths=tuple(config.model.real_paths) + others)
        method = dataclasses.replace(self, order="forward", initial_binary=(name,), ranking=(), epochs_per_layer=None,
                                     lr_milestones=())
        out_dir = Path(run_dir) / "sensitivity" / name.replace("/", "_")
        return dataclasses.replace(config, method=method, model=model, epochs=self.sensitivity_epochs,
                                   out_dir=str(out_dir), resume=False, analysis=AnalysisConfig())


def holdout_split(dataset, fraction: float):
    """`dataset` whose test set is a fixed random `fraction` of its training set (the rest trains);
    unchanged when the fraction is 0 or the data set is not held in memory."""
    from bnnx.data.base import ArrayDataset

    if fraction == 0 or not isinstance(dataset, ArrayDataset):
        return dataset
    order = np.random.default_rng(0).permutation(dataset.num_train)
    held = np.sort(order[:max(1, int(round(fraction * dataset.num_train)))])
    kept = np.setdiff1d(np.arange(dataset.num_train), held)
    return dataclasses.replace(dataset, train_images=dataset.train_images[kept],
                               train_labels=dataset.train_labels[kept], test_images=dataset.train_images[held],
                               test_labels=dataset.train_labels[held])


def _schedule_recipe(tx, inner: Recipe | None, binary_from: dict[str, int], layers) -> Recipe:
    paths = {record.name: record.path for record in layers}

    def real_at(epoch: int) -> set:
        """Binary-bound layers ILB holds real during `epoch` (all of them before epoch 0)."""
        return {record.path for record in layers if record.binary} - {
            paths[name] for name, first in binary_from.items() if first <= epoch}

    def set_masks(state, epoch, hook):
        """The inner method's masks where ILB has binarized, real elsewhere: the layers ILB held real
        get their defaults back before the inner hook runs (it may set them), then are held real."""
        state = hook(reset_layers(state, real_at(epoch - 1)))
        return hold_real(state, real_at(epoch))

    def prepare(state):
        return set_masks(inner.prepare(state) if inner else state, 0, lambda s: s)

    def on_epoch(state, epoch):
        inner_hook = inner.on_epoch if inner else (lambda s, e: s)
        return set_masks(state, epoch, lambda s: inner_hook(s, epoch))

    def metrics(state):
        masks = flat(state.quant)
        binary = [r.name for r in layers if (r.path + ("kernel_mask",)) in masks
                  and float(jnp.mean(masks[r.path + ("kernel_mask",)])) > 0]
        return {**(inner.metrics(state) if inner else {}), "binary_layers": binary, "num_binary_layers": len(binary)}

    if inner is None:
        return Recipe(tx=tx, prepare=prepare, on_epoch=on_epoch, metrics=metrics)
    return Recipe(tx=tx, init_state=inner.init_state, prepare=prepare, on_epoch=on_epoch, runtime=inner.runtime,
                  metrics=metrics)
