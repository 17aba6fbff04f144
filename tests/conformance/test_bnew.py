"""BNEW against a NumPy reference written from "Training Binarized Neural Networks the Easy Way"
(Paren & Poudel, poster; no arXiv id):

    w_b ← Π_[−1,1]((1 + 2λ_t·η_t)·(w_b − η_t·Adam(∇ℓ(w_b)))),   λ_t = β·t over stage 2

1. binary activations, real-valued w_b (the forward sees w_b itself), λ = 0;
2. λ_t = β·t, t counted from the start of stage 2;
3. at t_lock w_b is projected onto {−1, +1} and gets no gradient after;
4. only the real parameters train.

η_t decays linearly; the poster resets it once, after stage 1 (`method.lr_restarts=poster`);
bnnx's default also resets it for stage 4 (`stages`). Stage lengths (0.2/0.6/0.1/0.1 of the run)
are bnnx's, declared in sweeps/bnew_cifar.yaml: the poster gives none.
"""

from __future__ import annotations

import numpy as np
import pytest

from . import _reference_b as ref

EPOCHS, BATCH, BETA, LR = 10, 512, 5.0, 1e-3
BINARY = (False, True, False)


def linear_decays(lr, starts, total):
    """η_t: linear from lr to 0 over each segment [starts[i], starts[i+1]) (the last ends at total)."""
    edges = [*starts, total]
    out = []
    for t in range(total):
        i = max(j for j in range(len(starts)) if starts[j] <= t)
        out.append(lr * (1 - (t - edges[i]) / (edges[i + 1] - edges[i])))
    return out


def bnew_reference(params, data, ramp, lock, lrs):
    """Every step of the run, by the poster's rules; returns the params after each epoch."""
    params, adam, by_epoch, t = ref.host(params), ref.Adam(), [], 0
    for epoch_data in data:
        for _, x, labels, weights in epoch_data:
            if t == lock:  # step 3: project onto {−1, +1}; no gradient after
                params["QuantDense_1"]["kernel"] = ref.sign(params["QuantDense_1"]["kernel"])
            binary = params["QuantDense_1"]["kernel"]
            seen = [params["QuantDense_0"]["kernel"], binary, params["QuantDense_2"]["kernel"]]
            logits, cache = ref.mlp_forward(params, x, seen, BINARY)
            _, dlogits = ref.cross_entropy(logits, labels, weights)
            grads = ref.mlp_backward(params, seen, cache, dlogits, BINARY)
            lam = BETA * min(max(t - ramp, 0), lock - ramp)
            for path, g in list(ref.flat_items(grads)):
                w = ref.get_leaf(params, path)
                direction = adam.direction(path, g)
                if path[0] != "QuantDense_1":
                    ref.set_leaf(params, path, w - lrs[t] * direction)
                elif t < lock:
                    ref.set_leaf(params, path, np.clip((1 + 2 * lam * lrs[t]) * (w - lrs[t] * direction), -1, 1))
            t += 1
        by_epoch.append(ref.host(params))
    return by_epoch


def run_bnnx(experiment):
    state = experiment.recipe.prepare(experiment.state)
    by_epoch, masks = [], []
    for epoch in range(EPOCHS):
        state = experiment.for_epoch(experiment.recipe.on_epoch(state, epoch), epoch)
        masks.append((float(state.quant["QuantDense_1"]["kernel_mask"]),
                      float(np.max(np.asarray(state.trainable["QuantDense_1"]["kernel"])))))
        for batch in ref.batches(experiment, epoch):
            state = ref.step(experiment, state, batch[0])
        by_epoch.append(ref.host(state.params))
    return by_epoch, masks


def spans(steps_per_epoch):
    """ramp, lock, tune, total in steps: stages 0.2 / 0.6 / 0.1 / 0.1 of EPOCHS."""
    return 2 * steps_per_epoch, 8 * steps_per_epoch, 9 * steps_per_epoch, EPOCHS * steps_per_epoch


@pytest.mark.parametrize("restarts", ["stages", "poster"])
def test_lr_schedule(compose, restarts):
    """η_t of the schedule the method builds, each option against its reference."""
    from bnnx.methods.bnew import linear_decays as built

    ramp, _, tune, total = spans(6)
    starts = [0, ramp, tune] if restarts == "stages" else [0, ramp]
    method = compose("method=bnew", f"method.lr_restarts={restarts}").method
    schedule = built(LR, [ramp, tune] if method.lr_restarts == "stages" else [ramp], total)
    np.testing.assert_allclose([float(np.asarray(schedule(t))) for t in range(total)],
                               linear_decays(LR, starts, total), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def run(digits):
    """A whole run with the poster's lr (the other option differs only in η_t, checked above)."""
    experiment = ref.experiment(digits, "bnew", f"method.beta={BETA}", f"method.lr={LR}",
                                "method.lr_restarts=poster", epochs=EPOCHS, batch=BATCH)
    ramp, lock, _, total = spans(experiment.steps_per_epoch)
    lrs = linear_decays(LR, [0, ramp], total)
    data = [ref.batches(experiment, epoch) for epoch in range(EPOCHS)]
    start = ref.host(experiment.state.params)
    actual, masks = run_bnnx(experiment)
    expected = bnew_reference(start, data, ramp, lock, lrs)
    return dict(actual=actual, expected=expected, masks=masks, data=data)


@pytest.mark.parametrize("epoch", [1, 5, 8, 9])
def test_bnew_weights_match_the_reference(run, epoch):
    """After stage 1 (λ = 0), mid-ramp, at the lock, and at the end of fine-tuning."""
    data = [b for epoch_data in run["data"] for b in epoch_data]
    ref.assert_tree_close(ref.drop_constant_inputs(run["actual"][epoch], data),
                          ref.drop_constant_inputs(run["expected"][epoch], data))


def test_binary_when_and_locked(run):
    """Kernel mask 0 (the forward sees w_b) in stages 1–2, 1 and frozen from the lock on; the
    locked kernel is in {−1, +1} and no later step moves it."""
    assert run["masks"] == [(0.0, 1.0)] * 8 + [(1.0, 0.0)] * 2
    locked = [run["actual"][e]["QuantDense_1"]["kernel"] for e in (8, 9)]
    assert np.all(np.abs(locked[0]) == 1.0)
    np.testing.assert_array_equal(locked[0], locked[1])


def test_paper_preset_runs_the_posters_lr(compose):
    assert compose("method=bnew").method.lr_restarts == "stages"  # bnnx's default, the cpu preset's
    assert "method.lr_restarts=poster" in ref.paper_overrides("bnew_cifar", "Method", "bnew")
