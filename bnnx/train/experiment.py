"""Build everything one run needs from a typed `TrainConfig`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp

from bnnx.config import TrainConfig
from bnnx.data import load_dataset
from bnnx.layers import LayerRecord, param_labels, record_layers
from bnnx.methods.base import MethodContext, Recipe
from bnnx.models import build_model
from bnnx.models.external import check_trains, user_errors
from bnnx.train.init_from import start_variables
from bnnx.train.losses import CrossEntropy
from bnnx.train.services import RunServices
from bnnx.train.state import TrainState, create_state, init_variables
from bnnx.train.step import make_eval_step, make_train_step
from bnnx.train.teacher import load_teacher_loss


@dataclasses.dataclass
class Experiment:
    config: TrainConfig
    dataset: Any
    model: Any
    layers: list[LayerRecord]
    recipe: Recipe
    state: TrainState
    loss: Any
    train_step: Callable
    eval_step: Callable
    start: dict | None = None  # the run it starts from (`method.init_from`), as summary.json records it

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset.steps_per_epoch(self.config.batch_size)

    def for_epoch(self, state: TrainState, epoch: int) -> TrainState:
        """`state` with the apply function and optimizer the method trains with in `epoch`."""
        state = state.replace(apply_fn=self.recipe.forward(epoch) or self.model.apply)
        tx = self.recipe.optimizer(epoch)
        return state if tx is None else state.replace(tx=tx)


def example_input(dataset) -> jnp.ndarray:
    return jnp.zeros((1, *dataset.input_shape), jnp.float32)


def build_experiment(config: TrainConfig, run_dir: Path | None = None, dataset=None,
                     train_run: Callable | None = None) -> Experiment:
    """`train_run` (bnnx.train.loop.train) trains the sub-runs a method may need while it is built
    (ILB's sensitivity probes); the loop passes it, so this module never imports the loop."""
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    model = build_model(config.trained_model, dataset.num_classes)
    example = example_input(dataset)
    with user_errors(f"model {config.trained_model.target}", config.trained_model.name == "external"):
        layers = record_layers(model, example)
        variables = init_variables(model, example, config.seed)
        if config.trained_model.name == "external":
            check_trains(model, variables, example)
    variables, start = start_variables(config, dataset, variables, run_dir)
    context = MethodContext(
        layers=layers, labels=param_labels(variables["params"], variables.get("quant", {})),
        steps_per_epoch=dataset.steps_per_epoch(config.batch_size), epochs=config.epochs, seed=config.seed,
        run_dir=run_dir, services=RunServices(config, dataset, model, variables, train_run))
    recipe = config.method.build(context)
    state = recipe.init_state(create_state(model, variables, recipe.tx, config.seed))
    loss = build_loss(config, dataset)
    return Experiment(config, dataset, model, layers, recipe, state, loss,
                      make_train_step(dataset.normalize, dataset.augment if config.dataset.augment else None,
                                      recipe.runtime),
                      make_eval_step(dataset.normalize, recipe.runtime), start)


def build_loss(config: TrainConfig, dataset):
    if config.distill.teacher is None:
        return CrossEntropy()
    return load_teacher_loss(config, dataset)
