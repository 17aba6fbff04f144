"""A data set streamed from a tfds data source (ImageNet: too large to hold in memory).

Batches are read from the array_record source and decoded with PIL in a thread pool, one
batch ahead of the training step. Preprocessing is the standard ImageNet recipe (He et al.
2016; Krizhevsky et al. 2012) as BNN papers use it: training images are resized so the
shorter side is `image_size·256/224`, randomly cropped to `image_size` and randomly flipped;
test images are resized the same way and center-cropped. Randomness per image depends only on
(seed, epoch, example index), so a resumed epoch sees the batches the interrupted one would
have. Images stay uint8; `normalize` runs inside the jitted step.
"""

from __future__ import annotations

import dataclasses
import io
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
from PIL import Image

from bnnx.data.base import Batch, pad_batch


class Records(Protocol):
    """An array_record data source: random access to a batch of records at once."""

    def __len__(self) -> int: ...

    def __getitems__(self, keys: list[int]) -> list: ...


def decode_image(encoded: bytes, mode: str | None = None) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 (H, W, C); `mode` ("RGB") converts grayscale/CMYK images."""
    with Image.open(io.BytesIO(encoded)) as image:
        array = np.asarray(image.convert(mode) if mode and image.mode != mode else image, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def resize_shorter_side(image: np.ndarray, size: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = size / min(height, width)
    shape = (max(size, round(width * scale)), max(size, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(shape, Image.Resampling.BILINEAR))


def crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return image[top:top + size, left:left + size]


def train_transform(image: np.ndarray, rng: np.random.Generator, resize: int, size: int) -> np.ndarray:
    """Resize the shorter side to `resize`, random `size`×`size` crop, random horizontal flip."""
    image = resize_shorter_side(image, resize)
    top = rng.integers(0, image.shape[0] - size + 1)
    left = rng.integers(0, image.shape[1] - size + 1)
    image = crop(image, top, left, size)
    return image[:, ::-1] if rng.random() < 0.5 else image


def test_transform(image: np.ndarray, resize: int, size: int) -> np.ndarray:
    """Resize the shorter side to `resize`, central `size`×`size` crop."""
    image = resize_shorter_side(image, resize)
    return crop(image, (image.shape[0] - size) // 2, (image.shape[1] - size) // 2, size)


@dataclasses.dataclass
class StreamingDataset:
    """The `ArrayDataset` interface over random-access sources of {"image": bytes, "label": int}."""

    name: str
    train_source: Records
    test_source: Records
    num_classes: int
    normalize: Callable
    image_size: int = 224
    augment: Callable | None = None  # crop and flip already happen while decoding
    subset: int | None = None  # use only the first N training examples
    workers: int = dataclasses.field(default_factory=lambda: min(32, os.cpu_count() or 1))

    @property
    def resize(self) -> int:
        return round(self.image_size * 256 / 224)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.image_size, self.image_size, 3)

    @property
    def num_train(self) -> int:
        return min(len(self.train_source), self.subset or len(self.train_source))

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.num_train // batch_size)

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[Batch]:
        """Shuffled full batches; order and crops depend only on (seed, epoch)."""
        order = np.random.default_rng([seed, epoch]).permutation(self.num_train)
        batch_size = min(batch_size, self.num_train)
        ones = np.ones(batch_size, np.float32)

        def transform(image, example):
            rng = np.random.default_rng([seed, epoch, int(example)])
            return train_transform(image, rng, self.resize, self.image_size)

        steps = range(start, self.steps_per_epoch(batch_size))
        batches = ((np.sort(order[s * batch_size:(s + 1) * batch_size]), transform) for s in steps)
        for images, labels in self._stream(self.train_source, batches):
            yield images, labels, ones

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole test split, the last batch padded with weight-0 examples."""
        n = len(self.test_source)
        batch_size = min(batch_size, n)

        def transform(image, example):
            return test_transform(image, self.resize, self.image_size)

        batches = ((np.arange(b, min(b + batch_size, n)), transform) for b in range(0, n, batch_size))
        for images, labels in self._stream(self.test_source, batches):
            yield pad_batch(images, labels, batch_size)

    def _stream(self, source: Records, batches: Iterable[tuple[np.ndarray, Callable]]) -> Iterator:
        """(images, labels) for each (example indices, transform), decoded by a thread pool
        while the previous batch trains."""
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(self.workers) as decoders:

            def load(index, transform):
                records = source.__getitems__([int(i) for i in index])
                images = decoders.map(lambda k: transform(decode_image(records[k]["image"], "RGB"), index[k]),
                                      range(len(records)))
                return np.stack(list(images)), np.asarray([r["label"] for r in records], np.int32)

            jobs = iter(batches)
            pending = next((reader.submit(load, *job) for job in jobs), None)
            while pending is not None:
                result = pending.result()
                pending = next((reader.submit(load, *job) for job in jobs), None)
                yield result
