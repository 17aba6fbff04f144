"""The embedded digits: the arrays scikit-learn's load_digits and train_test_split give (as bnnx
built them before the split was embedded), read without importing scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from bnnx.data.base import normalizer
from bnnx.data.digits import load_digits_dataset


def sklearn_split():
    """The split as bnnx computed it from scikit-learn on every load, before it was embedded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32)[..., None]
    labels = digits.target.astype(np.int32)
    return train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=0)


def test_the_embedded_digits_equal_scikit_learns_split_exactly():
    x_train, x_test, y_train, y_test = sklearn_split()
    dataset = load_digits_dataset()
    for mine, theirs in ((dataset.train_images, x_train), (dataset.test_images, x_test),
                         (dataset.train_labels, y_train), (dataset.test_labels, y_test)):
        assert mine.dtype == theirs.dtype and mine.shape == theirs.shape
        assert np.array_equal(mine, theirs)
    reference = normalizer([float(x_train.mean() / 16.0)], [float(x_train.std() / 16.0)], scale=16.0)
    assert np.array_equal(np.asarray(dataset.normalize(x_train)), np.asarray(reference(x_train)))


def test_loading_digits_imports_no_scikit_learn():
    code = ("import sys; from bnnx.data import DatasetConfig, load_dataset; load_dataset(DatasetConfig()); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
