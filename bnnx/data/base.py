"""The data-set interface the training loop uses, and an in-memory implementation."""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

# (images, labels, weights): weights are 1 for real examples, 0 for padding of the last test batch.
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def normalizer(mean, std, scale: float = 255.0) -> Callable:
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)

    def normalize(images):
        return (images.astype(jnp.float32) / scale - mean) / std

    return normalize


@dataclasses.dataclass
class ArrayDataset:
    """A data set held in memory as arrays (raw pixels; `normalize` runs inside the jitted step).

    `augment(images, rng)` runs on the JAX side on normalized training images (e.g. random
    crop and flip for CIFAR); None means no augmentation.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int
    normalize: Callable = lambda x: x.astype(jnp.float32)
    augment: Callable | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.num_train // batch_size)

    def train_batches(self, epoch: int, batch_size: int, seed: int, start: int = 0) -> Iterator[Batch]:
        """Shuffled full batches; the order depends only on (seed, epoch), so a resumed epoch
        skipping `start` batches sees exactly the batches the interrupted one would have."""
        order = np.random.default_rng([seed, epoch]).permutation(self.num_train)
        batch_size = min(batch_size, self.num_train)
        ones = np.ones(batch_size, np.float32)
        for step in range(start, self.steps_per_epoch(batch_size)):
            index = np.sort(order[step * batch_size:(step + 1) * batch_size])
            yield self.train_images[index], self.train_labels[index], ones

    def test_batches(self, batch_size: int) -> Iterator[Batch]:
        """The whole test set; the last batch is padded to full size with weight 0, so every
        evaluation batch has one shape and compiles once."""
        n = len(self.test_labels)
        batch_size = min(batch_size, n)
        for begin in range(0, n, batch_size):
            yield pad_batch(self.test_images[begin:begin + batch_size], self.test_labels[begin:begin + batch_size],
                            batch_size)


def pad_batch(images: np.ndarray, labels: np.ndarray, batch_size: int) -> Batch:
    """(images, labels, weights) padded to `batch_size` with zeros of weight 0."""
    weights = np.ones(len(labels), np.float32)
    pad = batch_size - len(labels)
    if pad:
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
        weights = np.concatenate([weights, np.zeros(pad, np.float32)])
    return images, labels, weights


def random_crop_flip(padding: int = 4) -> Callable:
    """CIFAR augmentation on the JAX side: pad-and-random-crop plus random horizontal flip."""

    def augment(images: jax.Array, rng: jax.Array) -> jax.Array:
        n, h, w, _ = images.shape
        crop_rng, flip_rng = jax.random.split(rng)
        padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
        offsets = jax.random.randint(crop_rng, (n, 2), 0, 2 * padding + 1)

        def crop(image, offset):
            return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

        cropped = jax.vmap(crop)(padded, offsets)
        flip = jax.random.bernoulli(flip_rng, 0.5, (n, 1, 1, 1))
        return jnp.where(flip, cropped[:, :, ::-1, :], cropped)

    return augment
