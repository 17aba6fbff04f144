"""A finished run made from weights trained elsewhere (`bnnx import torchvision`): the loop's run
layout (config.yaml, metrics.jsonl, summary.json, an orbax checkpoint of the train state written
by the loop's checkpoint writer), so that `--use` and `method.init_from` accept it like any
finished `method=fp` run."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from bnnx.config import TrainConfig, config_to_dict
from bnnx.errors import CheckpointError
from bnnx.io import write_json, write_jsonl, write_text


def write_imported_run(config: TrainConfig, variables: dict, source: dict) -> Path:
    """Write `variables` ({"params", "batch_stats"}) as a completed run of `config` in its out_dir
    (which must hold no run); the optimizer state is fresh. Returns the run dir."""
    from bnnx.data import shape_only
    from bnnx.summary import run_precision
    from bnnx.train.checkpoint import Checkpoints
    from bnnx.train.experiment import build_experiment
    from bnnx.train.loop import _yaml, prepare_run_dir
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
    write_text(run_dir / "config.yaml", _yaml(config_to_dict(config)))
    write_jsonl(run_dir / "metrics.jsonl", [])
    write_json(run_dir / "summary.json", {
        "status": "completed", "imported_from": source, "test_accuracy": None, "best_test_accuracy": None,
        "epochs_done": config.epochs, "epochs": config.epochs, "wall_time_s": time.time() - started,
        "train_time_s": 0.0, "test_accuracy_curve": [], "compile_time_s": 0.0, "time_to_plateau": None,
        "parameters": run_precision(experiment.layers, config.trained_model, state.params, state.quant),
        "seed": config.seed, "method": config.method.name, "model": config.model.name,
        "dataset": config.dataset.name, "versions": versions()})
    return run_dir
