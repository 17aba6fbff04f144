"""Write a trained run's export (`bnnx export`): its tensors as `bnnx.export.format` entries, plus
the thresholds of the BatchNorms the packed engine folds, in one .npz."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax

from bnnx.export.format import export_bytes, exported, fold_entries, tensor_entries
from bnnx.io import write_bytes


def export_run(config, run_dir: Path | str, out: Path | str | None = None) -> tuple[Path, dict]:
    """Export the latest checkpoint of the run in `run_dir`, trained with `config` (a TrainConfig).
    Needs only the checkpoint: the data set's shapes are known by name, its examples are not read.
    Returns the written path (default `<run_dir>/export.npz`) and the manifest."""
    from bnnx.config import config_to_dict
    from bnnx.data import shape_only
    from bnnx.io import check_writable
    from bnnx.layers import record_layers
    from bnnx.train.experiment import example_input
    from bnnx.train.restore import restore_trained

    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / "export.npz"
    check_writable(path, "--out")
    dataset = shape_only(config.dataset)
    run = restore_trained(run_dir, dataset, config)
    config, model, variables = run.config, run.model, jax.device_get(run.variables)
    layers = record_layers(model, example_input(dataset))
    info = {"model": config_to_dict(dataclasses.replace(config, model=config.trained_model))["model"],
            "dataset": config.dataset.name, "num_classes": dataset.num_classes,
            "input_shape": list(dataset.input_shape), "step": run.step,
            "binary_inputs": [r.name for r in layers if r.binary_inputs], "config": config_to_dict(config)}
    data, manifest = export_with_folds(tensor_entries(variables, getattr(model, "policy_of", model.policy)), info)
    write_bytes(path, data)
    return path, manifest


def export_with_folds(entries: list[dict], info: dict) -> tuple[bytes, dict]:
    """`export_bytes` of `entries` plus the thresholds of the BatchNorms the engine folds in them
    (found on the entries as the engine reads them, without writing a file: `info` needs the model
    and its `input_shape`)."""
    from bnnx.packed.engine import load_exported  # the engine reads the format, not this writer

    folds = load_exported(exported(entries, info))[1].folds
    return export_bytes(entries + fold_entries(folds), info)
