"""tfds-backed data: offline builders equal the stock ones, loading, streaming, errors.

Tiny fake sources (idx files, CIFAR pickles and binaries, JPEGs) are written to tmp; the
references are the stock tfds generators (run with a plain-file stand-in for tf.io.gfile)
and tfds's own key hashing, which fixes the stored order.
"""

import gzip
import io
import pickle
import shutil
import tarfile
import types

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from tensorflow_datasets.core import hashing
from tensorflow_datasets.image_classification import cifar, mnist

from bnnx.data import DatasetConfig, load_dataset
from bnnx.data.builders import LOCAL_BUILDERS, prepare
from bnnx.errors import DataNotFoundError

SIZES = {"train": 40, "test": 12}
IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR_LABELS = {"cifar10": {"label": 10}, "cifar100": {"coarse_label": 20, "label": 100}}


def tfds_order(n: int, split: str) -> list[int]:
    """The order tfds stores examples keyed 0..n-1 in: sorted by the split-salted key hash."""
    return sorted(range(n), key=hashing.Hasher(split).hash_key)


def write_idx(path, array, gzipped):
    magic = 0x0800 + array.ndim
    data = b"".join(v.to_bytes(4, "big") for v in (magic, *array.shape)) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gzipped else data)


@pytest.fixture(scope="module")
def idx_source(tmp_path_factory):
    """Fake idx files (train gzipped as Debian ships them, test plain) and their arrays."""
    folder, rng, arrays = tmp_path_factory.mktemp("idx"), np.random.default_rng(0), {}
    for split, n in SIZES.items():
        images, labels = rng.integers(0, 256, (n, 28, 28), np.uint8), rng.integers(0, 10, n, np.uint8)
        suffix = ".gz" if split == "train" else ""
        write_idx(folder / f"{IDX_STEMS[split][0]}{suffix}", images, split == "train")
        write_idx(folder / f"{IDX_STEMS[split][1]}{suffix}", labels, split == "train")
        arrays[split] = (images, labels)
    return folder, arrays


@pytest.fixture(scope="module")
def fashion_dir(idx_source, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    prepare("fashion_mnist", idx_source[0], data_dir)
    return data_dir


def test_prepared_fashion_mnist_holds_the_source_pixels_and_labels_in_tfds_order(idx_source, fashion_dir):
    data = load_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(fashion_dir)))
    assert (data.num_classes, data.input_shape, data.num_train) == (10, (28, 28, 1), 40)
    for split, (images, labels) in idx_source[1].items():
        order = tfds_order(SIZES[split], split)
        got_images, got_labels = (data.train_images, data.train_labels) if split == "train" else \
            (data.test_images, data.test_labels)
        assert got_images.dtype == np.uint8
        np.testing.assert_array_equal(got_images[..., 0], images[order])
        np.testing.assert_array_equal(got_labels, labels[order])


def test_normalize_uses_the_training_mean_and_std(idx_source, fashion_dir):
    data = load_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(fashion_dir)))
    train = idx_source[1]["train"][0] / 255.0
    expected = (data.test_images / 255.0 - train.mean()) / train.std()
    np.testing.assert_allclose(np.asarray(data.normalize(data.test_images)), expected, rtol=1e-5, atol=1e-5)


def test_local_builder_yields_exactly_the_stock_generator_examples(idx_source, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "tf", types.SimpleNamespace(io=types.SimpleNamespace(
        gfile=types.SimpleNamespace(GFile=open))))
    plain = {}
    for stem in IDX_STEMS["train"]:
        plain[stem] = tmp_path / stem
        plain[stem].write_bytes(gzip.decompress((idx_source[0] / f"{stem}.gz").read_bytes()))
    stock = list(mnist.FashionMNIST._generate_examples(
        None, SIZES["train"], plain[IDX_STEMS["train"][0]], plain[IDX_STEMS["train"][1]]))
    builder = LOCAL_BUILDERS["fashion_mnist"](source_dir=idx_source[0], data_dir=str(tmp_path / "out"))
    ours = list(builder._generate_local("train"))
    assert [key for key, _ in ours] == [key for key, _ in stock] == list(range(SIZES["train"]))
    for (_, mine), (_, theirs) in zip(ours, stock):
        np.testing.assert_array_equal(np.asarray(mine["image"])[..., None], theirs["image"])
        assert mine["label"] == theirs["label"]
    assert (builder.name, str(builder.version)) == ("fashion_mnist", str(mnist.FashionMNIST.VERSION))
    assert builder.info.features.to_json() == mnist.FashionMNIST(data_dir=str(tmp_path)).info.features.to_json()


