"""A finished run made from weights trained elsewhere (`bnnx import torchvision`): the loop's run
layout (config.yaml, metrics.jsonl, summary.json, an orbax checkpoint of the train state written
by the loop's checkpoint writer), so that `--use` and `method.init_from` accept it like any
finished `method=fp` run."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from bnnx.config import TrainConfig
from bnnx.errors import CheckpointError
from bnnx.train.rundir import RunDir, prepare_run_dir, run_summary


def write_imported_run(config: TrainConfig, variables: dict, source: dict) -> Path:
    """Write `variables` ({"params", "batch_stats"}) as a completed run of `config` in its out_dir
    (which must hold no run); the optimizer state is fresh. Returns the run dir."""
    from bnnx.data import shape_only
    from bnnx.summary import run_precision
    from bnnx.train.checkpoint import Checkpoints
    from bnnx.train.experiment import build_experiment
    from bnnx.train.provenance import versions

    started = time.time()
    run_dir = prepare_run_dir(config)
    experiment = build_experiment(config, run_dir, shape_only(config.dataset))
    template = {"params": experiment.state.params, "batch_stats": experiment.state.batch_stats}
    same_tree = jax.tree.structure(template) == jax.tree.structure(variables)
    if not same_tree or jax.tree.map(np.shape, template) != jax.tree.map(np.shape, variables):
        raise CheckpointError(f"the imported weights do not fit bnnx's {config.model.name}")
    state = experiment.state.replace(params=jax.tree.map(np.asarray, variables["params"]),
                                     batch_stats=jax.tree.map(np.asarray, variables["batch_stats"]))
    state = state.replace(opt_state=state.tx.init(state.params))
    checkpoints = Checkpoints(run_dir)
    try:
        checkpoints.save(state, {"epoch": config.epochs, "batch": 0, "wall_time_s": 0.0,
                                 "sums": {"loss": 0.0, "correct": 0.0, "count": 0.0}})
    finally:
        checkpoints.close()
    record = RunDir(run_dir)
    record.write_config(config)
    record.write_rows([])
    record.write_summary(run_summary(
        config, [], status="completed", wall_time_s=time.time() - started, epochs_done=config.epochs,
        parameters=run_precision(experiment.layers, config.trained_model, state.params, state.quant),
        versions=versions(), imported_from=source))
    return run_dir
