"""Sign stability of binary-bound kernels during training.

"Weights having stable signs are important" (Stable signs / QBN paper, §2): in binary weight
networks the signs matter, and they settle early — training finds a *primary binary
subnetwork* whose signs are fixed after the first epochs. This module measures that on any
run (opt-in `analysis.signs=true`):

- flip ratio of epoch e: share of weights whose sign changed during epoch e,
  with sign(w) = +1 for w ≥ 0 (the effective binary weight; for Bop the weights are the signs);
- last-change epoch per weight (int16, −1 = never changed), so that after training
  fixed(k) = share of weights that never change after the first k epochs
  = #{last_change < k} / n, for k = 0 … E. A weight counted in fixed(k) has its final sign
  at epoch k, so fixed(k) is the share of signs equal to their final sign except for the
  rare weights that flip an even number of times after k (a lower bound).
- epochs until 95 % / 99 % of signs are fixed: the smallest k with fixed(k) ≥ 0.95 / 0.99.

The tracker keeps only signs (1 bit), last-change epochs (int16) and per-epoch flip counts,
persisted atomically each epoch in `signs_tracker.npz`, so a resumed run carries on exactly.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bnnx.errors import CheckpointError
from bnnx.io import write_bytes, write_json
from bnnx.layers import flat, param_labels
from bnnx.observers import Observer

TRACKER_FILE = "signs_tracker.npz"
SIGNS_FILE = "signs.json"
NEVER = -1
FIXED_SHARES = (0.95, 0.99)


def signs_of(kernel) -> np.ndarray:
    """True where the effective binary weight is +1: sign(w) with sign(0) = +1."""
    return np.asarray(kernel) >= 0


def fixed_fraction(last_change: np.ndarray, epochs: int) -> np.ndarray:
    """fixed(k) = share of weights whose last change happened before epoch k, k = 0 … E."""
    counts = np.bincount(last_change.ravel().astype(np.int64) - NEVER, minlength=epochs + 1)
    return np.cumsum(counts[:epochs + 1]) / max(last_change.size, 1)


def epochs_until_fixed(fixed: np.ndarray, share: float) -> int:
    """The smallest number of epochs k after which at least `share` of the signs never change."""
    return int(np.argmax(fixed >= share - 1e-12))


@dataclasses.dataclass(frozen=True)
class LayerTrack:
    """One layer's sign history in O(weights) memory, whatever the number of epochs."""

    signs: np.ndarray  # bool, shaped like the kernel
    last_change: np.ndarray  # int16, epoch of the last sign change, NEVER if none
    flips: np.ndarray  # int64 per finished epoch: weights whose sign changed in it

    @classmethod
    def start(cls, kernel) -> "LayerTrack":
        signs = signs_of(kernel)
        return cls(signs, np.full(signs.shape, NEVER, np.int16), np.zeros(0, np.int64))

    def advance(self, kernel, epoch: int) -> "LayerTrack":
        signs = signs_of(kernel)
        changed = signs != self.signs
        last_change = np.where(changed, np.int16(epoch), self.last_change).astype(np.int16)
        return LayerTrack(signs, last_change, np.append(self.flips, np.int64(changed.sum())))

    @property
    def size(self) -> int:
        return int(self.signs.size)

    @property
    def flip_ratios(self) -> np.ndarray:
        return self.flips / max(self.size, 1)


def summarize(last_change: np.ndarray, flips: np.ndarray, size: int) -> dict:
    """The signs.json entry of one layer (or of all layers together)."""
    epochs = len(flips)
    fixed = fixed_fraction(last_change, epochs)
    out = {"weights": int(size), "flip_ratio": (flips / max(size, 1)).tolist(), "fixed_fraction": fixed.tolist()}
    for share in FIXED_SHARES:
        out[f"epochs_until_{round(share * 100)}pct_fixed"] = epochs_until_fixed(fixed, share)
    return out


def tracked_kernels(params, quant, layers) -> tuple[dict[str, tuple], bool]:
    """Kernel paths to track, by layer name, and whether they are binary-bound.

    Binary-bound kernels (label 'binary'); in a run without any (the `fp` method), the
    hidden layers' kernels, so a full-precision baseline can be compared.
    """
    labels = flat(param_labels(params, quant))
    paths = [path for path, label in labels.items() if label == "binary"]
    binary = bool(paths)
    if not binary:
        flat_params = flat(params)
        paths = [r.path + ("kernel",) for r in layers if r.role == "hidden" and r.path + ("kernel",) in flat_params]
    return {"/".join(path[:-1]): path for path in sorted(paths)}, binary


@dataclasses.dataclass(frozen=True)
class Generation:
    """The tracker after `epochs` finished epochs; `step` is the train step at that point."""

    epochs: int
    step: int
    layers: dict[str, LayerTrack]


