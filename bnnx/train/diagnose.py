"""Warnings about runs that would train at chance level without saying so.

- At set-up, on the first training batch: binary-bound layers whose quantized inputs are
  (nearly) constant. sign(relu(x)) is +1 everywhere, so a layer fed by a ReLU sees one input
  pattern whatever the example, and the network cannot learn through it.
- While training: a run that has stayed at chance (see `at_chance`) for a quarter of its epochs.

Each warning is one line on stderr, `warning: ...`, and one entry of the run's summary.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from bnnx.io import read_json
from bnnx.layers import LayerRecord, _Quantized

CONSTANT_SIGNS = 0.99  # a feature whose inputs share one sign this often is constant
CHANCE_MARGIN = 0.02  # above 1/classes
CHANCE_WARNING = "the run has been at chance"


def warn(message: str) -> str:
    print(f"warning: {message}", file=sys.stderr, flush=True)
    return message


def sign_agreement(model: nn.Module, variables: dict, x: jax.Array) -> dict[str, float]:
    """Per quantizable layer (by '/'-joined path): the mean over its input features of the
    fraction of the batch's inputs that share the feature's majority sign (0 counts as +1, as
    bnnx's sign does), from one training-mode forward pass."""

    def forward(variables, x):
        captured: dict[str, jax.Array] = {}

        def capture(next_fun, args, kwargs, context):
            module = context.module
            quantizable = isinstance(module, (_Quantized, nn.Dense, nn.DenseGeneral, nn.Conv, nn.Einsum))
            if context.method_name == "__call__" and quantizable and args and module.scope is not None:
                inputs = jnp.asarray(args[0])
                positive = jnp.mean((inputs >= 0).reshape(-1, inputs.shape[-1]), axis=0)
                captured.setdefault("/".join(module.scope.path), jnp.mean(jnp.maximum(positive, 1 - positive)))
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(capture):
            model.apply(variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
        return captured

    return {name: float(value) for name, value in jax.jit(forward)(variables, x).items()}


def constant_input_layers(layers: list[LayerRecord], agreement: dict[str, float]) -> list[str]:
    """The binary-input layers whose inputs' signs are constant per feature (see CONSTANT_SIGNS)."""
    return [layer.name for layer in layers
            if layer.binary_inputs and agreement.get(layer.name, 0.0) > CONSTANT_SIGNS]


def constant_inputs_message(names: list[str], external: bool) -> str:
    shown = ", ".join(names)
    if external:
        pattern = "^(" + "|".join(names) + ")$"
        fix = (f"keep them W1A32 with 'model.rules=[{{pattern:\"{pattern}\",input_quantizer:identity}}]' "
               f"(or model.binary_activations=false)")
    else:
        fix = "keep their inputs real with model.binary_activations=false"
    return (f"binary-input layers {shown} see constant input signs on the first batch (a ReLU before sign "
            f"gives +1 everywhere): they cannot learn; move the sign before the ReLU, or {fix}")


def chance_window(epochs: int) -> int:
    """A quarter of the run's epochs, at least one."""
    return max(1, epochs // 4)


def at_chance(row: dict, num_classes: int) -> bool:
    """Test accuracy within CHANCE_MARGIN of 1/classes, or a test loss still near ln(classes), the
    loss of a constant prediction, with an accuracy in the lower quarter between chance and 1."""
    chance = 1.0 / max(num_classes, 2)
    accuracy, loss = row["test_accuracy"], row.get("test_loss", 0.0)
    return accuracy <= chance + CHANCE_MARGIN or (loss >= 0.9 * math.log(max(num_classes, 2))
                                                  and accuracy <= chance + (1 - chance) / 4)


def stuck_at_chance(rows: list[dict], epochs: int, num_classes: int) -> bool:
    """Whether the last quarter of the run's epochs (at least one) have all been at chance."""
    window = chance_window(epochs)
    return len(rows) >= window and all(at_chance(row, num_classes) for row in rows[-window:])


def chance_message(rows: list[dict], epochs: int, num_classes: int, hint: str | None = None) -> str:
    """The chance warning, with the method's own `hint` (`MethodConfig.chance_hint`) when it has one."""
    message = (f"{CHANCE_WARNING} for the last {chance_window(epochs)} of {len(rows)} epochs (test "
               f"accuracy ≤ 1/{num_classes} + {CHANCE_MARGIN}, or test loss ≥ 0.9·ln {num_classes}): "
               f"it is not learning")
    return f"{message}; {hint}" if hint else message


def chance_warning(rows: list[dict], epochs: int, num_classes: int, said: list[str],
                   hint: Callable[[list[dict]], str | None] = lambda rows: None) -> str | None:
    """The chance warning after the last of `rows`, once per run (`said`: its warnings so far);
    `hint(rows)`: the method's advice (`MethodConfig.chance_hint`)."""
    if epochs < 2 or any(w.startswith(CHANCE_WARNING) for w in said) or not stuck_at_chance(rows, epochs, num_classes):
        return None
    return chance_message(rows, epochs, num_classes, hint(rows))


def recorded_warnings(run_dir: Path) -> list[str]:
    """The warnings an interrupted run's summary.json recorded, for its resume to keep."""
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        return []
    warnings = read_json(path).get("warnings", [])
    return [w for w in warnings if isinstance(w, str)] if isinstance(warnings, list) else []


def check_first_batch(experiment, state) -> str | None:
    """The constant-input warning's message for `experiment` starting from `state`, or None."""
    if not any(layer.binary_inputs for layer in experiment.layers):
        return None
    config = experiment.config
    images, _, _ = next(iter(experiment.dataset.train_batches(0, config.batch_size, config.seed)))
    variables = state.variables(experiment.recipe.runtime(state.quant, state.step))
    agreement = sign_agreement(experiment.model, variables, experiment.dataset.normalize(images))
    names = constant_input_layers(experiment.layers, agreement)
    return constant_inputs_message(names, config.model.name == "external") if names else None
