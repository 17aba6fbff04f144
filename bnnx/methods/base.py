"""What a training method is: a typed config that builds a `Recipe` for the one training loop.

A recipe says how parameters move (an optax transformation routed by the label tree), what
is frozen (the train state's trainable mask), what the forward pass sees (the quant
collection's precision masks and runtime values) and when these change (an epoch hook and
an in-jit runtime function of the step). The loop knows nothing else about methods.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from bnnx.config.schema import setting, validate
from bnnx.errors import ConfigError, check
from bnnx.layers import LayerRecord, flat, unflat

SCHEDULES = ("constant", "cosine", "linear")


@dataclasses.dataclass
class MethodContext:
    """What a method may know about the run it is built for."""

    layers: list[LayerRecord]
    labels: Any  # 'binary' | 'real' per parameter, from the layers
    steps_per_epoch: int
    epochs: int
    seed: int
    run_dir: Path | None = None
    services: Any = None  # train.services.RunServices: sub-runs, evaluation, checkpoints

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def _identity_state(state, *args):
    return state


def _identity_quant(quant, step):
    return quant


def _no_metrics(state) -> dict[str, float]:
    return {}


def _model_forward(epoch: int):
    return None


@dataclasses.dataclass
class Recipe:
    """A method, ready for the training loop.

    - `tx`: the optimizer over all parameters.
    - `init_state(state)`: once per built state, fresh or resumed (before a checkpoint is
      restored into it): gives the method's arrays their shapes (RPR's per-weight masks).
    - `prepare(state)`: once, at the start of a fresh run (not on resume).
    - `on_epoch(state, epoch)`: host side, before each epoch; a pure function of its inputs, so
      a resumed run replays it exactly.
    - `runtime(quant, step)`: inside the jitted step; sets runtime quantizer values (BMD's β).
    - `metrics(state)`: scheduled values and statistics to record each epoch.
    - `forward(epoch)`: the apply function the steps of that epoch compile, or None for the
      model's own (PPT's FP epochs train the FP twin's graph). A different function is another
      compiled step, chosen per epoch, so this is the one phase change that compiles.
    - `optimizer(epoch)`: the transformation the steps of that epoch run, or None for `tx`: a
      phased optimizer names its phase per epoch, so no step runs the other phase's branch
      (under vmap a `lax.cond` on the batched step count runs both).
    """

    tx: optax.GradientTransformation
    init_state: Callable = _identity_state
    prepare: Callable = _identity_state
    on_epoch: Callable = _identity_state
    runtime: Callable = _identity_quant
    metrics: Callable = _no_metrics
    forward: Callable = _model_forward
    optimizer: Callable = _model_forward

    @property
    def has_epoch_hook(self) -> bool:
        """Whether `on_epoch` may change the state (the loop skips the identity)."""
        return self.on_epoch is not _identity_state


@dataclasses.dataclass
class MethodConfig:
    """Fields every method shares. Subclasses add theirs and implement `build`."""

    lr: float = setting(1e-3, gt=0)
    schedule: str = setting("cosine", choices=SCHEDULES)
    # a run folder (trained, or written by `bnnx import`) whose params and batch statistics the run
    # starts from, whatever the method (bnnx.train.init_from); null: the model's own initialisation
    init_from: str | None = None

    def __post_init__(self):
        validate(self, "method")

    def chance_hint(self, rows: list[dict]) -> str | None:
        """What to try when a run of this method stays at chance (`rows`: its epochs so far), or None."""
        return None

    @property
    def name(self) -> str:
        """The name the method is declared under (`bnnx.methods.registry`), as `method=` takes it."""
        from bnnx.methods.registry import method_name

        return method_name(type(self))

    def adapt_model(self, model):
        """The model as this method trains it (e.g. `fp` trains the full-precision twin)."""
        return model

    def build(self, ctx: MethodContext) -> Recipe:
        raise NotImplementedError

    def lr_schedule(self, total_steps: int) -> optax.Schedule:
        return lr_schedule(self.schedule, self.lr, total_steps)


def lr_schedule(kind: str, lr: float, total_steps: int) -> optax.Schedule:
    total_steps = max(1, total_steps)
    if kind == "cosine":
        return optax.cosine_decay_schedule(lr, total_steps)
    if kind == "linear":
        return optax.linear_schedule(lr, 0.0, total_steps)
    return optax.constant_schedule(lr)


def round_half_up(x: float) -> int:
    """⌊x + ½⌋: the rounding every fraction of a run uses (Python's round() goes to even)."""
    return int(math.floor(x + 0.5))


def epoch_boundaries(fractions, epochs: int) -> list[int]:
    """End epoch (exclusive) of each part of a run split by `fractions`: cumulative sums × epochs,
    rounded half up; the last part ends with the run."""
    ends, total = [], 0.0
    for fraction in fractions:
        total += fraction
        ends.append(min(epochs, round_half_up(total * epochs)))
    return [*ends[:-1], epochs]


def adam(learning_rate) -> optax.GradientTransformation:
    """Adam whose learning rate lives in the optimizer state, so it can be logged and scheduled."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate)


def by_label(labels, binary: optax.GradientTransformation,
             real: optax.GradientTransformation) -> optax.GradientTransformation:
    """Route binary-bound kernels and real parameters to their own transformations.

    Args:
        labels: a tree like the params of "binary" / "real" (`bnnx.layers.param_labels`).
        binary, real: the transformations of each part.

    Returns:
        `optax.partition` of the two over `labels`.
    """
    return optax.partition({"binary": binary, "real": real}, labels)


class EmptyState(NamedTuple):
    pass


def project_box(low: float = -1.0, high: float = 1.0) -> optax.GradientTransformation:
    """Projection Π onto [low, high] after the update: u ← clip(w + u, low, high) − w.

    Args:
        low, high: the box.

    Returns:
        A stateless GradientTransformation (it needs `params`), chained after a step.
    """

    def init(params):
        return EmptyState()

    def update(updates, state, params=None):
        new = jax.tree.map(lambda u, w: jnp.clip(w + u, low, high) - w, updates, params)
        return new, state

    return optax.GradientTransformation(init, update)


OPTIMIZER_CONSTANTS = {"b1", "b2", "eps", "eps_root", "momentum", "nesterov", "decay", "initial_scale"}


def scheduled_values(opt_state) -> dict[str, float]:
    """Every injected hyperparameter in an optimizer state, by name (learning_rate → lr)."""
    found: dict[str, float] = {}

    def visit(node):
        if hasattr(node, "hyperparams") and isinstance(node.hyperparams, dict):
            for key, value in node.hyperparams.items():
                if key not in OPTIMIZER_CONSTANTS:
                    found.setdefault("lr" if key == "learning_rate" else key, float(value))
        elif isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, (tuple, list)):
            for value in node:
                visit(value)
        elif hasattr(node, "inner_states"):
            visit(node.inner_states)
        elif hasattr(node, "inner_state"):
            visit(node.inner_state)

    visit(opt_state)
    return found


def select(tree, labels, label: str):
    """The leaves of `tree` whose label is `label` (others None), for per-group statistics."""
    return jax.tree.map(lambda leaf, lab: leaf if lab == label else None, tree, labels)


# ---- shared by the schedule-level methods (PPT, ILB) ------------------------------------

NOT_INNER = ("fp", "ppt", "ilb")  # schedule-level methods and the FP baseline wrap nothing


def make_inner(name: str, values: dict | None, key: str = "method.inner") -> MethodConfig:
    """The optimizer-level method `name` configured by `values` (the keys `<key>_config.*`)."""
    from bnnx.methods.registry import METHODS, method_class

    inner_names = sorted(set(METHODS) - set(NOT_INNER))
    check(name in inner_names, f"unknown {key} '{name}'; valid options: {', '.join(inner_names)}")
    cls = method_class(name)
    values = dict(values or {})
    fields = [f.name for f in dataclasses.fields(cls)]
    check("init_from" not in values, f"{key}_config.init_from: set method.init_from, the run's start, instead")
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key '{key}_config.{unknown[0]}'; valid keys: {', '.join(fields)}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (TypeError, ConfigError) as error:
        raise ConfigError(f"{key}_config: {error}") from None


def fill_masks(quant, value: float, names=("kernel_mask", "input_mask"), layers=None):
    """`quant` with every precision mask (of `layers`, default all) set to `value`, shapes kept."""
    out = dict(flat(quant))
    for path, mask in out.items():
        if path[-1] in names and (layers is None or path[:-1] in layers):
            out[path] = jnp.full(jnp.shape(mask), value, jnp.float32)
    return unflat(out)
