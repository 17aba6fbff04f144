"""Read a Keras 2 model file without TensorFlow: its architecture (the `model_config` JSON) and
each layer's weights in the layer's own order (trainable first, then non-trainable, as
`layer.weights` lists them).

Two formats: the legacy HDF5 file `model.save("m.h5")` writes (config in the root attribute
`model_config`, weights under `model_weights/<layer>/` listed by the attribute `weight_names`), and
the zip `model.save("m.keras")` writes (`config.json` plus `model.weights.h5`, whose weights sit
under `.../<layer>/vars/0, 1, ...`)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bnnx.errors import CheckpointError, ConfigError


class KerasFile(NamedTuple):
    config: dict  # {"class_name": "Sequential" | "Functional" | "Model", "config": {...}}
    weights: dict[str, list[np.ndarray]]  # layer name -> its weights, in `layer.weights` order


def read_keras_file(path: str | Path) -> KerasFile:
    """The architecture and weights of a .h5 or .keras file (one-line error if it is neither)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no model file {path}")
    if path.suffix not in (".h5", ".hdf5", ".keras"):
        raise ConfigError(f"{path} is not a Keras model file; expected .h5 or .keras")
    import h5py

    try:
        if path.suffix == ".keras":
            return _read_zip(path, h5py)
        with h5py.File(path, "r") as h5:
            return _read_legacy(h5, path)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {' '.join(str(error).split())[:200]}") from None


def _read_legacy(h5, path: Path) -> KerasFile:
    raw = h5.attrs.get("model_config")
    if raw is None:
        raise CheckpointError(f"{path} holds weights only (no model_config); save the whole model with model.save()")
    config = json.loads(raw if isinstance(raw, str) else raw.decode())
    group = h5["model_weights"] if "model_weights" in h5 else h5
    weights = {}
    for name in _names(group.attrs.get("layer_names", [])):
        layer = group[name]
        weights[name] = [np.asarray(layer[w], np.float32) for w in _names(layer.attrs.get("weight_names", []))]
    return KerasFile(config, weights)


def _read_zip(path: Path, h5py) -> KerasFile:
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        blob = archive.read("model.weights.h5")
    weights: dict[str, list[np.ndarray]] = {}
    with h5py.File(io.BytesIO(blob), "r") as h5:
        for name, key in _tracked_names(config):
            group = h5.get(f"layers/{key}/vars")
            if group is not None:
                weights[name] = [np.asarray(group[str(i)], np.float32) for i in range(len(group))]
    return KerasFile(config, weights)


def _tracked_names(config: dict) -> list[tuple[str, str]]:
    """(layer name, its group in model.weights.h5): the zip format files a layer under its class
    name in snake case, numbered in `model.layers` order (input_layer, quant_conv2d,
    quant_conv2d_1, ...), not under the layer's own name."""
    counts: dict[str, int] = {}
    out = []
    for layer in (config.get("config") or {}).get("layers") or []:
        base = _snake_case(layer["class_name"])
        index = counts.get(base, 0)
        counts[base] = index + 1
        name = (layer.get("config") or {}).get("name") or layer.get("name")
        out.append((name, base if index == 0 else f"{base}_{index}"))
    return out


def _snake_case(name: str) -> str:
    """keras.utils.generic_utils.to_snake_case."""
    name = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _names(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
