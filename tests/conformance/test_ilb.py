"""ILB against a NumPy reference of the official code (rakutentech/iterative_training), on a tiny MLP.

Driven through bnnx's public API: the sweep file's paper preset composed as `bnnx train` composes
it, the built experiment's epoch hook and jitted train step, from the same weights and batches.

The last two tests compare with the official code itself, through a trajectory it recorded once
under PyTorch (tests/fixtures/ilb_trajectory.npz, made by tests/fixtures/make_ilb_fixture.py).
That recording runs train.train's epoch loop without its per-epoch evaluation: the official
test_epoch overwrites the latent weights with the last training forward's weights (the epoch's
last update undone, a binary layer's latent weights set to ±1), which bnnx does not do (see the
script's docstring).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bnnx.data.base import normalizer
from bnnx.methods.base import scheduled_values
from bnnx.sweeps.parse import load_spec

from . import _reference_ilb_rpr as ref

TINY = ["model=mlp", "model.hidden=[8,8]", "epochs=4", "method.epochs_per_layer=1"]
EPOCHS, STEPS, TOL = 4, 2, 1e-5


def paper_overrides(cell: str) -> list[str]:
    spec = load_spec("sweeps/ilb_order.yaml")
    return spec.cell_overrides(spec.cell(cell), "paper")


def run_bnnx(experiment, batches, seed=0):
    """(binary layer indices, kernels, scales, biases, lr) after each epoch, from set weights."""
    state, *initial = ref.set_weights(experiment.state, seed)
    state = experiment.recipe.prepare(state)
    history = []
    for epoch, epoch_batches in enumerate(batches):
        state = experiment.recipe.on_epoch(state, epoch)
        binary = sorted(i for i, m in ref.precision_masks(state).items() if np.all(m == 1))
        for batch in epoch_batches:
            state, _ = experiment.train_step(state, batch, experiment.loss)
        history.append((binary, *ref.as_lists(state), scheduled_values(state.opt_state)["lr"]))
    return initial, history


@pytest.fixture(scope="module")
def mlp_runs(digits):
    """The paper preset's MNIST MLP cell (Adam, lr 0.1) in bnnx and in the official loop."""
    experiment = ref.build(*paper_overrides("forward/mlp_mnist"), *TINY, dataset=digits)
    batches, xs, ys = ref.random_batches(digits, EPOCHS, STEPS, 32, seed=1)
    (kernels, scales, biases), ours = run_bnnx(experiment, batches)
    adam = ref.TorchAdam([*kernels, *scales, *biases], lr=0.1)
    theirs = ref.ilb_train(xs, ys, kernels, scales, biases, [0, 1, 2], EPOCHS, 1, adam, None)
    return ours, theirs


def test_mlp_paper_preset_binarizes_one_layer_per_epoch_in_forward_order(mlp_runs):
    ours, theirs = mlp_runs
    assert [o[0] for o in ours] == [t[0] for t in theirs] == [[0], [0, 1], [0, 1, 2], [0, 1, 2]]


def test_mlp_paper_preset_is_adam_at_a_constant_lr(mlp_runs):
    ours, _ = mlp_runs
    assert [o[4] for o in ours] == pytest.approx([0.1] * EPOCHS, rel=1e-6)


def test_mlp_paper_preset_latent_weights_follow_the_official_loop(mlp_runs):
    """No clip and no gradient gate: latent weights beyond ±1 keep moving as the code moves them."""
    ours, theirs = mlp_runs
    for (_, kernels, _, _, _), (_, params) in zip(ours, theirs):
        for k, want in zip(kernels, params[:3]):
            np.testing.assert_allclose(k, want, atol=TOL, rtol=0)
    assert max(np.abs(k).max() for k in ours[-1][1]) > 1.0


def test_mlp_paper_preset_bn_parameters_follow_the_official_loop(mlp_runs):
    ours, theirs = mlp_runs
    for (_, _, scales, biases, _), (_, params) in zip(ours, theirs):
        np.testing.assert_allclose(np.concatenate(scales + biases), np.concatenate(params[3:]), atol=TOL, rtol=0)


def test_clip_latent_gives_binaryconnects_clip_and_gradient_gate(digits):
    """The one-key option `method.clip_latent=true` (bnnx's earlier default): clip and gate in binary layers."""
    experiment = ref.build(*paper_overrides("forward/mlp_mnist"), *TINY, "method.clip_latent=true", dataset=digits)
    batches, xs, ys = ref.random_batches(digits, EPOCHS, STEPS, 32, seed=1)
    (kernels, scales, biases), ours = run_bnnx(experiment, batches)
    adam = ref.TorchAdam([*kernels, *scales, *biases], lr=0.1)
    theirs = ref.ilb_train(xs, ys, kernels, scales, biases, [0, 1, 2], EPOCHS, 1, adam, None, box=1.0)
    for (_, kernels, scales, biases, _), (_, params) in zip(ours, theirs):
        np.testing.assert_allclose(np.concatenate([k.ravel() for k in kernels + scales + biases]),
                                   np.concatenate([p.ravel() for p in params]), atol=TOL, rtol=0)


