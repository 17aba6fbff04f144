"""Bit-packed export of a trained run: one .npz holding every tensor plus a JSON manifest.

A binary-bound kernel is stored as the value the forward pass sees, q(w) (its latent weights
are not exported): binary kernels as sign bits in uint32 words along the reduction axis, one row
per output channel (+1 ↦ 1, −1 ↦ 0, sign(0) = +1; layout in `bnnx.packed.bits`), ternary kernels
as two such bit-planes (positive, nonzero); the packed engine (`bnnx.packed`) computes on them.
A per-channel scale (XNOR-Net's mean|w|) is stored beside it as float32. A kernel whose precision
mask is not all 1 (RPR's relaxed weights) is stored as its effective float32 value
where(mask, q(w)·scale, w).
Everything else (real kernels, BN, biases, the quant collection) is float32.
A BatchNorm the packed engine folds (`bnnx.packed.fold`) is stored beside them as `fold/<consumer
layer>` (derived, int32): per output channel c of its `producer` layer, the consumer's input bit is
multiplier[c]·y ≥ threshold[c] on the producer's integer sums y (after the max-pools between them):
what an embedded consumer of the words runs instead of the float BN. The engine itself finds them
again at load, on the device that runs it (see `bnnx.packed.engine.load`).

This module is the file format, imported by its writer (`bnnx.export.writer`) and by every reader
(the packed engine, exporters to other runtimes). `unpack` reads the file; `Exported.variables()`
gives flax variables for the run's model with the stored kernels decoded to float in place and
every kernel mask at 0, so the float forward pass uses them as they are (input quantization is
kept): the reference the packed engine must equal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any, Callable

import jax.numpy as jnp
import numpy as np

from bnnx.errors import CheckpointError
from bnnx.io import write_bytes
from bnnx.layers import QuantPolicy, binary_layer_paths, flat, set_quant, unflat
from bnnx.packed.bits import pack_kernel, unpack_kernel
from bnnx.quantizers import mean_abs_scale

FORMAT = "bnnx-export/3"
READABLE_FORMATS = ("bnnx-export/2", FORMAT)  # 3 added the int32 blob and the fold thresholds
PACKED_ENCODINGS = ("sign_words", "ternary_words")
FOLD_ENCODING = "sign_thresholds"
BLOBS = {"words": np.uint32, "ints": np.int32, "floats": np.float32}
MANIFEST_KEY = "manifest"


# ---- from variables to tensors -------------------------------------------------------

def layer_scale(policy: QuantPolicy, kernel, layer_params: dict):
    """The factor the forward pass multiplies q(w) by (see `layers._Quantized._scale`)."""
    if policy.scaling == "mean_abs":
        return np.asarray(mean_abs_scale(jnp.asarray(kernel)), np.float32)
    if policy.scaling == "learned":
        return np.asarray(layer_params["scale"], np.float32)
    return None


def kernel_entries(name: str, kernel, mask, beta, policy: QuantPolicy, layer_params: dict) -> list[dict]:
    """Entries (name, encoding, arrays) for one binary-bound kernel."""
    quantized = np.asarray(policy.kernel_quantizer(jnp.asarray(kernel), beta=beta, train=False), np.float32)
    scale = layer_scale(policy, kernel, layer_params)
    if not np.all(np.asarray(mask) > 0):
        effective = quantized * (1.0 if scale is None else scale)
        value = np.where(np.asarray(mask) > 0, effective, np.asarray(kernel, np.float32))
        return [{"name": name, "encoding": "float32", "arrays": {"value": value.astype(np.float32)}}]
    ternary = policy.kernel_quantizer.levels == 3
    entry = {"name": name, "encoding": "ternary_words" if ternary else "sign_words",
             "shape": list(quantized.shape), "arrays": pack_kernel(quantized, ternary)}
    if scale is None:
        return [entry]
    scale_name = name + "_scale"
    entry["scale"] = scale_name
    return [entry, {"name": scale_name, "encoding": "float32", "derived": True, "arrays": {"value": scale}}]


def tensor_entries(variables: dict, policy: QuantPolicy | Callable[[tuple], QuantPolicy]) -> list[dict]:
    """Every tensor of `variables` ('params', 'batch_stats', 'quant') as export entries; `policy`
    is a QuantPolicy or a function of the layer path giving one (`Binarized.policy_of`)."""
    policy_of = policy if callable(policy) else (lambda layer: policy)
    params, quant = flat(variables["params"]), flat(variables.get("quant", {}))
    packed = set(binary_layer_paths(variables.get("quant", {})))
    entries = []
    for collection in ("params", "batch_stats", "quant"):
        for path, value in flat(variables.get(collection, {})).items():
            name = "/".join((collection, *path))
            layer = path[:-1]
            if collection == "params" and path[-1] == "kernel" and layer in packed:
                layer_params = {key[-1]: v for key, v in params.items() if key[:-1] == layer}
                entries += kernel_entries(name, value, quant[layer + ("kernel_mask",)],
                                          quant.get(layer + ("beta",), 1.0), policy_of(layer), layer_params)
            else:
                entries.append({"name": name, "encoding": "float32",
                                "arrays": {"value": np.asarray(value, np.float32)}})
    return entries


# ---- the file --------------------------------------------------------------------------

def fold_entries(folds: dict) -> list[dict]:
    """Entries for the engine's folded BatchNorms ({consumer path: SignThresholds})."""
    return [{"name": f"fold/{consumer}", "encoding": FOLD_ENCODING, "derived": True, "producer": fold.producer,
             "batch_norm": fold.batch_norm, "shape": [int(np.size(fold.threshold))],
             "arrays": {"multiplier": np.asarray(fold.multiplier, np.int32),
                        "threshold": np.asarray(fold.threshold, np.int32)}}
            for consumer, fold in folds.items()]


