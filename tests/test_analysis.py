"""Sign tracking, binary-kernel patterns, QBN codebooks and `bnnx analyze` (Stable signs / QBN paper)."""

from __future__ import annotations

import dataclasses
import os
import signal

import jax
import numpy as np
import pytest

from bnnx.analysis import kernels, qbn, signs
from bnnx.config import config_from_dict
from bnnx.data.base import ArrayDataset
from bnnx.io import read_json, read_jsonl
from bnnx.layers import flat

TINY_CONVNET = {"name": "convnet", "widths": [4, 8, 8]}


def train_run(out_dir, model, epochs=3, track=True, dataset=None, resume=False, checkpoint_every=1):
    from bnnx.train.loop import train

    config = config_from_dict({"method": {"name": "ste", "lr": 0.01}, "model": model, "dataset": {"name": "digits"},
                               "epochs": epochs, "batch_size": 128, "out_dir": str(out_dir), "resume": resume,
                               "checkpoint_every": checkpoint_every, "analysis": {"signs": track}})
    return train(config, dataset=dataset)


# ---- sign tracking on hand-built snapshots ---------------------------------------------

def test_flip_ratio_and_last_change_epochs_on_hand_built_snapshots():
    snapshots = [np.array([0.0, -1.0, 2.0, -3.0]),   # init: signs + - + -  (sign(0) = +1)
                 np.array([-0.5, -1.0, 2.0, 0.0]),   # epoch 0: weights 0 and 3 flip
                 np.array([-0.5, 1.0, 2.0, 0.1]),    # epoch 1: weight 1 flips
                 np.array([0.5, 1.0, 2.0, 0.2])]     # epoch 2: weight 0 flips back
    track = signs.LayerTrack.start(snapshots[0])
    for epoch, kernel in enumerate(snapshots[1:]):
        track = track.advance(kernel, epoch)
    np.testing.assert_array_equal(track.flips, [2, 1, 1])
    np.testing.assert_allclose(track.flip_ratios, [0.5, 0.25, 0.25])
    np.testing.assert_array_equal(track.last_change, [2, 1, signs.NEVER, 0])
    assert track.last_change.dtype == np.int16
    # after k epochs: never changes again = {2} at k=0, {2, 3} at k=1, {1, 2, 3} at k=2, all at k=3
    fixed = signs.fixed_fraction(track.last_change, 3)
    np.testing.assert_allclose(fixed, [0.25, 0.5, 0.75, 1.0])
    assert signs.epochs_until_fixed(fixed, 0.5) == 1
    assert signs.epochs_until_fixed(fixed, 0.95) == 3
    summary = signs.summarize(track.last_change, track.flips, track.size)
    assert summary["epochs_until_95pct_fixed"] == 3 and summary["weights"] == 4


# ---- the 512 patterns ---------------------------------------------------------------------

def test_pattern_encoding_round_trips_and_follows_the_bit_order():
    all_codes = np.arange(kernels.PATTERNS)
    np.testing.assert_array_equal(kernels.encode(kernels.tiles_to_kernel(kernels.decode(all_codes), (3, 3, 1, 512))),
                                  all_codes)
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3, 2, 5)).astype(np.float32)
    kernel[0, 0, 1, 2] = 0.0  # sign(0) = +1
    rebuilt = kernels.tiles_to_kernel(kernels.decode(kernels.encode(kernel)), kernel.shape)
    np.testing.assert_array_equal(rebuilt, np.where(kernel >= 0, 1.0, -1.0))
    only_top_left = -np.ones((3, 3, 1, 1))
    only_top_left[0, 0] = 0.0
    only_centre_right = -np.ones((3, 3, 1, 1))
    only_centre_right[1, 2] = 1.0
    assert kernels.encode(only_top_left).tolist() == [1]
    assert kernels.encode(only_centre_right).tolist() == [2 ** 5]
    assert kernels.canonical([1, 510, 511]).tolist() == [1, 1, 0]


def test_top_k_coverage_and_entropy_on_a_known_distribution():
    codes = np.repeat([7, 100, 300, 511], [50, 30, 15, 5])
    counts = kernels.histogram(codes)
    coverage = kernels.top_k_coverage(counts)
    assert coverage[1] == pytest.approx(0.50) and coverage[2] == pytest.approx(0.80)
    assert coverage[4] == pytest.approx(1.0) and coverage[512] == pytest.approx(1.0)
    p = np.array([0.5, 0.3, 0.15, 0.05])
    assert kernels.entropy_bits(counts) == pytest.approx(-(p * np.log2(p)).sum())
    assert kernels.ranked(counts).tolist() == [7, 100, 300, 511]
    merged = kernels.histogram(codes, merge_negation=True)  # 511 = ¬0 joins nothing; 7 and 504 would merge
    assert merged[0] == 5 and merged[7] == 50
    assert kernels.top_k_coverage(kernels.histogram(np.array([7, 504])), ks=(1,))[1] == 0.5
    assert kernels.top_k_coverage(kernels.histogram(np.array([7, 504]), merge_negation=True), ks=(1,))[1] == 1.0


