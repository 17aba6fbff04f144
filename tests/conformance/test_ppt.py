"""PPT against a NumPy reference written from "Fast Binarized Neural Network Training with Partial
Pre-training" (Renda & Fromm, ICLR 2021 submission, OpenReview H6ZWlQrPGS2): "first training the
network as a standard floating-point network for a short amount of time, then converting the
network to a binarized neural network and continuing to train from there".

So at the switch the weights and the BN statistics carry over unchanged and the forward starts
binarizing (hidden layers only: the first and last stay real). The paper is silent on the
optimizer state: bnnx's default restarts it with a fresh lr schedule over the binary epochs
(`method.restart_optimizer=true`); `false` runs the binary method's optimizer over the whole
budget, its moments carried across the switch. Both are checked here. The binary phase is STE
(w_b = sign(w̃), w̃ ← Π_[−1,1](w̃ − η_t·Adam(∇ℓ(w_b)·1{|w̃| ≤ 1}))).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from . import _reference_b as ref

EPOCHS, FP_EPOCHS, BATCH = 4, 2, 512
# seed 0 puts one example of one hidden unit 1e-8 from the hardtanh edge at the second
# binary step (float32 decides that gate otherwise than float64); seed 1 keeps every gate clear
SEED = 1


def cosine(lr, t, total):
    return lr * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))


def ppt_reference(params, stats, data, spe, restart: bool):
    """Params and BN stats after each epoch. FP phase: the FP network (nothing quantized) by Adam;
    binary phase: STE on the same weights and statistics."""
    params, adam, out, t = ref.host(params), ref.Adam(), [], 0
    switch, total = FP_EPOCHS * spe, EPOCHS * spe
    for epoch_data in data:
        for _, x, labels, weights in epoch_data:
            binary = t >= switch
            if binary and t == switch and restart:
                adam = ref.Adam()
            latent = params["QuantDense_1"]["kernel"]
            seen = [params["QuantDense_0"]["kernel"], ref.sign(latent) if binary else latent,
                    params["QuantDense_2"]["kernel"]]
            flags = (False, binary, False)
            logits, cache = ref.mlp_forward(params, x, seen, flags)
            _, dlogits = ref.cross_entropy(logits, labels, weights)
            grads = ref.mlp_backward(params, seen, cache, dlogits, flags)
            if binary:
                grads["QuantDense_1"]["kernel"] = grads["QuantDense_1"]["kernel"] * (np.abs(latent) <= 1.0)
            stats = ref.new_stats(stats, cache, 3)
            if restart:
                lr = cosine(1e-3, t, switch) if not binary else cosine(1e-3, t - switch, total - switch)
            else:
                lr = cosine(1e-3, t, total)
            clip_binary = binary or not restart  # without a restart the STE optimizer (with its Π) runs throughout
            for path, g in list(ref.flat_items(grads)):
                new = ref.get_leaf(params, path) - lr * adam.direction(path, g)
                ref.set_leaf(params, path, np.clip(new, -1, 1) if path[0] == "QuantDense_1" and clip_binary else new)
            t += 1
        out.append((ref.host(params), stats))
    return out


def run_bnnx(experiment):
    state = experiment.recipe.prepare(experiment.state)
    out, masks = [], []
    for epoch in range(EPOCHS):
        state = experiment.for_epoch(experiment.recipe.on_epoch(state, epoch), epoch)
        masks.append({k: float(v) for k, v in state.quant["QuantDense_1"].items() if k.endswith("_mask")})
        for batch in ref.batches(experiment, epoch):
            state = ref.step(experiment, state, batch[0])
        out.append((ref.host(state.params), ref.host(state.batch_stats)))
    return out, masks, state


@pytest.fixture(scope="module", params=[True, False], ids=["restart", "carry"])
def run(request, digits):
    experiment = ref.experiment(digits, "ppt", f"method.fp_fraction={FP_EPOCHS / EPOCHS}",
                                f"method.restart_optimizer={str(request.param).lower()}", f"seed={SEED}", epochs=EPOCHS,
                                batch=BATCH)
    data = [ref.batches(experiment, epoch) for epoch in range(EPOCHS)]
    start, stats = ref.host(experiment.state.params), ref.host(experiment.state.batch_stats)
    actual, masks, _ = run_bnnx(experiment)
    expected = ppt_reference(start, stats, data, experiment.steps_per_epoch, request.param)
    flat_data = [b for epoch_data in data for b in epoch_data]
    return dict(actual=actual, expected=expected, masks=masks, data=flat_data, quant=experiment.state.quant)


def test_which_layers_are_binary_when(run):
    """Only the hidden layer is binary-bound; its kernel and inputs are real for the FP epochs and
    binarized from the switch on."""
    assert set(run["quant"]) == {"QuantDense_1"}
    off, on = {"kernel_mask": 0.0, "input_mask": 0.0}, {"kernel_mask": 1.0, "input_mask": 1.0}
    assert run["masks"] == [off] * FP_EPOCHS + [on] * (EPOCHS - FP_EPOCHS)


@pytest.mark.parametrize("epoch", range(EPOCHS))
def test_weights_match_the_reference(run, epoch):
    """Epoch FP_EPOCHS − 1 ends the FP phase: the binary phase starts from exactly these weights."""
    ref.assert_tree_close(ref.drop_constant_inputs(run["actual"][epoch][0], run["data"]),
                          ref.drop_constant_inputs(run["expected"][epoch][0], run["data"]))


@pytest.mark.parametrize("epoch", [FP_EPOCHS - 1, EPOCHS - 1])
def test_bn_statistics_carry_over(run, epoch):
    ref.assert_tree_close(ref.drop_constant_inputs(run["actual"][epoch][1], run["data"]),
                          ref.drop_constant_inputs(run["expected"][epoch][1], run["data"]))