class SignTracker(Observer):
    """Training observer: `epoch_end(state, epoch) -> metrics`, `finish(run_dir)` writes signs.json.

    It keeps two generations on disk: the newest, and the newest one a checkpoint exists for
    (checked in `<run_dir>/checkpoints/<step>`), so a run resumed from any checkpoint — even
    after a crash between this file's write and the checkpoint's — picks the matching one.
    """

    def __init__(self, run_dir: Path, experiment):
        self.run_dir = Path(run_dir)
        self.file = self.run_dir / TRACKER_FILE
        state = experiment.state
        self.paths, self.binary = tracked_kernels(state.params, state.quant, experiment.layers)
        self.resumed = bool(experiment.config.resume) and self.file.exists()
        if self.resumed:
            self.generations = load_generations(self.file)
        else:
            kernels = self._kernels(state.params)
            self.generations = {0: Generation(0, 0, {n: LayerTrack.start(k) for n, k in kernels.items()})}
        self.committed = 0

    def _kernels(self, params) -> dict[str, np.ndarray]:
        flat_params = flat(params)
        return jax.device_get({name: flat_params[path] for name, path in self.paths.items()})

    def _checkpointed(self, generation: Generation) -> bool:
        return (self.run_dir / "checkpoints" / str(generation.step)).is_dir()

    def epoch_end(self, state, epoch: int) -> dict[str, float]:
        if epoch not in self.generations:
            raise CheckpointError(f"cannot continue sign tracking: {self.file} holds the state after epochs "
                                  f"{sorted(self.generations)}, the run resumes after {epoch}")
        current = self.generations[epoch]
        if self.resumed or epoch == 0 or self._checkpointed(current):
            self.committed = epoch
        self.resumed = False
        kernels = self._kernels(state.params)
        layers = {name: track.advance(kernels[name], epoch) for name, track in current.layers.items()}
        newest = Generation(epoch + 1, int(state.step), layers)
        self.generations = {self.committed: self.generations[self.committed], epoch + 1: newest}
        write_bytes(self.file, dump_generations(self.generations, self.binary))
        return epoch_metrics(layers)

    def latest(self) -> Generation:
        return self.generations[max(self.generations)]

    def finish(self, run_dir: Path, summary: dict | None = None) -> None:
        write_json(Path(run_dir) / SIGNS_FILE, signs_report(self.latest(), self.binary))


def epoch_metrics(layers: dict[str, LayerTrack]) -> dict[str, float]:
    """flip_ratio over all tracked weights and per layer, for metrics.jsonl."""
    total = sum(t.size for t in layers.values())
    if not total:
        return {}
    out = {"flip_ratio": float(sum(int(t.flips[-1]) for t in layers.values()) / total)}
    out.update({f"flip_ratio/{name}": float(t.flip_ratios[-1]) for name, t in layers.items()})
    return out


def signs_report(generation: Generation, binary: bool) -> dict:
    """The content of signs.json."""
    layers = generation.layers
    report = {
        "tracked": "binary-bound kernels" if binary else "hidden-layer kernels (the run has no binary-bound layers)",
        "epochs": generation.epochs,
        "sign_rule": "sign(w) with sign(0) = +1",
        "fixed_fraction_index": "k = epochs finished (0 = initialisation)",
        "layers": {name: summarize(t.last_change, t.flips, t.size) for name, t in layers.items()},
    }
    if layers:
        last_change = np.concatenate([t.last_change.ravel() for t in layers.values()])
        flips = np.sum([t.flips for t in layers.values()], axis=0)
        report["all"] = summarize(last_change, np.asarray(flips, np.int64).reshape(-1), last_change.size)
    return report


# ---- persistence: one .npz, written atomically ------------------------------------------

def dump_generations(generations: dict[int, Generation], binary: bool) -> bytes:
    arrays: dict[str, Any] = {"binary": np.asarray(binary)}  # Any: numpy types savez's **kwds as allow_pickle too
    for slot, generation in enumerate(generations.values()):
        arrays[f"g{slot}_epochs"] = np.asarray(generation.epochs)
        arrays[f"g{slot}_step"] = np.asarray(generation.step)
        arrays[f"g{slot}_names"] = np.asarray(list(generation.layers), dtype=str)
        for i, track in enumerate(generation.layers.values()):
            arrays[f"g{slot}_{i}_shape"] = np.asarray(track.signs.shape, np.int64)
            arrays[f"g{slot}_{i}_signs"] = np.packbits(track.signs.ravel())
            arrays[f"g{slot}_{i}_last_change"] = track.last_change
            arrays[f"g{slot}_{i}_flips"] = track.flips
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def load_generations(path: Path) -> dict[int, Generation]:
    try:
        with np.load(path) as data:
            generations = {}
            slot = 0
            while f"g{slot}_epochs" in data:
                layers = {}
                for i, name in enumerate(data[f"g{slot}_names"].tolist()):
                    shape = tuple(data[f"g{slot}_{i}_shape"].tolist())
                    signs = np.unpackbits(data[f"g{slot}_{i}_signs"], count=int(np.prod(shape))).astype(bool)
                    layers[name] = LayerTrack(signs.reshape(shape), data[f"g{slot}_{i}_last_change"],
                                              data[f"g{slot}_{i}_flips"])
                epochs = int(data[f"g{slot}_epochs"])
                generations[epochs] = Generation(epochs, int(data[f"g{slot}_step"]), layers)
                slot += 1
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"sign tracker file {path} is unreadable: {error}") from None
    return generations
