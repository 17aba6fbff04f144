"""Test-set evaluation of a finished run: its checkpoint (as training's eval does) or its export
(with the packed engine). The Python API behind `bnnx eval`; `bnnx.evaluate(path)` calls `evaluate`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from bnnx.callable_module import make_callable
from bnnx.errors import CheckpointError
from bnnx.train.step import test_metrics


def evaluate(path: Path | str, config=None, dataset=None) -> dict:
    """Test-set figures of a run folder (its latest checkpoint) or of an export file (on packed bits),
    under `config` (a TrainConfig; default: the one the run or the export recorded)."""
    path = Path(path)
    if path.is_dir():
        from bnnx.train.rundir import RunDir

        return evaluate_checkpoint(config if config is not None else RunDir(path).config(), path, dataset)
    if config is None:
        from bnnx.config import config_from_dict
        from bnnx.export.format import unpack

        manifest = unpack(path).manifest
        if "config" not in manifest:
            raise CheckpointError(f"{path} does not record its run's config; export the run again")
        config = config_from_dict(manifest["config"])
    return evaluate_export(path, config, dataset)


def _metrics(sums: dict, source: str, path: Path) -> dict:
    sums = jax.device_get(sums)
    return {**test_metrics(sums), "examples": int(sums["count"]), "source": source, "path": str(path)}


def evaluate_checkpoint(config, run_dir: Path | str, dataset=None) -> dict:
    """The run's latest checkpoint on the test set, through training's own eval step."""
    from bnnx.config import DistillConfig
    from bnnx.data import load_dataset
    from bnnx.train.checkpoint import Checkpoints
    from bnnx.train.experiment import build_experiment
    from bnnx.train.step import evaluation_sums

    run_dir = Path(run_dir)
    dataset = dataset if dataset is not None else load_dataset(config.dataset)
    checkpoints = Checkpoints(run_dir)
    if not checkpoints.exists():
        raise CheckpointError(f"run {run_dir} has no checkpoint")
    # a template the checkpoint fills: no teacher, and no init_from run to read (it may be gone)
    template = dataclasses.replace(config, out_dir=None, resume=False, distill=DistillConfig(),
                                   method=dataclasses.replace(config.method, init_from=None))
    experiment = build_experiment(template, run_dir=run_dir, dataset=dataset)
    try:
        state, _ = checkpoints.restore(experiment.state)
    finally:
        checkpoints.close()
    return _metrics(evaluation_sums(experiment, state, experiment.eval_step), "checkpoint", run_dir)


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


make_callable(__name__, "bnnx.evaluate:evaluate")