def _blob(array: np.ndarray) -> str:
    return {np.dtype(np.uint32): "words", np.dtype(np.int32): "ints"}.get(array.dtype, "floats")


def _layout(entries: list[dict], info: dict) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the manifest (with `info`) that hold `entries`.

    All uint32 words go into one array, int32 values into another and float32 values into a
    third, each tensor's planes recorded as [array, offset, count, shape]: one zip entry per kind
    instead of one per tensor keeps the file at its data's size plus a small header."""
    blobs: dict[str, list[np.ndarray]] = {name: [] for name in BLOBS}
    sizes = dict.fromkeys(BLOBS, 0)
    tensors = []
    for entry in entries:
        where = {}
        for plane, array in entry["arrays"].items():
            blob = _blob(array)
            where[plane] = [blob, sizes[blob], int(array.size), list(array.shape)]
            blobs[blob].append(array.ravel().astype(BLOBS[blob]))
            sizes[blob] += int(array.size)
        shape = entry.get("shape", list(np.shape(entry["arrays"].get("value", ()))))
        tensors.append({**{k: v for k, v in entry.items() if k != "arrays"}, "shape": shape, "arrays": where})
    arrays = {name: np.concatenate(parts) if parts else np.zeros(0, BLOBS[name]) for name, parts in blobs.items()
              if parts or name != "ints"}  # an export without folds has no int32 entry (nor its zip header)
    floats = sum(4 * math.prod(t["shape"]) for t in tensors if not t.get("derived"))
    stored = sum(a.nbytes for a in arrays.values())
    manifest = {"format": FORMAT, **info, "bytes": {"stored": stored, "float32": floats}, "tensors": tensors}
    return arrays, manifest


def export_bytes(entries: list[dict], info: dict) -> tuple[bytes, dict]:
    """The .npz of `entries` and a manifest (with `info`), and the manifest (layout: `_layout`)."""
    arrays, manifest = _layout(entries, info)
    buffer = io.BytesIO()
    payload: dict[str, Any] = {**arrays, MANIFEST_KEY: np.frombuffer(json.dumps(manifest).encode(), np.uint8)}
    np.savez(buffer, **payload)  # Any: numpy types savez's **kwds as allow_pickle too
    return buffer.getvalue(), manifest