def test_cache_is_rebuilt_when_unreadable(idx_source, fashion_dir):
    for cache in fashion_dir.rglob("bnnx-arrays-*.npz"):
        cache.write_bytes(b"not an npz")
    data = load_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(fashion_dir)))
    np.testing.assert_array_equal(data.train_labels, idx_source[1]["train"][1][tfds_order(40, "train")])


def test_tfds_data_dir_is_the_default(fashion_dir, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(fashion_dir))
    assert load_dataset(DatasetConfig(name="fashion_mnist")).num_train == 40


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name, make", [("cifar10", None), ("fashion_mnist", "version-less folder")])
def test_missing_data_set_fails_at_once_with_the_command_that_prepares_it(tmp_path, name, make):
    if make:
        (tmp_path / name).mkdir()  # tfds is asked, and must not try the network
    with pytest.raises(DataNotFoundError) as error:
        load_dataset(DatasetConfig(name=name, data_dir=str(tmp_path)))
    message = str(error.value)
    assert "\n" not in message and f"bnnx data prepare {name} --data-dir {tmp_path} --from" in message


def test_a_set_stored_as_tfrecord_only_is_explained(fashion_dir, tmp_path):
    shutil.copytree(fashion_dir / "fashion_mnist", tmp_path / "fashion_mnist")
    info = next((tmp_path / "fashion_mnist").rglob("dataset_info.json"))
    info.write_text(info.read_text().replace('"array_record"', '"tfrecord"'))
    with pytest.raises(DataNotFoundError, match="stored as tfrecord; bnnx reads array_record"):
        load_dataset(DatasetConfig(name="fashion_mnist", data_dir=str(tmp_path)))


@pytest.mark.timeout(120)
def test_cli_prepares_mnist_then_trains_on_it(idx_source, tmp_path, run_cli):
    code, output = run_cli("data", "prepare", "mnist", "--from", str(idx_source[0]), "--data-dir", str(tmp_path / "d"))
    assert code == 0 and "40 training examples" in output, output
    code, output = run_cli("train", "dataset=mnist", f"dataset.data_dir={tmp_path / 'd'}", "epochs=1", "batch_size=8",
                           "model.hidden=[16]", f"out_dir={tmp_path / 'run'}", "--quiet")
    assert code == 0 and "completed" in output, output


@pytest.mark.parametrize("args, fragment", [
    (["prepare", "nope", "--from", "."], "unknown data set to prepare 'nope'"),
    (["prepare", "mnist", "--from", "/no/such/folder"], "is not a folder"),
    (["prepare", "mnist", "--from", "{empty}"], "has no train-images-idx3-ubyte"),
    (["prepare", "fashion_mnist", "--from", "{corrupt}"], "is corrupt"),
    (["prepare", "fashion_mnist"], "needs TensorFlow"),
])
def test_cli_prepare_bad_input_is_one_line(args, fragment, idx_source, tmp_path, run_cli):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for path in idx_source[0].iterdir():
        (corrupt / path.name).write_bytes(path.read_bytes())
    raw = (corrupt / "t10k-images-idx3-ubyte").read_bytes()
    (corrupt / "t10k-images-idx3-ubyte").write_bytes(raw[:-5])
    (tmp_path / "empty").mkdir()
    args = [a.format(empty=tmp_path / "empty", corrupt=corrupt) for a in args]
    code, output = run_cli("data", *args, "--data-dir", str(tmp_path / "d"))
    lines = output.strip().splitlines()
    assert code == 2 and len(lines) == 1 and fragment in lines[0] and "Traceback" not in output, output
    assert not (tmp_path / "d" / "fashion_mnist").exists()


# ---- CIFAR: python-pickle tarball, compared with the stock generator on the binary release --

# the real releases' layout: (tarball, folder inside, train batches, test batches, meta file)
CIFAR_RELEASES = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
                ["test_batch"], "batches.meta"),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], "meta"),
}
CIFAR_KEYS = {"label": {"cifar10": b"labels", "cifar100": b"fine_labels"},
              "coarse_label": {"cifar100": b"coarse_labels"}}


