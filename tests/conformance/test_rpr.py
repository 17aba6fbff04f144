"""RPR against a NumPy reference written from the paper (Cavigelli and Benini, arXiv 2001.01091).

RPR has no official code: the schedule is the paper's section 4.2 (GoogLeNet, 112 epochs), the
update its eq. 3, the rescaling its eq. 4. bnnx draws the random partitions; the reference reads
them from the state and checks their size, then replays the training on them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.methods.base import scheduled_values

from . import _reference_ilb_rpr as ref

TOL = 1e-5


@pytest.fixture(scope="module")
def paper_schedule(digits):
    """Masks and lr of each epoch of a 112-epoch run with the default (the paper's) schedule."""
    experiment = ref.build("method=rpr", "model=mlp", "model.hidden=[8,8]", "epochs=112", dataset=digits)
    state = experiment.recipe.prepare(experiment.state)
    tx, params = experiment.state.tx, state.params
    update = jax.jit(tx.update)
    opt_state, zeros = tx.init(params), jax.tree.map(jnp.zeros_like, params)
    epochs = []
    for epoch in range(112):
        state = experiment.recipe.on_epoch(state, epoch)
        lrs = []
        for _ in range(2):
            _, opt_state = update(zeros, opt_state, params)
            lrs.append(scheduled_values(opt_state)["lr"])
        epochs.append((ref.precision_masks(state), ref.trainable_masks(state), lrs))
    return epochs


def test_freezing_fraction_follows_the_paper_schedule(paper_schedule):
    """37 epochs at FF 0.9, 15 each at 0.95, 0.975, 0.9875, 30 at 1.0; exactly round(FF·n) constrained."""
    for (ff, _), (precision, _, _) in zip(ref.rpr_paper_schedule(), paper_schedule):
        assert list(precision) == [1]  # the MLP's first and last layers stay real (the paper's footnote)
        mask = precision[1]
        assert mask.sum() == int(np.floor(ff * mask.size + 0.5))


def test_lr_restarts_at_each_ff_and_drops_tenfold_after_ten_epochs(paper_schedule):
    for epoch, ((_, factor), (_, _, lrs)) in enumerate(zip(ref.rpr_paper_schedule(), paper_schedule)):
        assert lrs == pytest.approx([1e-3 * factor] * 2, rel=1e-6), epoch


def test_constrained_weights_are_frozen_and_relaxed_ones_train(paper_schedule):
    for precision, trainable, _ in paper_schedule:
        np.testing.assert_array_equal(trainable[1], 1 - precision[1])
        assert trainable[0].all() and trainable[2].all()


def test_partition_is_redrawn_every_epoch(paper_schedule):
    """A new random partition each epoch (sec. 3.1: one epoch per partition) while FF < 1."""
    masks = [precision[1] for precision, _, _ in paper_schedule]
    ffs = [ff for ff, _ in ref.rpr_paper_schedule()]
    for epoch in range(1, 112):
        assert (ffs[epoch - 1] == 1.0) == np.array_equal(masks[epoch], masks[epoch - 1]), epoch


def test_filters_are_rescaled_to_the_quantization_levels(digits):
    """Eq. 4 for binary levels: ‖w − s·sign(w)‖ is least at s = mean|w| (per output filter)."""
    experiment = ref.build("method=rpr", "model=mlp", "model.hidden=[8,8]", "epochs=2", dataset=digits)
    state, kernels, _, _ = ref.set_weights(experiment.state, seed=4)
    rescaled = ref.as_lists(experiment.recipe.prepare(state))[0]
    np.testing.assert_allclose(rescaled[1], kernels[1] / np.abs(kernels[1]).mean(0), atol=TOL, rtol=0)
    for i in (0, 2):
        np.testing.assert_array_equal(rescaled[i], kernels[i])


@pytest.mark.parametrize("moments", ["accumulate", "hold"])
def test_updates_follow_eq3_with_each_reading_of_the_frozen_moments(digits, moments):
    """Two epochs at FF 0.5 (two partitions): the relaxed weights and BN parameters move by Adam on
    the loss of the mixed network, the constrained ones stay. The paper is silent on Adam's moments
    of constrained weights: `accumulate` feeds them their straight-through gradient, `hold` keeps
    them as they were; a weight relaxed in epoch 2 after being constrained in epoch 1 tells them apart."""
    experiment = ref.build("method=rpr", "model=mlp", "model.hidden=[8,8]", "model.activation=relu", "epochs=2",
                           "method.lr=0.01", "method.freezing_fraction=0.5", "method.ff_increases=0",
                           "method.initial_fraction=1.0", "method.final_fraction=0.0",
                           f"method.frozen_moments={moments}", dataset=digits)
    state, *_ = ref.set_weights(experiment.state, seed=5, spread=0.3)
    state = experiment.recipe.prepare(state)
    latent, scales, biases = ref.as_lists(state)
    adam = ref.TorchAdam([*latent, *scales, *biases], lr=0.01)
    batches, xs, ys = ref.random_batches(digits, 2, 2, 32, seed=6)
    for epoch in range(2):
        state = experiment.recipe.on_epoch(state, epoch)
        constrained = [ref.precision_masks(state).get(i, np.zeros_like(w)) for i, w in enumerate(latent)]
        for batch, x, y in zip(batches[epoch], xs[epoch], ys[epoch]):
            state, _ = experiment.train_step(state, batch, experiment.loss)
            latent, scales, biases = ref.rpr_step(x, y, latent, constrained, scales, biases, adam, moments == "hold")
        ours = ref.as_lists(state)
        for got, want in zip([*ours[0], *ours[1], *ours[2]], [*latent, *scales, *biases]):
            np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