# ---- QBN ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_convnet():
    """ConvNet variables filled from numpy (random initialisers cost seconds of XLA compilation)."""
    from bnnx.models.convnet import ConvNet

    model = ConvNet(num_classes=3, widths=(4, 8, 8))
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 1)).astype(np.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(s.dtype), shapes)
    params = jax.tree.map(lambda w: w * rng.choice([-1.0, 1.0], w.shape).astype(w.dtype), variables["params"])
    variables = {**variables, "params": params, "quant": jax.tree.map(np.ones_like, variables["quant"])}
    return model, variables, x


def test_qbn_with_512_patterns_leaves_the_network_unchanged(tiny_convnet):
    model, variables, x = tiny_convnet
    params, layers = qbn.quantize_params(variables["params"], variables["quant"], 512)
    assert sorted(layers) == ["QuantConv_1", "QuantConv_2"]  # the first conv stays real
    assert all(layer.changed_kernels == 0 for layer in layers.values())
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(variables["params"])):
        np.testing.assert_array_equal(a, b)
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(apply({**variables, "params": params}, x), apply(variables, x))


def test_qbn_with_one_pattern_maps_every_kernel_to_the_most_frequent(tiny_convnet):
    _, variables, x = tiny_convnet
    original = flat(variables["params"])
    params, layers = qbn.quantize_params(variables["params"], variables["quant"], 1)
    for path, kernel in flat(params).items():
        if path[-1] != "kernel" or path[0] not in layers:
            np.testing.assert_array_equal(kernel, original[path])  # real layers untouched
            continue
        before = kernels.encode(original[path])
        most_frequent = kernels.ranked(kernels.histogram(before))[0]
        assert set(kernels.encode(kernel).tolist()) == {most_frequent}
        np.testing.assert_allclose(np.abs(kernel), np.abs(original[path]), atol=1e-37)  # magnitudes kept
        assert layers[path[0]].changed_kernels == int((before != most_frequent).sum())
    # index 0 bits + one 9-bit codeword per layer, over 9 bits per kernel
    n1, n2 = layers["QuantConv_1"].kernels, layers["QuantConv_2"].kernels
    assert qbn.bits_per_weight(layers, 0) == pytest.approx(18 / (9 * (n1 + n2)))
    assert qbn.bits_per_weight(layers, 3) == pytest.approx((3 * (n1 + n2) + 18) / (9 * (n1 + n2)))


def test_nearest_codeword_uses_hamming_distance_and_prefers_frequent_on_ties():
    book = np.array([0b000000111, 0b111000000])
    codes = np.array([0b000000011, 0b110000000, 0b000010000, 0b111000111])
    # distances: (1, 5), (5, 1), (4, 4) tie → first, (3, 3) tie → first
    assert qbn.nearest(codes, book).tolist() == [book[0], book[1], book[0], book[0]]
    merged = qbn.codebook(np.array([7, 7, 504, 3]), 2, merge_negation=True)
    assert sorted(merged.tolist()) == [7, 504]


# ---- tracking through the training loop, resume ------------------------------------------

@dataclasses.dataclass
class Disrupted(ArrayDataset):
    """Digits that, at (epoch, batch), send SIGINT to this process or crash the run."""

    at: tuple = (-1, -1)
    crash: bool = False

    def train_batches(self, epoch, batch_size, seed, start=0):
        for index, batch in enumerate(super().train_batches(epoch, batch_size, seed, start), start=start):
            if (epoch, index) == self.at:
                if self.crash:
                    raise RuntimeError("simulated crash")
                os.kill(os.getpid(), signal.SIGINT)
            yield batch


def disrupted(digits, **kwargs):
    return Disrupted(**{f.name: getattr(digits, f.name) for f in dataclasses.fields(ArrayDataset)}, **kwargs)


MLP = {"name": "mlp", "hidden": [32, 32]}


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, digits):
    run_dir = tmp_path_factory.mktemp("mlp") / "run"
    train_run(run_dir, MLP, epochs=4, checkpoint_every=2, dataset=digits)
    return run_dir


def test_signs_json_reports_every_epoch_and_metrics_carry_flip_ratios(mlp_run):
    report = read_json(mlp_run / signs.SIGNS_FILE)
    assert report["epochs"] == 4 and report["tracked"] == "binary-bound kernels"
    assert list(report["layers"]) == ["QuantDense_1"]  # first and last layers stay real
    layer = report["layers"]["QuantDense_1"]
    assert layer["weights"] == 32 * 32 and len(layer["flip_ratio"]) == 4 and layer["fixed_fraction"][-1] == 1.0
    rows = read_jsonl(mlp_run / "metrics.jsonl")
    assert [r["flip_ratio/QuantDense_1"] for r in rows] == pytest.approx(layer["flip_ratio"])
    assert sum(layer["flip_ratio"]) > 0  # lr 0.01 moves signs


