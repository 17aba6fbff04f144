"""scikit-learn's embedded 8×8 digits: no download, a fixed stratified train/test split."""

from __future__ import annotations

import numpy as np

from bnnx.data.base import ArrayDataset, normalizer

TEST_FRACTION = 0.25
SPLIT_SEED = 0  # fixed: the split is part of the data set's definition, not of a run


def load_digits_dataset() -> ArrayDataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]  # pixel values 0..16
    labels = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED)
    mean, std = float(x_train.mean() / 16.0), float(x_train.std() / 16.0)
    return ArrayDataset("digits", x_train, y_train, x_test, y_test, num_classes=10,
                        normalize=normalizer([mean], [std], scale=16.0))
