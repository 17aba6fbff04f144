"""Test-set evaluation of a finished run: its checkpoint (as training's eval does) or its export
(with the packed engine). The Python API behind `bnnx eval`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.errors import CheckpointError


def _metrics(sums: dict, source: str, path: Path) -> dict:
    sums = jax.device_get(sums)
    count = max(float(sums["count"]), 1.0)
    return {"test_accuracy": float(sums["correct"]) / count, "test_top5_accuracy": float(sums["correct5"]) / count,
            "test_loss": float(sums["loss"]) / count, "examples": int(sums["count"]), "source": source,
            "path": str(path)}


def evaluate_checkpoint(config, run_dir: Path | str, dataset=None) -> dict:
    """The run's latest checkpoint on the test set, through training's own eval step."""
    from bnnx.config import DistillConfig
    from bnnx.data import load_dataset
    from bnnx.train.checkpoint import Checkpoints
    from bnnx.train.experiment import build_experiment
    from bnnx.train.step import evaluate

    run_dir = Path(run_dir)
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    checkpoints = Checkpoints(run_dir)
    if not checkpoints.exists():
        raise CheckpointError(f"run {run_dir} has no checkpoint")
    template = dataclasses.replace(config, out_dir=None, resume=False, distill=DistillConfig())
    experiment = build_experiment(template, run_dir=run_dir, dataset=dataset)
    try:
        state, _ = checkpoints.restore(experiment.state)
    finally:
        checkpoints.close()
    result = evaluate(experiment, state)
    count = sum(float(np.sum(weights)) for _, _, weights in dataset.test_batches(config.eval_batch_size))
    return {**result, "examples": int(count), "source": "checkpoint", "path": str(run_dir)}


def evaluate_export(path: Path | str, config, dataset=None) -> dict:
    """An export file on the test set of `config.dataset`, its binary layers on packed bits."""
    from bnnx.data import load_dataset
    from bnnx.packed.engine import load, packed_apply
    from bnnx.train.losses import cross_entropy
    from bnnx.train.step import top_k_correct

    path = Path(path)
    model, packed, manifest = load(path)
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    if list(dataset.input_shape) != list(manifest["input_shape"]) or dataset.num_classes != manifest["num_classes"]:
        raise CheckpointError(f"{path} takes {manifest['input_shape']} inputs and {manifest['num_classes']} classes; "
                              f"{config.dataset.name} has {list(dataset.input_shape)} and {dataset.num_classes}")

    @jax.jit
    def batch_sums(packed, images, labels, weights):
        logits = packed_apply(model, packed, dataset.normalize(images))
        correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
        return {"loss": cross_entropy(logits, labels, weights) * jnp.sum(weights), "correct": correct,
                "correct5": top_k_correct(logits, labels, weights), "count": jnp.sum(weights)}

    sums = {"loss": 0.0, "correct": 0.0, "correct5": 0.0, "count": 0.0}
    for images, labels, weights in dataset.test_batches(config.eval_batch_size):
        batch = batch_sums(packed, images, labels, weights)
        sums = {k: sums[k] + batch[k] for k in sums}
    return _metrics(sums, "packed", path)