def write_export(path: Path | str, entries: list[dict], info: dict) -> dict:
    """Write `entries` and a manifest (with `info`) atomically to one .npz (`export_bytes`);
    returns the manifest."""
    data, manifest = export_bytes(entries, info)
    write_bytes(path, data)
    return manifest


def _plane(arrays: dict, where: list) -> np.ndarray:
    blob, offset, count, shape = where
    return arrays[blob][offset:offset + count].reshape(shape)


@dataclasses.dataclass
class Exported:
    """A read export: float `tensors` by name, the packed kernels' word `planes` by name, the
    folded BatchNorms' `thresholds` (multiplier, threshold) by consumer layer."""

    tensors: dict[str, np.ndarray]
    planes: dict[str, dict[str, np.ndarray]]
    manifest: dict
    thresholds: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    def model(self):
        from bnnx.config import model_from_dict
        from bnnx.models import build_model

        return build_model(model_from_dict(self.manifest["model"]), self.manifest["num_classes"])

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(next(t["shape"] for t in self.manifest["tensors"] if t["name"] == name))

    def decoded(self, name: str) -> np.ndarray:
        """A tensor as float32 values (a packed kernel as its ±1 / 0 levels, without its scale)."""
        return unpack_kernel(self.planes[name], self.shape(name)) if name in self.planes else self.tensors[name]

    def variables(self, packed: bool = True) -> dict[str, Any]:
        """Flax variables whose float forward pass equals the run's: packed kernels decoded to
        q(w)·scale (left out with `packed=False`), and every kernel mask 0 so the stored values
        are used as they are."""
        out: dict[str, dict] = {"params": {}, "batch_stats": {}, "quant": {}}
        for tensor in self.manifest["tensors"]:
            if tensor.get("derived") or (not packed and tensor["name"] in self.planes):
                continue
            collection, *path = tensor["name"].split("/")
            value = self.decoded(tensor["name"])
            if "scale" in tensor:
                value = value * self.tensors[tensor["scale"]]
            out[collection][tuple(path)] = jnp.asarray(value)
        variables = {name: unflat(tree) for name, tree in out.items() if tree}
        if "quant" in variables:
            variables["quant"] = set_quant(variables["quant"], "kernel_mask", 0.0)
        return variables


def unpack(path) -> Exported:
    """Read an export written by `write_export` (a path, or a binary file object)."""
    if not _is_archive(path):  # np.load would take it for a pickle and suggest allow_pickle
        raise CheckpointError(f"{path} is not a bnnx export: not the .npz archive `bnnx export` writes")
    try:
        with np.load(path) as data:
            manifest = json.loads(data[MANIFEST_KEY].tobytes().decode())
            arrays = {key: data[key] for key in data.files if key != MANIFEST_KEY}
        if manifest.get("format") not in READABLE_FORMATS:
            raise CheckpointError(f"{path} has format {manifest.get('format')!r}; expected {FORMAT}")
        return _read(arrays, manifest)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        raise CheckpointError(f"{path} is not a bnnx export: {reason}") from None


def exported(entries: list[dict], info: dict) -> Exported:
    """The export of `entries` (with `info`) as `unpack` reads it from the file, without a file."""
    return _read(*_layout(entries, info))


def _read(arrays: dict[str, np.ndarray], manifest: dict) -> Exported:
    tensors, planes, thresholds = {}, {}, {}
    for tensor in manifest["tensors"]:
        found = {plane: _plane(arrays, where) for plane, where in tensor["arrays"].items()}
        if tensor["encoding"] in PACKED_ENCODINGS:
            planes[tensor["name"]] = found
        elif tensor["encoding"] == FOLD_ENCODING:
            thresholds[tensor["name"].removeprefix("fold/")] = found
        else:
            tensors[tensor["name"]] = found["value"]
    return Exported(tensors, planes, manifest, thresholds)


def _is_archive(path) -> bool:
    """Whether `path` (or a file object) is a zip archive, as every .npz is; a missing path
    passes, for np.load to name it."""
    if hasattr(path, "seek"):
        where = path.tell()
        try:
            return zipfile.is_zipfile(path)
        finally:
            path.seek(where)
    return not Path(path).is_file() or zipfile.is_zipfile(path)
