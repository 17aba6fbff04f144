"""Data sets by name: the embedded digits, and tensorflow-datasets sets read without TensorFlow."""

from __future__ import annotations

import dataclasses

from bnnx.config.schema import setting, validate
from bnnx.data.base import ArrayDataset
from bnnx.errors import DataNotFoundError, unknown_choice

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet2012")

# data set -> (input shape without batch axis, classes); ImageNet's side is the configured crop
DATASET_SHAPES = {
    "digits": ((8, 8, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet2012": ((None, None, 3), 1000),
}


def dataset_shape(name: str, image_size: int = 224) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) of a data set by name, without reading it."""
    if name not in DATASET_SHAPES:
        raise unknown_choice("dataset", name, DATASET_SHAPES)
    shape, classes = DATASET_SHAPES[name]
    return tuple(image_size if side is None else side for side in shape), classes


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str = setting("digits", choices=DATASETS)
    data_dir: str | None = None  # None: tfds's default (TFDS_DATA_DIR respected)
    augment: bool = True  # random crop + flip where the data set defines it (CIFAR)
    image_size: int = setting(224, ge=1)  # ImageNet crop size
    subset: int | None = setting(None, ge=1)  # use only the first N training examples (quick studies)

    def __post_init__(self):
        validate(self, "dataset")


def load_dataset(config: DatasetConfig):
    if config.name not in DATASETS:
        raise unknown_choice("dataset", config.name, DATASETS)
    if config.name == "digits":
        from bnnx.data.digits import load_digits_dataset

        dataset = load_digits_dataset()
    else:
        from bnnx.data.tfds_source import load_tfds_dataset

        dataset = load_tfds_dataset(config)
    if config.subset and isinstance(dataset, ArrayDataset):
        dataset = dataclasses.replace(dataset, train_images=dataset.train_images[:config.subset],
                                      train_labels=dataset.train_labels[:config.subset])
    return dataset


@dataclasses.dataclass(frozen=True)
class ShapeOnlyDataset:
    """A data set's shapes without its examples: enough to build a run's model and train state
    abstractly (to restore or export a checkpoint) on a machine that does not hold the data."""

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    augment = None

    @staticmethod
    def normalize(images):
        return images

    def steps_per_epoch(self, batch_size: int) -> int:
        return 1  # schedules only; no shape depends on it

    def _no_examples(self, *args, **kwargs):
        raise DataNotFoundError(f"this needs the examples of {self.name}, not only its shapes; "
                                f"prepare it with `bnnx data prepare {self.name}`")

    train_batches = test_batches = _no_examples


def shape_only(config: DatasetConfig) -> ShapeOnlyDataset:
    shape, classes = dataset_shape(config.name, config.image_size)
    return ShapeOnlyDataset(config.name, shape, classes)