@pytest.fixture(scope="module")
def sgd_runs(digits):
    """The paper preset's ResNet-20 optimizer (SGD 0.1, momentum 0.9, weight decay 1e−4, MultiStepLR)
    on the tiny MLP, milestones at epochs 2 and 3 of 4 (the code's [1000, 1100] of 1200 scaled)."""
    overrides = [o for o in paper_overrides("forward/resnet20_cifar10") if not o.startswith(("model", "dataset"))]
    milestones = "method.lr_milestones=[0.5,0.75]"
    experiment = ref.build(*overrides, *TINY, "model.activation=relu", milestones, dataset=digits)
    batches, xs, ys = ref.random_batches(digits, EPOCHS, STEPS, 32, seed=2)
    (kernels, scales, biases), ours = run_bnnx(experiment, batches, seed=3)
    sgd = ref.TorchSGD([*kernels, *scales, *biases], momentum=0.9, weight_decay=1e-4)
    lr = [ref.multistep_lr(0.1, [2, 3], 0.1, epoch) for epoch in range(EPOCHS)]
    theirs = ref.ilb_train(xs, ys, kernels, scales, biases, [0, 1, 2], EPOCHS, 1, sgd, lambda epoch: lr[epoch])
    return ours, theirs, lr


def test_multistep_lr_drops_before_the_milestone_epoch(sgd_runs):
    """train.py steps MultiStepLR before each epoch: milestone m (1-based) lowers the lr of
    0-based epoch m − 1."""
    ours, _, lr = sgd_runs
    assert lr == pytest.approx([0.1, 0.01, 0.001, 0.001])
    assert [o[4] for o in ours] == pytest.approx(lr, rel=1e-6)


def test_sgd_momentum_weight_decay_updates_follow_the_official_loop(sgd_runs):
    ours, theirs, _ = sgd_runs
    for (_, kernels, scales, biases, _), (_, params) in zip(ours, theirs):
        np.testing.assert_allclose(np.concatenate([k.ravel() for k in kernels + scales + biases]),
                                   np.concatenate([p.ravel() for p in params]), atol=TOL, rtol=0)


def binary_sequence(experiment, epochs):
    state = experiment.recipe.prepare(experiment.state)
    sequence = []
    for epoch in range(epochs):
        state = experiment.recipe.on_epoch(state, epoch)
        sequence.append(sorted(i for i, m in ref.precision_masks(state).items() if np.all(m == 1)))
    return sequence


@pytest.mark.parametrize("order, official", [("forward", [0, 1, 2]), ("reverse", [2, 1, 0])])
def test_layer_order_follows_binarize_layer(digits, order, official):
    """binarize_layer (and _reverse): before epoch e, layer order[⌊e / epochs_per_layer⌋] turns binary."""
    experiment = ref.build("method=ilb", "model.hidden=[8,8]", "epochs=7", "method.epochs_per_layer=2",
                       f"method.order={order}", dataset=digits)
    expected = [sorted(ref.ilb_binary_layers(official, epoch, 2)) for epoch in range(7)]
    assert binary_sequence(experiment, 7) == expected


def test_all_binary_binarizes_every_layer_before_training(digits):
    experiment = ref.build("method=ilb", "model.hidden=[8,8]", "epochs=3", "method.all_binary=true", dataset=digits)
    assert binary_sequence(experiment, 3) == [[0, 1, 2]] * 3


def composed_masks(experiment, epochs):
    """(ILB's binary layers, precision masks, trainable masks) of each epoch, as the hooks set them."""
    state = experiment.recipe.prepare(experiment.state)
    out = []
    for epoch in range(epochs):
        state = experiment.recipe.on_epoch(state, epoch)
        binary = sorted(ref.ilb_binary_layers([0, 1, 2], epoch, 1))
        out.append((binary, ref.precision_masks(state), ref.trainable_masks(state), state))
    return out


