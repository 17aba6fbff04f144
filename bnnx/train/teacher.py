"""The knowledge-distillation teacher: a finished run's trained model, frozen.

`distill.teacher=<run dir>` adds α·CE + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et
al. 2015) to any method. The teacher is the model its own config trained (for an `fp` run, the
FP twin), restored from its latest checkpoint and evaluated in inference mode inside the jitted
step; its variables travel as arguments of the step, and get no gradient.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp

from bnnx.errors import BnnxError, ConfigError, check
from bnnx.train.losses import Distillation
from bnnx.train.restore import restore_run
from bnnx.train.rundir import RunDir


def load_teacher_loss(config, dataset) -> Distillation:
    """The KD loss of `config` against the teacher run `config.distill.teacher`, which must have
    been trained on the same data set (same classes, same input shape)."""
    teacher_dir = Path(config.distill.teacher)
    try:
        teacher_config = RunDir(teacher_dir).config()
        check(teacher_config.dataset.name == config.dataset.name,
              f"{teacher_dir} was trained on {teacher_config.dataset.name}; this run trains on {config.dataset.name}")
        variables, _, model = restore_run(teacher_dir, dataset, teacher_config)
    except BnnxError as error:
        raise type(error)(f"distill.teacher: {error}") from None
    _check_outputs(model, variables, dataset, teacher_dir)
    return Distillation(variables, config.distill.alpha, config.distill.temperature, teacher_apply=model.apply)


def _check_outputs(model, variables, dataset, teacher_dir: Path) -> None:
    example = jnp.zeros((1, *dataset.input_shape), jnp.float32)
    try:
        shape = jax.eval_shape(lambda v: model.apply(v, example, train=False), variables).shape
    except Exception as error:  # flax raises many types for a shape mismatch
        raise ConfigError(f"distill.teacher {teacher_dir} does not fit this data set's inputs: "
                          f"{str(error).strip().splitlines()[0][:160]}") from None
    if shape != (1, dataset.num_classes):
        raise ConfigError(f"distill.teacher {teacher_dir} predicts {shape[-1]} classes; "
                          f"this data set has {dataset.num_classes}")
