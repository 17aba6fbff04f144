"""Data sets by name: the embedded digits, and tensorflow-datasets sets read without TensorFlow."""

from __future__ import annotations

import dataclasses

from bnnx.data.base import ArrayDataset
from bnnx.errors import unknown_choice

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "imagenet2012")


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str = "digits"
    data_dir: str | None = None  # None: tfds's default (TFDS_DATA_DIR respected)
    augment: bool = True  # random crop + flip where the data set defines it (CIFAR)
    image_size: int = 224  # ImageNet crop size
    subset: int | None = None  # use only the first N training examples (quick studies)


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
