"""Read a finished run back: its recorded config and its latest checkpoint's variables.

Nothing is built to restore a run: the checkpoint's own tree gives the structure (so no method's
build hook runs — no RPR checkpoint load, no ILB probe), and the model the run's config names is
only traced abstractly to check that the variables fit it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np

from bnnx.errors import CheckpointError
from bnnx.train.checkpoint import Checkpoints
from bnnx.train.rundir import RunDir

if TYPE_CHECKING:
    import flax.linen as nn

    from bnnx.config import TrainConfig


@dataclasses.dataclass
class TrainedRun:
    config: TrainConfig  # the run's
    model: nn.Module  # its trained model, built for the data set it was restored for
    variables: dict  # params, batch_stats, quant of the latest checkpoint (NumPy leaves)
    step: int


def restore_trained(run_dir: str | Path, dataset, config=None) -> TrainedRun:
    """The latest checkpoint of the run in `run_dir` with its model built for `dataset` (the loaded
    set, or `bnnx.data.shape_only` of it: only shapes are needed)."""
    from bnnx.models import build_model

    run_dir = Path(run_dir)
    config = config if config is not None else RunDir(run_dir).config()
    checkpoints = Checkpoints(run_dir)
    if not checkpoints.exists():
        raise CheckpointError(f"run {run_dir} has no checkpoint")
    try:
        tree, _ = checkpoints.restore_tree()
    finally:
        checkpoints.close()
    model = build_model(config.trained_model, dataset.num_classes)
    variables = {"params": tree["params"], "batch_stats": tree["batch_stats"], "quant": tree["quant"]}
    _check_fits(model, dataset, variables, run_dir)
    return TrainedRun(config, model, variables, int(tree["step"]))


def restore_run(run_dir: str | Path, dataset, config=None) -> tuple[dict, TrainConfig, nn.Module]:
    """(variables, config, model) of a finished run's latest checkpoint."""
    run = restore_trained(run_dir, dataset, config)
    return run.variables, run.config, run.model


def _check_fits(model, dataset, variables: dict, run_dir: Path) -> None:
    """The checkpoint's params and BN statistics must be exactly what the model declares."""
    example = jax.ShapeDtypeStruct((1, *dataset.input_shape), np.float32)
    declared = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), example)
    for collection in ("params", "batch_stats"):
        want = {jax.tree_util.keystr(k): v.shape for k, v in
                jax.tree_util.tree_leaves_with_path(declared.get(collection, {}))}
        got = {jax.tree_util.keystr(k): np.shape(v) for k, v in
               jax.tree_util.tree_leaves_with_path(variables[collection])}
        if want != got:
            raise CheckpointError(f"checkpoint of {run_dir} does not match the model its config.yaml names "
                                  f"({collection} differ)")
