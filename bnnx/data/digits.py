"""The 8×8 digits (UCI, as scikit-learn ships them), embedded with their fixed stratified
train/test split: no download, and no scikit-learn import (over a second of a digits run's start).

`digits.npz` holds scikit-learn's `load_digits()` split by `train_test_split(test_size=0.25,
stratify=labels, random_state=0)` as uint8 (the pixels are the integers 0..16), as
`write_digits_file()` wrote it; tests/test_data_digits.py holds the loaded arrays to that split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from bnnx.data.base import ArrayDataset, normalizer

DIGITS_FILE = Path(__file__).with_name("digits.npz")
TEST_FRACTION = 0.25
SPLIT_SEED = 0  # fixed: the split is part of the data set's definition, not of a run
SPLIT_NAMES = ("train_images", "train_labels", "test_images", "test_labels")


def load_digits_dataset() -> ArrayDataset:
    with np.load(DIGITS_FILE) as stored:
        x_train, y_train, x_test, y_test = (stored[name] for name in SPLIT_NAMES)
    x_train, x_test = (x.astype(np.float32)[..., None] for x in (x_train, x_test))  # pixel values 0..16
    mean, std = float(x_train.mean() / 16.0), float(x_train.std() / 16.0)
    return ArrayDataset("digits", x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32),
                        num_classes=10, normalize=normalizer([mean], [std], scale=16.0))


def write_digits_file(path: Path = DIGITS_FILE) -> None:
    """The embedded file, from scikit-learn (needed only here: `pip install scikit-learn`, in the dev extra)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.utils import Bunch

    digits = cast(Bunch, load_digits())  # a Bunch (return_X_y is off)
    parts = train_test_split(digits.images, digits.target, test_size=TEST_FRACTION, stratify=digits.target,
                             random_state=SPLIT_SEED)
    split = dict(zip(("train_images", "test_images", "train_labels", "test_labels"), map(np.asarray, parts)))
    arrays: dict[str, Any] = {name: split[name].astype(np.uint8) for name in SPLIT_NAMES}
    np.savez_compressed(path, **arrays)  # Any: numpy types savez's **kwds as allow_pickle too