def cifar_source(folder, name, rng, per_batch=3):
    """A fake python-pickle tarball and, from the same pixels, the binary batches the stock
    generator reads. Returns {split: (images NHWC, {feature: labels}, binary files)}."""
    tarball, inner, train_files, test_files, meta = CIFAR_RELEASES[name]
    arrays = {}
    with tarfile.open(folder / tarball, "w:gz") as tar:
        def add(member, obj):
            data = pickle.dumps(obj)
            info = tarfile.TarInfo(f"{inner}/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for split, files in (("train", train_files), ("test", test_files)):
            data = rng.integers(0, 256, (per_batch * len(files), 3072), np.uint8)
            labels = {k: rng.integers(0, c, len(data)) for k, c in CIFAR_LABELS[name].items()}
            for i, stem in enumerate(files):
                part = slice(i * per_batch, (i + 1) * per_batch)
                add(stem, {b"data": data[part], **{CIFAR_KEYS[k][name]: v[part].tolist() for k, v in labels.items()}})
                label_bytes = np.stack([labels[k][part] for k in CIFAR_LABELS[name]], 1).astype(np.uint8)
                (folder / f"{stem}.bin").write_bytes(np.concatenate([label_bytes, data[part]], 1).tobytes())
            arrays[split] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels,
                             [str(folder / f"{stem}.bin") for stem in files])
        label_names = [b"label%d" % i for i in range(CIFAR_LABELS[name]["label"])]
        add(meta, {b"label_names": label_names} if name == "cifar10" else
            {b"fine_label_names": label_names, b"coarse_label_names": [b"coarse%d" % i for i in range(20)]})
    return arrays


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_pickles_equals_the_stock_binary_generator_and_loads_in_tfds_order(
        name, tmp_path, monkeypatch):
    arrays = cifar_source(tmp_path, name, np.random.default_rng(1))
    monkeypatch.setattr(cifar, "tf", types.SimpleNamespace(io=types.SimpleNamespace(
        gfile=types.SimpleNamespace(GFile=open))))
    builder = LOCAL_BUILDERS[name](source_dir=tmp_path, data_dir=str(tmp_path / "d"))
    builder.check_source()
    stock = list(cifar.Cifar10._generate_examples(builder, "train_", arrays["train"][2]))
    ours = list(builder._generate_local("train"))
    assert [k for k, _ in ours] == [k for k, _ in stock]
    for (_, mine), (_, theirs) in zip(ours, stock):
        np.testing.assert_array_equal(np.asarray(mine["image"]), theirs["image"])
        assert mine["id"] == theirs["id"] and all(mine[k] == theirs[k] for k in CIFAR_LABELS[name])

    prepare(name, tmp_path, tmp_path / "d")
    data = load_dataset(DatasetConfig(name=name, data_dir=str(tmp_path / "d")))
    assert data.input_shape == (32, 32, 3) and data.num_classes == CIFAR_LABELS[name]["label"]
    splits = (("train", data.train_images, data.train_labels), ("test", data.test_images, data.test_labels))
    for split, got, labels in splits:
        order = tfds_order(len(labels), split)
        np.testing.assert_array_equal(got, arrays[split][0][order])
        np.testing.assert_array_equal(labels, arrays[split][1]["label"][order])
    normalized = np.asarray(data.normalize(data.train_images))  # per-channel mean 0, std 1 on the training set
    np.testing.assert_allclose(normalized.mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized.std((0, 1, 2)), 1.0, atol=1e-4)
    assert tfds.builder(name, data_dir=str(tmp_path / "d")).info.features["label"].names[:2] == ["label0", "label1"]


