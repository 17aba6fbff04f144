"""tensorflow-datasets sets, read without TensorFlow through `tfds.data_source` (array_record).

MNIST, Fashion-MNIST and CIFAR-10/100 are small: they load whole into memory as raw uint8
arrays (an `ArrayDataset`; batching and CIFAR's crop-and-flip run on the JAX side, per-channel
mean/std normalization inside the jitted step). ImageNet is streamed from the data source
(`bnnx.data.streaming`). A set that is not prepared fails at once with the command that
prepares it: nothing here touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bnnx.data.base import ArrayDataset, normalizer, random_crop_flip
from bnnx.data.streaming import StreamingDataset, decode_image
from bnnx.errors import DataNotFoundError

# what `bnnx data prepare NAME` needs for each set (see bnnx/data/builders.py)
PREPARE_SOURCES = {
    "fashion_mnist": "--from /usr/share/datasets/fashion-mnist (Debian package dataset-fashion-mnist)",
    "mnist": "--from DIR (a folder with MNIST's idx files: train-images-idx3-ubyte.gz, "
             "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz)",
    "cifar10": "--from DIR (a folder with cifar-10-python.tar.gz)",
    "cifar100": "--from DIR (a folder with cifar-100-python.tar.gz)",
    "imagenet2012": "--from DIR (tfds's manual_dir with ILSVRC2012_img_train.tar and "
                    "ILSVRC2012_img_val.tar; needs TensorFlow)",
}
TEST_SPLIT = {"imagenet2012": "validation"}  # others: "test"
AUGMENT = {"cifar10": random_crop_flip(4), "cifar100": random_crop_flip(4)}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def default_data_dir() -> Path:
    """tfds's default data folder (TFDS_DATA_DIR, else ~/tensorflow_datasets), read now."""
    from tensorflow_datasets.core.constants import get_default_data_dir

    return Path(get_default_data_dir())


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else default_data_dir()


def how_to_prepare(name: str, data_dir: Path) -> str:
    where = "" if Path(data_dir) == default_data_dir() else f" --data-dir {data_dir}"
    return f"run: bnnx data prepare {name}{where} {PREPARE_SOURCES[name]}"


def prepared_builder(name: str, data_dir: Path):
    """The tfds builder of a set prepared in `data_dir`, or DataNotFoundError with the fix.

    The folder is checked before tfds is asked, so a missing set never reaches tfds's
    download code (offline, its retries take minutes)."""
    import tensorflow_datasets as tfds

    missing = DataNotFoundError(f"{name} is not prepared in {data_dir}; {how_to_prepare(name, data_dir)}")
    if not (data_dir / name).is_dir():
        raise missing
    builder = tfds.builder(name, data_dir=str(data_dir))
    if not builder.is_prepared():
        raise missing
    formats = {str(f.value) for f in builder.info.available_file_formats()}
    if "array_record" not in formats:
        raise DataNotFoundError(f"{name} in {builder.data_dir} is stored as {', '.join(sorted(formats))}; "
                                f"bnnx reads array_record without TensorFlow: prepare a copy in another folder "
                                f"and point dataset.data_dir at it: bnnx data prepare {name} --data-dir OTHER_DIR "
                                f"{PREPARE_SOURCES[name]}")
    return builder


def data_source(builder, split: str, decode_images: bool = True):
    """Random-access view of one split; without `decode_images`, images stay encoded bytes."""
    import tensorflow_datasets as tfds

    decoders = None if decode_images else {"image": tfds.decode.SkipDecoding()}
    return builder.as_data_source(split=split, decoders=decoders)


def load_tfds_dataset(config):
    """The data set `config` (a DatasetConfig) names, with the `ArrayDataset` interface."""
    data_dir = resolve_data_dir(config.data_dir)
    builder = prepared_builder(config.name, data_dir)
    if config.name == "imagenet2012":
        return load_imagenet(builder, config)
    train_images, train_labels = read_split(builder, "train")
    test_images, test_labels = read_split(builder, TEST_SPLIT.get(config.name, "test"))
    mean, std = channel_statistics(train_images)
    return ArrayDataset(config.name, train_images, train_labels, test_images, test_labels,
                        # tfds types `features` as any FeatureConnector; a builder's is a FeaturesDict
                        num_classes=builder.info.features["label"].num_classes,  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
                        normalize=normalizer(mean, std), augment=AUGMENT.get(config.name))


def read_split(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as (images uint8 (N, H, W, C), labels int32 (N,)) in stored order.

    Decoding 70,000 PNGs takes ~15 s on a small CPU, so the arrays are cached next to the
    array_record files (keyed by their names, sizes and times; skipped if read-only)."""
    folder = Path(builder.data_dir)
    shards = sorted(folder.glob(f"{builder.name}-{split}.array_record-*"))
    fingerprint = ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in shards)
    cache = folder / f"bnnx-arrays-{split}.npz"
    try:
        with np.load(cache) as saved:
            if str(saved["fingerprint"]) == fingerprint:
                return saved["images"], saved["labels"]
    except (OSError, KeyError, ValueError):
        pass
    images, labels = decode_split(builder, split)
    try:
        partial = folder / f"{cache.name}.{os.getpid()}.tmp"
        with open(partial, "wb") as file:
            np.savez(file, images=images, labels=labels, fingerprint=np.array(fingerprint))
        os.replace(partial, cache)
    except OSError:
        pass
    return images, labels


def decode_split(builder, split: str, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    source = data_source(builder, split, decode_images=False)
    images, labels = [], []
    for begin in range(0, len(source), chunk):
        records = source.__getitems__(range(begin, min(begin + chunk, len(source))))
        images.extend(decode_image(r["image"]) for r in records)
        labels.extend(r["label"] for r in records)
    return np.stack(images), np.asarray(labels, np.int32)


def channel_statistics(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images on the 0..1 scale, exact, from per-channel
    histograms (no float copy of the whole set)."""
    channels = images.shape[-1]
    counts = np.zeros((channels, 256), np.float64)
    for begin in range(0, len(images), chunk):
        pixels = images[begin:begin + chunk].reshape(-1, channels)
        for c in range(channels):
            counts[c] += np.bincount(pixels[:, c], minlength=256)
    values = np.arange(256) / 255.0
    total = counts.sum(1)
    mean = counts @ values / total
    return mean.tolist(), np.sqrt(counts @ values ** 2 / total - mean ** 2).tolist()


def load_imagenet(builder, config):
    return StreamingDataset(
        config.name, data_source(builder, "train", decode_images=False),
        data_source(builder, TEST_SPLIT[config.name], decode_images=False),
        num_classes=builder.info.features["label"].num_classes, normalize=normalizer(IMAGENET_MEAN, IMAGENET_STD),
        image_size=config.image_size, subset=config.subset)