def test_sign_tracking_survives_an_interrupt_and_a_crash(mlp_run, digits, tmp_path):
    run_dir = tmp_path / "run"
    result = train_run(run_dir, MLP, epochs=4, checkpoint_every=2, dataset=disrupted(digits, at=(1, 3)))
    assert result.status == "interrupted"  # Ctrl-C mid-epoch 1: checkpoint at (epoch 1, batch 4)
    # resumed, then killed at the start of epoch 3: the tracker already holds epoch 2 but the
    # last checkpoint (every 2 epochs) is after epoch 1, so the tracker must step back one epoch
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_run(
            run_dir, MLP, epochs=4, checkpoint_every=2, resume=True, dataset=disrupted(digits, at=(3, 0), crash=True)
        )
    train_run(run_dir, MLP, epochs=4, checkpoint_every=2, resume=True, dataset=digits)
    assert read_json(run_dir / signs.SIGNS_FILE) == read_json(mlp_run / signs.SIGNS_FILE)


# ---- bnnx analyze ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conv_run(tmp_path_factory, digits):
    run_dir = tmp_path_factory.mktemp("conv") / "run"
    train_run(run_dir, TINY_CONVNET, epochs=2, dataset=digits)
    return run_dir


def is_png_with_content(path) -> bool:
    import matplotlib.image

    if not path.exists() or path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    return float(np.std(matplotlib.image.imread(path))) > 0.01


def test_analyze_writes_reports_and_pictures(conv_run, run_cli):
    code, output = run_cli("analyze", str(conv_run), "--bits", "1,8")
    assert code == 0, output
    for name in ("flips.png", "sign_agreement.png", "kernels_QuantConv_1.png", "kernels_QuantConv_2.png", "qbn.png"):
        assert is_png_with_content(conv_run / name), name
    stats = read_json(conv_run / "kernels.json")["QuantConv_2"]
    assert stats["kernels"] == 8 * 8 and sum(stats["sorted_counts"]) == 64
    assert stats["top_k_coverage"]["512"] == pytest.approx(1.0)
    reference = stats["uniform_random_reference"]  # 64 random kernels: ~60 distinct patterns
    assert 50 <= reference["distinct_patterns"] <= 64 and reference["top_k_coverage"]["64"] == pytest.approx(1.0)
    report = read_json(conv_run / "qbn.json")
    assert [r["bits"] for r in report["results"]] == [1, 8]
    k256 = report["results"][1]  # 4·8 + 8·8 kernels use at most 96 < 256 patterns: nothing changes
    assert k256["changed_kernels"] == 0 and k256["test_accuracy"] == report["baseline_test_accuracy"]
    assert "QBN" in output and "Sign stability" in output


def test_finetuning_trains_only_real_parameters(mlp_run, digits):
    from bnnx.layers import param_labels
    from bnnx.train.rundir import RunDir

    tuner = qbn.finetune_experiment(RunDir(mlp_run).config(), digits)
    start = tuner.state  # any state will do: the property is which parameters move
    tuned = qbn.finetune_real(tuner, start, start.params, epochs=1)
    labels = flat(param_labels(start.params, start.quant))
    before, after = flat(start.params), flat(tuned.params)
    assert {labels[p] for p in before} == {"binary", "real"}
    for path, label in labels.items():
        same = np.array_equal(np.asarray(before[path]), np.asarray(after[path]))
        assert same == (label == "binary"), path


@pytest.mark.parametrize("args, message", [
    (["--bits", "0,2"], "--bits must be"), (["--bits", "9"], "--bits must be"), (["--bits", "two"], "--bits must be"),
    (["--finetune", "-1"], "--finetune must be"),
])
def test_analyze_rejects_bad_options_in_one_line(conv_run, run_cli, args, message):
    code, output = run_cli("analyze", str(conv_run), *args)
    assert code == 2 and message in output and len(output.strip().splitlines()) == 1


def test_analyze_rejects_a_folder_that_is_not_a_run(tmp_path, run_cli):
    code, output = run_cli("analyze", str(tmp_path))
    assert code == 2 and "not a bnnx run" in output and len(output.strip().splitlines()) == 1


def test_analyze_without_conv_layers_reports_signs_or_explains(mlp_run, tmp_path, run_cli):
    code, output = run_cli("analyze", str(mlp_run))
    assert code == 0 and "no binary 3x3 conv layers" in output and "QuantDense_1" in output
    assert is_png_with_content(mlp_run / "flips.png") and not (mlp_run / "qbn.json").exists()
    (mlp_run / signs.SIGNS_FILE).rename(tmp_path / "signs.json")
    try:
        code, output = run_cli("analyze", str(mlp_run))
    finally:
        (tmp_path / "signs.json").rename(mlp_run / signs.SIGNS_FILE)
    assert code == 2 and "nothing to analyze" in output and len(output.strip().splitlines()) == 1