def test_cifar_augmentation_is_a_padded_crop_maybe_flipped_and_deterministic_per_rng():
    from bnnx.data.tfds_source import AUGMENT

    augment = AUGMENT["cifar10"]
    images = np.random.default_rng(2).normal(size=(6, 32, 32, 3)).astype(np.float32)
    first, again = augment(images, jax.random.key(0)), augment(images, jax.random.key(0))
    other = augment(images, jax.random.key(1))
    assert first.shape == images.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for image, out in zip(padded, np.asarray(first)):
        windows = [image[y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        crops = windows + [w[:, ::-1] for w in windows]
        assert any(np.array_equal(out, c) for c in crops)


# ---- ImageNet: streamed from a tiny fake array_record set ---------------------------------

IMAGENET_SHAPES = {"train": [(37, 37), (50, 80), (90, 40), (37, 37), (60, 60), (45, 38), (37, 37)],
                   "validation": [(37, 37), (37, 37), (37, 37), (37, 37), (37, 37)]}


@pytest.fixture(scope="module")
def imagenet_dir(tmp_path_factory):
    """A fake imagenet2012 written by a subclass of the stock builder (JPEG, 1000 classes);
    one grayscale image, as ImageNet has, must come out RGB."""
    rng = np.random.default_rng(3)

    class FakeImagenet(tfds.builder_cls("imagenet2012"), skip_registration=True):
        name = "imagenet2012"

        def _split_generators(self, dl_manager):
            return {split: self._examples(split, shapes) for split, shapes in IMAGENET_SHAPES.items()}

        def _examples(self, split, shapes):
            for i, (h, w) in enumerate(shapes):
                pixels = rng.integers(0, 256, (h, w, 3), np.uint8)
                image = Image.fromarray(pixels).convert("L" if i == 1 else "RGB")
                yield f"{split}{i}", {"image": image, "label": 10 * i + 1, "file_name": f"{split}_{i}.JPEG"}

    data_dir = tmp_path_factory.mktemp("imagenet")
    FakeImagenet(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")
    return data_dir


def reference_records(data_dir, split):
    source = tfds.data_source("imagenet2012", split=split, data_dir=str(data_dir), download=False,
                              decoders={"image": tfds.decode.SkipDecoding()})
    return [source[i] for i in range(len(source))]


def test_imagenet_streams_center_crops_for_test_with_padding(imagenet_dir):
    data = load_dataset(DatasetConfig(name="imagenet2012", data_dir=str(imagenet_dir), image_size=32))
    assert (data.input_shape, data.num_classes, data.num_train) == ((32, 32, 3), 1000, 7)
    assert data.resize == 37  # 32 · 256/224, so the 37×37 validation images are only cropped
    batches = list(data.test_batches(4))
    records = reference_records(imagenet_dir, "validation")
    np.testing.assert_array_equal(batches[1][2], [1, 0, 0, 0])
    images = np.concatenate([b[0] for b in batches])[:5]
    labels = np.concatenate([b[1] for b in batches])[:5]
    for image, label, record in zip(images, labels, records):
        decoded = np.asarray(Image.open(io.BytesIO(record["image"])).convert("RGB"))
        np.testing.assert_array_equal(image, decoded[2:34, 2:34])
        assert label == record["label"]


def test_imagenet_train_batches_are_random_crops_deterministic_and_resumable(imagenet_dir):
    data = load_dataset(DatasetConfig(name="imagenet2012", data_dir=str(imagenet_dir), image_size=32))
    epoch0 = list(data.train_batches(0, 3, seed=0))
    assert len(epoch0) == 2 and all(b[0].shape == (3, 32, 32, 3) and b[0].dtype == np.uint8 for b in epoch0)
    again, resumed = list(data.train_batches(0, 3, seed=0)), list(data.train_batches(0, 3, seed=0, start=1))
    for a, b in zip(epoch0 + epoch0[1:], again + resumed):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    epoch1 = list(data.train_batches(1, 3, seed=0))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(epoch0, epoch1))
    records = reference_records(imagenet_dir, "train")
    by_label = {r["label"]: r for r in records}
    for images, labels, _ in epoch0:
        for image, label in zip(images, labels):
            decoded = np.asarray(Image.open(io.BytesIO(by_label[label]["image"])).convert("RGB"))
            if decoded.shape[:2] == (37, 37):  # no resize: the crop is one of the 6×6 windows, maybe flipped
                windows = [w for y in range(6) for x in range(6)
                           for w in (decoded[y:y + 32, x:x + 32], decoded[y:y + 32, x:x + 32][:, ::-1])]
                assert any(np.array_equal(image, w) for w in windows)
    subset = load_dataset(DatasetConfig(name="imagenet2012", data_dir=str(imagenet_dir), image_size=32, subset=4))
    assert subset.num_train == 4 and set(np.concatenate([b[1] for b in subset.train_batches(0, 2, 0)])) <= \
        {r["label"] for r in records[:4]}


@pytest.mark.timeout(120)
def test_imagenet_trains_through_the_loop(imagenet_dir, tmp_path, compose):
    from bnnx.train.loop import train

    config = compose("dataset=imagenet2012", f"dataset.data_dir={imagenet_dir}", "dataset.image_size=32",
                     "epochs=1", "batch_size=3", "eval_batch_size=4", "model.hidden=[8]", f"out_dir={tmp_path}")
    result = train(config)
    assert result.status == "completed" and len(result.metrics) == 1
    assert 0.0 <= result.metrics[0]["test_accuracy"] <= 1.0
