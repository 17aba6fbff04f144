"""What the bench cases share: a synthetic data set of a given shape."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from bnnx.data.base import ArrayDataset


def synthetic_dataset(shape, batch_size: int, num_classes: int = 10) -> ArrayDataset:
    rng = np.random.default_rng(0)
    n = batch_size * 4
    images = rng.integers(0, 255, (n, *shape), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    return ArrayDataset("synthetic", images, labels, images[:batch_size], labels[:batch_size], num_classes,
                        normalize=lambda x: x.astype(jnp.float32) / 255.0)