def test_ilb_with_inner_rpr_keeps_the_partition_in_binary_layers(digits):
    """Composition: a layer ILB holds real is real (precision 0, every weight trainable); a layer
    ILB has binarized carries RPR's partition unchanged (exactly round(FF·n) constrained, the rest
    trainable), the partition RPR's own hook draws for that epoch."""
    experiment = ref.build("method=ilb", "method.inner=rpr", "model.hidden=[8,8]", "epochs=4",
                       "method.epochs_per_layer=1", dataset=digits)
    inner = getattr(experiment.config.method, "inner_method")
    for epoch, (binary, precision, trainable, state) in enumerate(composed_masks(experiment, 4)):
        ff = inner.freezing_fraction_at(epoch, 4)
        alone = ref.precision_masks(_inner_hook(experiment, state, epoch))
        for i in range(3):
            if i in binary:
                assert precision[i].sum() == int(np.floor(ff * precision[i].size + 0.5))
                np.testing.assert_array_equal(precision[i], alone[i])
                np.testing.assert_array_equal(trainable[i], 1 - precision[i])
            else:
                assert not precision[i].any() and trainable[i].all()


def _inner_hook(experiment, state, epoch):
    """The inner method's own epoch hook on this state (its partition for the epoch)."""
    from bnnx.layers import param_labels
    from bnnx.methods.base import MethodContext

    ctx = MethodContext(layers=experiment.layers, labels=param_labels(state.params, state.quant), steps_per_epoch=2,
                        epochs=4, seed=experiment.config.seed)
    return getattr(experiment.config.method, "inner_method").build(ctx).on_epoch(state, epoch)


def test_ilb_with_inner_bnew_keeps_its_relaxation_and_lock(digits):
    """BNEW relaxes its binary-bound weights (precision 0) until its lock, then binarizes and freezes
    them (precision 1, trainable 0); ILB's real layers stay real and trainable throughout."""
    experiment = ref.build("method=ilb", "method.inner=bnew", "model.hidden=[8,8]", "epochs=4",
                       "method.epochs_per_layer=1", "method.inner_config={stages:[0.25,0.25,0.25,0.25]}",
                       dataset=digits)
    for epoch, (binary, precision, trainable, _) in enumerate(composed_masks(experiment, 4)):
        locked = epoch >= 2  # stages 1-2 relaxed, 3-4 locked
        for i in range(3):
            if i in binary:
                assert np.all(precision[i] == (1 if locked else 0)) and np.all(trainable[i] == (0 if locked else 1))
            else:
                assert not precision[i].any() and trainable[i].all()


def test_ilb_with_inner_ste_binarizes_layer_by_layer(digits):
    experiment = ref.build("method=ilb", "method.inner=ste", "model.hidden=[8,8]", "epochs=4",
                       "method.epochs_per_layer=1", dataset=digits)
    for binary, precision, trainable, _ in composed_masks(experiment, 4):
        assert sorted(i for i in range(3) if precision[i].all()) == binary
        assert not any(precision[i].any() for i in range(3) if i not in binary)
        assert all(trainable[i].all() for i in range(3))


def test_cli_ilb_with_inner_rpr_keeps_the_partition(run_cli, tmp_path, digits):
    """`bnnx train method=ilb method.inner=rpr ...`: at the end every layer is binary and carries a
    per-weight partition, round(FF·n) constrained and the rest trainable."""
    from bnnx.io import read_jsonl
    from bnnx.train.checkpoint import Checkpoints

    run = tmp_path / "run"
    code, output = run_cli("train", "method=ilb", "method.inner=rpr", "model.hidden=[16]", "dataset=digits",
                           "epochs=3", "method.epochs_per_layer=1", "method.inner_config={freezing_fraction:0.5,"
                           "ff_increases:1,initial_fraction:0.34,final_fraction:0.0}", f"out_dir={run}", "-q")
    assert code == 0, output
    rows = read_jsonl(run / "metrics.jsonl")
    assert [row["num_binary_layers"] for row in rows] == [1, 2, 2]
    checkpoints = Checkpoints(run)
    try:
        tree, _ = checkpoints.restore_tree()
    finally:
        checkpoints.close()
    for name in ("QuantDense_0", "QuantDense_1"):
        mask, trainable = np.asarray(tree["quant"][name]["kernel_mask"]), np.asarray(tree["trainable"][name]["kernel"])
        assert mask.shape == trainable.shape and mask.sum() == int(np.floor(0.75 * mask.size + 0.5))
        np.testing.assert_array_equal(trainable, 1 - mask)


# Against the official code itself: tests/fixtures/ilb_trajectory.npz, recorded once by
# tests/fixtures/make_ilb_fixture.py running rakutentech/iterative_training's own Mlp3Binary,
# binarize_layer, optimizer set-up (main.add_optimizer_scheduler, train.train's Adam) and
# train.train_epoch under PyTorch on a CPU: 64-8-8-10, 6 epochs of 2 steps, 2 epochs per layer.

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ilb_trajectory.npz"
OFFICIAL = ["model=mlp", "model.hidden=[8,8]", "epochs=6", "method.epochs_per_layer=2"]


