"""Readers for the files data sets are distributed as, checked before anything is written.

- idx (MNIST, Fashion-MNIST; LeCun et al. 1998, Xiao et al. 2017): a big-endian header
  (magic 0x0801 labels / 0x0803 images, then one uint32 per dimension) followed by uint8
  data; plain or gzip-compressed (Debian's dataset-fashion-mnist re-gzips the originals).
- CIFAR python-pickle batches (Krizhevsky 2009): dicts with b"data" (N, 3072) uint8 in
  channel-major order and b"labels" / b"fine_labels" / b"coarse_labels".

Every problem is one line: DataNotFoundError names the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path

import numpy as np

from bnnx.errors import DataNotFoundError

IDX_LABELS_MAGIC, IDX_IMAGES_MAGIC = 0x0801, 0x0803

# split -> (images file, labels file): the names MNIST and Fashion-MNIST are distributed under
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_file(folder: Path, stem: str, suffixes=("", ".gz")) -> Path:
    """`folder/stem` with the first suffix that exists (plain or gzip)."""
    for suffix in suffixes:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise DataNotFoundError(f"{folder} has no {stem}{'[' + '|'.join(s for s in suffixes if s) + ']'}")


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data  # gzip magic
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise DataNotFoundError(f"cannot read {path}: {error}") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array an idx file holds, shaped by its header."""
    data = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header or int.from_bytes(data[:4], "big") != magic:
        raise DataNotFoundError(f"{path} is not an idx file with magic {magic:#06x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise DataNotFoundError(f"{path} is corrupt: header says {shape} ({size} bytes), "
                                f"the file holds {len(data) - header}")
    return np.frombuffer(data, np.uint8, size, header).reshape(shape)


def read_idx_split(folder: Path, split: str, image_size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, H, W, 1) uint8, labels (N,) int64) of one split of an idx data set."""
    images_stem, labels_stem = IDX_FILES[split]
    images_path, labels_path = find_file(folder, images_stem), find_file(folder, labels_stem)
    images, labels = read_idx(images_path, IDX_IMAGES_MAGIC), read_idx(labels_path, IDX_LABELS_MAGIC)
    if images.shape[1:] != (image_size, image_size):
        raise DataNotFoundError(f"{images_path} holds {images.shape[1:]} images, expected {image_size}x{image_size}")
    if len(images) != len(labels):
        raise DataNotFoundError(f"{images_path} has {len(images)} images but {labels_path} {len(labels)} labels")
    return images[..., None], labels.astype(np.int64)


def check_idx_folder(folder: Path) -> None:
    """Read every split once so bad files fail before tfds writes anything."""
    for split in IDX_FILES:
        read_idx_split(folder, split)


# ---- CIFAR python-pickle batches -------------------------------------------------------

CIFAR_PICKLES = {
    "cifar10": {"archive": "cifar-10-python.tar.gz", "folder": "cifar-10-batches-py",
                "train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"],
                "meta": "batches.meta", "labels": {"label": b"labels"}},
    "cifar100": {"archive": "cifar-100-python.tar.gz", "folder": "cifar-100-python",
                 "train": ["train"], "test": ["test"], "meta": "meta",
                 "labels": {"coarse_label": b"coarse_labels", "label": b"fine_labels"}},
}


def cifar_folder(source: Path, name: str) -> Path:
    """The folder with the unpacked batches: `source` itself, its `cifar-*-py*` subfolder, or
    the tarball in `source` unpacked next to it."""
    layout = CIFAR_PICKLES[name]
    for folder in (source, source / layout["folder"]):
        if (folder / layout["test"][0]).is_file():
            return folder
    archive = source / layout["archive"]
    if not archive.is_file():
        raise DataNotFoundError(f"{source} has neither {layout['folder']}/ nor {layout['archive']}")
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(source, filter="data")
    except (OSError, tarfile.TarError, EOFError) as error:
        raise DataNotFoundError(f"cannot unpack {archive}: {error}") from None
    return cifar_folder(source, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as file:
            return pickle.load(file, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as error:
        raise DataNotFoundError(f"cannot read {path}: {error}") from None


def read_cifar_split(folder: Path, name: str, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(images (N, 32, 32, 3) uint8, {feature: labels (N,)}) in the batches' order."""
    layout = CIFAR_PICKLES[name]
    images, labels = [], {feature: [] for feature in layout["labels"]}
    for stem in layout[split]:
        batch = _unpickle(folder / stem)
        data = np.asarray(batch.get(b"data", []), np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataNotFoundError(f"{folder / stem} is not a CIFAR batch (data shape {data.shape})")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        for feature, key in layout["labels"].items():
            values = np.asarray(batch.get(key, []), np.int64)
            if len(values) != len(data):
                raise DataNotFoundError(f"{folder / stem} has {len(data)} images but {len(values)} {key.decode()}")
            labels[feature].append(values)
    return np.concatenate(images), {k: np.concatenate(v) for k, v in labels.items()}


def read_cifar_label_names(folder: Path, name: str) -> dict[str, list[str]]:
    meta = _unpickle(folder / CIFAR_PICKLES[name]["meta"])
    keys = {"label": [b"label_names", b"fine_label_names"], "coarse_label": [b"coarse_label_names"]}
    return {feature: [n.decode() for n in meta[key]] for feature in CIFAR_PICKLES[name]["labels"]
            for key in keys[feature] if key in meta}
