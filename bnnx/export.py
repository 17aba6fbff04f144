"""Bit-packed export of a trained run: one .npz holding every tensor plus a JSON manifest.

A binary-bound kernel is stored as the value the forward pass sees, q(w) (its latent weights
are not exported): binary kernels as sign bits (`numpy.packbits`, +1 ↦ 1, −1 ↦ 0, sign(0) = +1),
ternary kernels as two bit-planes (nonzero, positive). A per-channel scale (XNOR-Net's
mean|w|) is stored beside it as float32. A kernel whose precision mask is not all 1 (RPR's
relaxed weights) is stored as its effective float32 value where(mask, q(w)·scale, w).
Everything else (real kernels, BN, biases, the quant collection) is float32.

`unpack` decodes the file exactly; `Exported.variables()` gives flax variables for the run's
model with the stored kernels in place and every kernel mask at 0, so the forward pass uses
them as they are (input quantization is kept).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnnx.errors import CheckpointError
from bnnx.io import write_bytes
from bnnx.layers import QuantPolicy, binary_layer_paths, flat, set_quant, unflat
from bnnx.quantizers import mean_abs_scale

FORMAT = "bnnx-export/1"
MANIFEST_KEY = "manifest"


# ---- bit packing ---------------------------------------------------------------------

def pack_levels(levels: np.ndarray, ternary: bool) -> dict[str, np.ndarray]:
    """±1 (or −1/0/+1) values → bit-planes: `sign` (1 where > 0) and, for ternary, `nonzero`."""
    values = np.asarray(levels).ravel()
    planes = {"sign": np.packbits(values > 0)}
    if ternary:
        planes["nonzero"] = np.packbits(values != 0)
    return planes


def unpack_levels(planes: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `pack_levels`: float32 values in {−1, +1} (or {−1, 0, +1} with `nonzero`)."""
    count = math.prod(shape)
    values = np.where(np.unpackbits(planes["sign"], count=count) > 0, 1.0, -1.0)
    if "nonzero" in planes:
        values = np.where(np.unpackbits(planes["nonzero"], count=count) > 0, values, 0.0)
    return values.astype(np.float32).reshape(shape)


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
    entry = {"name": name, "encoding": "ternary_planes" if ternary else "sign_bits",
             "shape": list(quantized.shape), "arrays": pack_levels(quantized, ternary)}
    if scale is None:
        return [entry]
    scale_name = name + "_scale"
    entry["scale"] = scale_name
    return [entry, {"name": scale_name, "encoding": "float32", "derived": True, "arrays": {"value": scale}}]


def tensor_entries(variables: dict, policy) -> list[dict]:
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

def write_export(path: Path | str, entries: list[dict], info: dict) -> dict:
    """Write `entries` and a manifest (with `info`) atomically to one .npz; returns the manifest."""
    arrays, tensors = {}, []
    for entry in entries:
        keys = {}
        for plane, array in entry["arrays"].items():
            keys[plane] = f"a{len(arrays)}"
            arrays[keys[plane]] = array
        shape = entry.get("shape", list(np.shape(entry["arrays"].get("value", ()))))
        tensors.append({**{k: v for k, v in entry.items() if k != "arrays"}, "shape": shape, "arrays": keys})
    packed = sum(a.nbytes for a in arrays.values())
    floats = sum(4 * math.prod(t["shape"]) for t in tensors if not t.get("derived"))
    manifest = {"format": FORMAT, **info, "bytes": {"stored": packed, "float32": floats}, "tensors": tensors}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{MANIFEST_KEY: np.frombuffer(json.dumps(manifest).encode(), np.uint8)})
    write_bytes(path, buffer.getvalue())
    return manifest


@dataclasses.dataclass
class Exported:
    """A decoded export: `tensors` by name ('params/…/kernel' holds q(w) for packed kernels)."""

    tensors: dict[str, np.ndarray]
    manifest: dict

    def model(self):
        from bnnx.config import model_from_dict
        from bnnx.models import build_model

        return build_model(model_from_dict(self.manifest["model"]), self.manifest["num_classes"])

    def variables(self) -> dict[str, Any]:
        """Flax variables whose forward pass equals the run's: packed kernels as q(w)·scale, and
        every kernel mask 0 so the stored values are used as they are."""
        out: dict[str, dict] = {"params": {}, "batch_stats": {}, "quant": {}}
        for tensor in self.manifest["tensors"]:
            if tensor.get("derived"):
                continue
            collection, *path = tensor["name"].split("/")
            value = self.tensors[tensor["name"]]
            if "scale" in tensor:
                value = value * self.tensors[tensor["scale"]]
            out[collection][tuple(path)] = jnp.asarray(value)
        variables = {name: unflat(tree) for name, tree in out.items() if tree}
        if "quant" in variables:
            variables["quant"] = set_quant(variables["quant"], "kernel_mask", 0.0)
        return variables


def unpack(path: Path | str) -> Exported:
    """Read an export written by `write_export`."""
    try:
        with np.load(path) as data:
            manifest = json.loads(data[MANIFEST_KEY].tobytes().decode())
            arrays = {key: data[key] for key in data.files if key != MANIFEST_KEY}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path} is not a bnnx export: {str(error).splitlines()[0][:200]}") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {manifest.get('format')!r}; expected {FORMAT}")
    tensors = {}
    for tensor in manifest["tensors"]:
        planes = {plane: arrays[key] for plane, key in tensor["arrays"].items()}
        if tensor["encoding"] == "float32":
            tensors[tensor["name"]] = planes["value"]
        else:
            tensors[tensor["name"]] = unpack_levels(planes, tuple(tensor["shape"]))
    return Exported(tensors, manifest)


# ---- a run ---------------------------------------------------------------------------

def export_run(config, run_dir: Path | str, out: Path | str | None = None) -> tuple[Path, dict]:
    """Export the latest checkpoint of the run in `run_dir`, trained with `config` (a TrainConfig).
    Needs only the checkpoint: the data set's shapes are known by name, its examples are not read.
    Returns the written path (default `<run_dir>/export.npz`) and the manifest."""
    from bnnx.config import config_to_dict
    from bnnx.data import shape_only
    from bnnx.layers import record_layers
    from bnnx.train.experiment import example_input
    from bnnx.train.services import restore_state

    run_dir = Path(run_dir)
    dataset = shape_only(config.dataset)
    state, config, model = restore_state(run_dir, dataset, config)
    layers = record_layers(model, example_input(dataset))
    variables = jax.device_get(state.variables())
    info = {"model": config_to_dict(dataclasses.replace(config, model=config.trained_model))["model"],
            "dataset": config.dataset.name, "num_classes": dataset.num_classes,
            "input_shape": list(dataset.input_shape), "step": int(state.step),
            "binary_inputs": [r.name for r in layers if r.binary_inputs]}
    path = Path(out) if out is not None else run_dir / "export.npz"
    return path, write_export(path, tensor_entries(variables, getattr(model, "policy_of", model.policy)), info)
