"""Offline tfds builders: the stock builders, reading local files instead of downloading.

Each class SUBCLASSES the stock tensorflow-datasets builder (same name, version, features,
split names and example keys), so what it writes is the stock data set: tfds orders examples
by a hash of (split, key), and the keys are the stock generator's (the example index in the
source files), hence the same order. Only the source differs: local files, read without
TensorFlow, written as array_record (the format `tfds.data_source` reads without TensorFlow).

    bnnx data prepare fashion_mnist --from /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.image_classification import cifar, mnist

from bnnx.data import local_files
from bnnx.data.tfds_source import how_to_prepare, resolve_data_dir
from bnnx.errors import DataNotFoundError, unknown_choice

FILE_FORMAT = "array_record"
SPLITS = {"train": tfds.Split.TRAIN, "test": tfds.Split.TEST}  # pyright: ignore[reportAttributeAccessIssue] (set at import)


def _png_ready(image: np.ndarray) -> Image.Image:
    """A PIL image tfds encodes with PIL (its numpy-array path needs TensorFlow)."""
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


class LocalFilesBuilder:
    """Mixin: a stock builder whose source is `source_dir` (checked before anything is written)."""

    name: str  # the stock builder's
    info: Any  # the stock builder's tfds.core.DatasetInfo

    def __init__(self, *, source_dir: str | Path, **kwargs):
        self.source_dir = Path(source_dir)
        super().__init__(**kwargs)

    def check_source(self) -> None:
        raise NotImplementedError

    def _generate_local(self, split: str):
        """(key, example) pairs of `split`, read from `source_dir`."""
        raise NotImplementedError

    def _split_generators(self, dl_manager):
        return {SPLITS[split]: self._generate_local(split) for split in SPLITS}


class IdxBuilder(LocalFilesBuilder):
    """MNIST-format idx files; keys are the example index, as in the stock `MNIST` generator."""

    def check_source(self) -> None:
        local_files.check_idx_folder(self.source_dir)

    def _generate_local(self, split: str):
        images, labels = local_files.read_idx_split(self.source_dir, split)
        for index, (image, label) in enumerate(zip(images, labels)):
            yield index, {"image": _png_ready(image), "label": label}


class LocalMnist(IdxBuilder, mnist.MNIST, skip_registration=True):
    name = "mnist"


class LocalFashionMnist(IdxBuilder, mnist.FashionMNIST, skip_registration=True):
    name = "fashion_mnist"


class CifarPickleBuilder(LocalFilesBuilder):
    """CIFAR python-pickle batches; keys and ids ("train_00042") as in the stock `Cifar10`
    generator, which reads the binary release of the same images in the same order."""

    def check_source(self) -> None:
        self.source_dir = local_files.cifar_folder(self.source_dir, self.name)
        for split in SPLITS:
            local_files.read_cifar_split(self.source_dir, self.name, split)
        self.label_names = local_files.read_cifar_label_names(self.source_dir, self.name)
        for feature in local_files.CIFAR_PICKLES[self.name]["labels"]:
            names, expected = self.label_names.get(feature, []), self.info.features[feature].num_classes
            if len(names) != expected or len(set(names)) != expected:
                raise DataNotFoundError(f"{self.source_dir} lists {len(names)} {feature} names, "
                                        f"expected {expected} distinct")

    def _split_generators(self, dl_manager):
        for feature, names in self.label_names.items():  # as the stock builder does from its meta files
            self.info.features[feature].names = names
        return super()._split_generators(dl_manager)

    def _generate_local(self, split: str):
        images, labels = local_files.read_cifar_split(self.source_dir, self.name, split)
        for index, image in enumerate(images):
            record = {feature: values[index] for feature, values in labels.items()}
            yield index, {**record, "id": f"{split}_{index:05d}", "image": _png_ready(image)}


class LocalCifar10(CifarPickleBuilder, cifar.Cifar10, skip_registration=True):
    name = "cifar10"


class LocalCifar100(CifarPickleBuilder, cifar.Cifar100, skip_registration=True):
    name = "cifar100"


LOCAL_BUILDERS = {b.name: b for b in (LocalMnist, LocalFashionMnist, LocalCifar10, LocalCifar100)}
STOCK_ONLY = ("imagenet2012",)  # prepared by tfds's own builder (needs TensorFlow)


def prepare(name: str, source: str | Path | None = None, data_dir: str | Path | None = None) -> Path:
    """Prepare data set `name` into `data_dir` (None: tfds's default) as array_record and
    return its folder. With `source`, read local files; without, fall back to tfds's stock
    download (needs TensorFlow and the network). imagenet2012: `source` is tfds's manual_dir."""
    if name not in LOCAL_BUILDERS and name not in STOCK_ONLY:
        raise unknown_choice("data set to prepare", name, [*LOCAL_BUILDERS, *STOCK_ONLY])
    data_dir = resolve_data_dir(data_dir)
    if source is not None and not Path(source).is_dir():
        raise DataNotFoundError(f"--from {source} is not a folder")
    if source is None or name in STOCK_ONLY:
        return prepare_with_stock_builder(name, data_dir, manual_dir=source)
    builder = LOCAL_BUILDERS[name](source_dir=source, data_dir=str(data_dir))
    builder.check_source()
    with _quiet_tfds():
        builder.download_and_prepare(file_format=FILE_FORMAT)
    return Path(builder.data_dir)


@contextlib.contextmanager
def _quiet_tfds():
    """No tqdm bars and no "Downloading and preparing dataset Unknown size": a local copy
    downloads nothing, and `bnnx data prepare` says where the set is once it is ready."""
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(True)


def prepare_with_stock_builder(name: str, data_dir: Path, manual_dir=None) -> Path:
    """tfds's own download_and_prepare: the fallback where TensorFlow (and, without
    `manual_dir`, the network) is available."""
    try:
        import tensorflow  # noqa: F401  (the stock generators read files with tf.io.gfile)
    except ImportError:
        if manual_dir:
            raise DataNotFoundError(f"preparing {name} runs tfds's own builder, which needs TensorFlow "
                                    f"(not installed): pip install tensorflow") from None
        raise DataNotFoundError(f"preparing {name} without --from needs TensorFlow (not installed); "
                                f"{how_to_prepare(name, data_dir)}") from None
    builder = tfds.builder(name, data_dir=str(data_dir))
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir) if manual_dir else None)
    try:
        builder.download_and_prepare(file_format=FILE_FORMAT, download_config=config)
    except Exception as error:  # tfds raises many kinds; the user needs one line
        raise DataNotFoundError(f"tfds could not prepare {name}: {' '.join(str(error).split())[:200]}") from None
    return Path(builder.data_dir)
