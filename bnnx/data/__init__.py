"""Data sets by name: the embedded digits, tensorflow-datasets sets read without TensorFlow, and
`shapes`: only an input shape and a class count, for a model imported from elsewhere whose inputs
fit no data set here (it predicts and exports; training and evaluating need examples)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from bnnx.config.schema import setting, validate
from bnnx.data.base import ArrayDataset
from bnnx.errors import ConfigError, DataNotFoundError, unknown_choice

# data set with examples -> (input shape without batch axis, classes); ImageNet's side is the configured crop
DATASET_SHAPES = {
    "digits": ((8, 8, 1), 10),
    "mnist": ((28, 28, 1), 10),
    "fashion_mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "imagenet2012": ((None, None, 3), 1000),
}
SHAPES = "shapes"  # the option whose config states its shapes and that has no examples
DATASETS = (*DATASET_SHAPES, SHAPES)


def dataset_shape(name: str, image_size: int = 224) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) of a data set with examples by name, without reading it."""
    if name not in DATASET_SHAPES:
        if name == SHAPES:
            raise ConfigError("dataset=shapes has no fixed shapes; its config gives them "
                              "(dataset.input_shape, dataset.num_classes)")
        raise unknown_choice("dataset", name, DATASETS)
    shape, classes = DATASET_SHAPES[name]
    return tuple(image_size if side is None else side for side in shape), classes


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    name: str = setting("digits", choices=tuple(DATASET_SHAPES))
    data_dir: str | None = None  # None: tfds's default (TFDS_DATA_DIR respected)
    augment: bool = True  # random crop + flip where the data set defines it (CIFAR)
    image_size: int = setting(224, ge=1)  # ImageNet crop size
    subset: int | None = setting(None, ge=1)  # use only the first N training examples (quick studies)

    has_examples: ClassVar[bool] = True

    def __post_init__(self):
        validate(self, "dataset")

    def shapes(self) -> tuple[tuple[int, ...], int]:
        """(input shape without batch axis, classes), without reading the data."""
        return dataset_shape(self.name, self.image_size)

    def require_examples(self) -> None:
        """Raise DataNotFoundError where the data set has no examples to train or evaluate on."""

    def described(self) -> str:
        """The data set as a message names it."""
        return self.name


@dataclasses.dataclass(frozen=True)
class ShapesConfig(DatasetConfig):
    """No data: the input shape and class count of a model imported from elsewhere (`bnnx import`
    records it where no data set above fits), enough to predict, export and summarize."""

    name: str = setting(SHAPES, choices=(SHAPES,))
    input_shape: tuple[int, ...] | None = setting(None, ge=1)  # without the batch axis, e.g. [64, 64, 3]
    num_classes: int | None = setting(None, ge=1)

    has_examples: ClassVar[bool] = False

    def __post_init__(self):
        super().__post_init__()
        if self.input_shape is None or self.num_classes is None or not self.input_shape:
            raise ConfigError("dataset=shapes needs dataset.input_shape (e.g. [64,64,3]) and dataset.num_classes")

    def shapes(self) -> tuple[tuple[int, ...], int]:
        assert self.input_shape is not None and self.num_classes is not None  # __post_init__ checked
        return self.input_shape, self.num_classes

    def described(self) -> str:
        shape, classes = self.shapes()
        return f"{self.name} ({'x'.join(map(str, shape))} inputs, {classes} classes)"

    def require_examples(self) -> None:
        shape, classes = self.shapes()
        raise DataNotFoundError(
            f"dataset=shapes records only {'x'.join(map(str, shape))} inputs and {classes} classes, no examples: "
            f"training and evaluating need a data set whose inputs and classes fit (dataset=NAME, or "
            f"`bnnx import ... --dataset NAME`; these exist: {', '.join(DATASET_SHAPES)})")


DATASET_CLASSES: dict[str, type[DatasetConfig]] = {SHAPES: ShapesConfig}  # the others: DatasetConfig


def dataset_class(name: str) -> type[DatasetConfig]:
    if name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    return DATASET_CLASSES.get(name, DatasetConfig)


def fitting_datasets(shape: tuple[int, ...], classes: int) -> list[str]:
    """The data sets with examples whose inputs and classes fit a model's (ImageNet: any square side)."""
    def fits(template: tuple) -> bool:
        square = len(shape) == 3 and shape[0] == shape[1]
        return len(template) == len(shape) and all(t == s or (t is None and square) for t, s in zip(template, shape))

    return [name for name, (template, count) in DATASET_SHAPES.items() if count == classes and fits(template)]


def dataset_overrides(shape: tuple[int, ...], classes: int, name: str | None = None) -> list[str]:
    """The `dataset` overrides of a run of a model taking `shape` inputs to `classes` logits: data set
    `name` if given (and fitting), else the first with examples that fits, else `shapes`."""
    fits = fitting_datasets(shape, classes)
    if name is not None and name not in DATASETS:
        raise unknown_choice("dataset", name, DATASETS)
    if name is not None and name != SHAPES and name not in fits:
        raise ConfigError(f"the model takes {'x'.join(map(str, shape))} inputs with {classes} classes; {name} does "
                          f"not fit ({'these do: ' + ', '.join(fits) if fits else 'none does'}); "
                          f"--dataset {SHAPES} records the model's shapes alone")
    chosen = name or (fits[0] if fits else SHAPES)
    if chosen == SHAPES:
        return [f"dataset={SHAPES}", f"dataset.input_shape=[{','.join(map(str, shape))}]",
                f"dataset.num_classes={classes}"]
    return [f"dataset={chosen}"] + ([f"dataset.image_size={shape[0]}"] if None in DATASET_SHAPES[chosen][0] else [])


def load_dataset(config: DatasetConfig):
    config.require_examples()
    if config.name not in DATASET_SHAPES:
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
    return ShapeOnlyDataset(config.name, *config.shapes())