def official_fixture():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def fixture_experiment(fixture, digits, *overrides):
    """The experiment `bnnx train OVERRIDES` builds, on a data set that normalizes pixels as the
    fixture's official run did, (p / 16 − 0.1307) / 0.3081, two steps per epoch."""
    dataset = dataclasses.replace(digits, normalize=normalizer([float(fixture["mean"])], [float(fixture["std"])],
                                                              scale=float(fixture["scale"])))
    return ref.build(*overrides, dataset=dataset)


def run_from_fixture(experiment, fixture):
    """bnnx from the fixture's initial weights on its batches: per epoch the binary layers (as a
    mask over the order) and the lr, and the kernels (torch layout) and BN parameters after every step."""
    state = experiment.state
    params = {name: dict(layer) for name, layer in state.params.items()}
    for i in range(ref.layer_count(state)):
        params[f"QuantDense_{i}"]["kernel"] = fixture[f"weight{i}"].T.copy()
        params[f"BatchNorm_{i}"]["scale"] = fixture[f"bn_weight{i}"].copy()
        params[f"BatchNorm_{i}"]["bias"] = fixture[f"bn_bias{i}"].copy()
    state = experiment.recipe.prepare(state.replace(params=params))
    pixels, labels = fixture["pixels"], fixture["labels"]
    binary, lrs, steps = [], [], []
    keys = (("weight", "QuantDense", "kernel"), ("bn_weight", "BatchNorm", "scale"), ("bn_bias", "BatchNorm", "bias"))
    for epoch in range(pixels.shape[0]):
        state = experiment.recipe.on_epoch(state, epoch)
        masks = ref.precision_masks(state)
        binary.append([bool(np.all(masks[i] == 1)) for i in range(3)])
        for step in range(pixels.shape[1]):
            images = pixels[epoch, step].reshape(-1, 8, 8, 1).astype(np.float32)
            batch = (images, labels[epoch, step].astype(np.int32), np.ones(len(images), np.float32))
            state, _ = experiment.train_step(state, batch, experiment.loss)
            steps.append({key: [np.asarray(state.params[f"{layer}_{i}"][name]) for i in range(3)]
                          for key, layer, name in keys})
        lrs.append(scheduled_values(state.opt_state)["lr"])
    return binary, lrs, steps


def assert_follows_official(fixture, kind, binary, lrs, steps):
    np.testing.assert_array_equal(np.array(binary), fixture[f"{kind}_binary"])
    np.testing.assert_allclose(lrs, fixture[f"{kind}_lr"], rtol=1e-6, atol=0)
    assert len(steps) == len(fixture[f"{kind}_weight0"])
    for t, ours in enumerate(steps):
        for key in ("weight", "bn_weight", "bn_bias"):
            for i in range(3):
                want = fixture[f"{kind}_{key}{i}"][t]
                got = ours[key][i].T if key == "weight" else ours[key][i]
                np.testing.assert_allclose(got, want, atol=TOL, rtol=0, err_msg=f"{kind} step {t + 1} {key}{i}")


def test_mlp_paper_preset_follows_the_official_code(digits):
    """The MNIST MLP's paper preset (Adam, constant lr 0.1, no weight decay, no clip, no gate)
    against the official code's own run: the same layer turns binary before the same epoch, the
    lr is the same, and every weight after every step agrees within 1e−5."""
    fixture = official_fixture()
    experiment = fixture_experiment(fixture, digits, *paper_overrides("forward/mlp_mnist"), *OFFICIAL)
    binary, lrs, steps = run_from_fixture(experiment, fixture)
    assert fixture["adam_binary"].sum(1).tolist() == [1, 1, 2, 2, 3, 3]
    assert max(np.abs(w).max() for w in steps[-1]["weight"]) > 1.0  # latent weights beyond ±1 keep moving
    assert_follows_official(fixture, "adam", binary, lrs, steps)


def test_resnet20_optimizer_follows_the_official_code(digits):
    """The paper preset's ResNet-20 optimizer (SGD 0.1, momentum 0.9, weight decay 1e−4, lr ×0.1 at
    milestones) on the same MLP against the official add_optimizer_scheduler's SGD and MultiStepLR
    (milestones [3, 5] of 6 epochs, stepped before each epoch): lr per epoch and every step's weights."""
    fixture = official_fixture()
    overrides = [o for o in paper_overrides("forward/resnet20_cifar10") if not o.startswith(("model", "dataset"))]
    experiment = fixture_experiment(fixture, digits, *overrides, *OFFICIAL, "model.activation=relu",
                                    "method.lr_milestones=[0.5,0.8333333333333334]")
    binary, lrs, steps = run_from_fixture(experiment, fixture)
    assert fixture["sgd_lr"] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert_follows_official(fixture, "sgd", binary, lrs, steps)
