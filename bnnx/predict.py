"""Logits of a run, an imported model or an export for inputs a user gives: the Python API behind
`bnnx predict`, so an old framework's outputs can be compared without writing code.

Inputs are in the model's own layout: (N, *input_shape), NHWC for images, already preprocessed as
the model expects (a larq import takes exactly what the Keras model took; a bnnx run takes its
data set's normalized images). Inference mode: BN running statistics, quantizers' forward."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bnnx.errors import CheckpointError, ConfigError

BATCH = 256


def load_inputs(path: Path | str) -> np.ndarray:
    """A float32 array from a .npy file (no pickle); one-line errors for what is not one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no inputs file {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ConfigError(f"{path} is not a .npy array ({' '.join(str(error).split())[:120]})") from None
    if not isinstance(array, np.ndarray):
        raise ConfigError(f"{path} is a .npz archive; expected one .npy array")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ConfigError(f"{path} holds {array.dtype} values; expected numbers")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ConfigError(f"{path} holds non-finite values (NaN or infinity)")
    return array


def check_shape(inputs: np.ndarray, input_shape, source: Path | str) -> None:
    expected = tuple(int(side) for side in input_shape)
    if inputs.ndim != len(expected) + 1 or tuple(inputs.shape[1:]) != expected:
        raise ConfigError(f"inputs of shape {tuple(inputs.shape)} do not fit {source}: it takes (N, "
                          f"{', '.join(map(str, expected))})")


def predict(path: Path | str, inputs: np.ndarray) -> np.ndarray:
    """Logits (N, classes) of the run directory or export file `path` on `inputs`."""
    path = Path(path)
    if path.is_dir():
        from bnnx.data import shape_only
        from bnnx.train.restore import restore_trained
        from bnnx.train.rundir import RunDir

        config = RunDir(path).config()
        dataset = shape_only(config.dataset)
        check_shape(inputs, dataset.input_shape, path)
        run = restore_trained(path, dataset, config)
        model: Any = run.model
        apply = jax.jit(lambda variables, x: model.apply(variables, x, train=False))
        return _batched(lambda x: apply(run.variables, x), inputs)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    from bnnx.packed.engine import load, packed_apply

    model, packed, manifest = load(path)
    if not manifest.get("input_shape"):
        raise CheckpointError(f"{path} does not record its input shape; export the run again")
    check_shape(inputs, manifest["input_shape"], path)
    apply = jax.jit(lambda packed, x: packed_apply(model, packed, x))
    return _batched(lambda x: apply(packed, x), inputs)


def _batched(apply, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(apply(inputs[i:i + BATCH])) for i in range(0, len(inputs), BATCH)]) \
        if len(inputs) else np.zeros((0, 0), np.float32)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
