"""STE against a NumPy reference written from "Training Binarized Neural Networks the Easy Way"
(Paren & Poudel, poster), its STE baseline after Hubara et al. ("Binarized Neural Networks",
NeurIPS 2016):

    w_b = sign(w̃),   w̃ ← Π_[−1,1](w̃ − η_t·Adam(∇ℓ(w_b)))

The poster passes ∇ℓ(w_b) to w̃ unchanged (`method.weight_gate=false`); bnnx's default gates it
by 1{|w̃| ≤ 1} (`method.weight_gate=true`), which differs only where |w̃| > 1, i.e. before the
first projection. Real parameters (first and last layers, BN) move by plain Adam.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

from . import _reference_b as ref

STEPS = 4
BINARY = (False, True, False)  # which layers' kernels and inputs are binarized


def ste_reference(params, stats, data, lrs, gate: bool):
    params, adam = ref.host(params), ref.Adam()
    for (_, x, labels, weights), lr in zip(data, lrs):
        latent = params["QuantDense_1"]["kernel"]
        seen = [params["QuantDense_0"]["kernel"], ref.sign(latent), params["QuantDense_2"]["kernel"]]
        logits, cache = ref.mlp_forward(params, x, seen, BINARY)
        _, dlogits = ref.cross_entropy(logits, labels, weights)
        grads = ref.mlp_backward(params, seen, cache, dlogits, BINARY)
        if gate:
            grads["QuantDense_1"]["kernel"] = grads["QuantDense_1"]["kernel"] * (np.abs(latent) <= 1.0)
        stats = ref.new_stats(stats, cache, 3)
        for path, g in list(ref.flat_items(grads)):
            new = ref.get_leaf(params, path) - lr * adam.direction(path, g)
            ref.set_leaf(params, path, np.clip(new, -1.0, 1.0) if path[0] == "QuantDense_1" else new)
    return params, stats


def cosine(lr, t, total):
    return lr * 0.5 * (1 + math.cos(math.pi * t / total))


@pytest.fixture(scope="module")
def runs(digits):
    """Per option: bnnx's params and BN stats after STEPS steps from a latent kernel scaled ×3 (so
    some |w̃| > 1, where the two options differ), and the reference's from the same start."""
    out = {}
    for gate in (True, False):
        experiment = ref.experiment(digits, "ste", f"method.weight_gate={str(gate).lower()}")
        state = experiment.state
        start = ref.host(state.params)
        start["QuantDense_1"]["kernel"] = 3.0 * start["QuantDense_1"]["kernel"]
        state = dataclasses.replace(state, params={k: {n: jnp.asarray(v, jnp.float32) for n, v in d.items()}
                                                   for k, d in start.items()})
        stats = ref.host(state.batch_stats)
        data = ref.batches(experiment, 0)[:STEPS]
        total = experiment.config.epochs * experiment.steps_per_epoch
        lrs = [cosine(experiment.config.method.lr, t, total) for t in range(STEPS)]
        for batch in data:
            state = ref.step(experiment, state, batch[0])
        params, expected = ste_reference(start, stats, data, lrs, gate)
        out[gate] = (ref.drop_constant_inputs(ref.host(state.params), data),
                     ref.drop_constant_inputs(ref.host(state.batch_stats), data),
                     (ref.drop_constant_inputs(params, data), ref.drop_constant_inputs(expected, data)), start)
    return out


@pytest.mark.parametrize("gate", [True, False])
def test_ste_updates_match_the_reference(runs, gate):
    params, _, (expected, _), _ = runs[gate]
    ref.assert_tree_close(params, expected)


@pytest.mark.parametrize("gate", [True, False])
def test_ste_bn_statistics_match_the_reference(runs, gate):
    _, stats, (_, expected), _ = runs[gate]
    ref.assert_tree_close(stats, expected)


def test_weight_gate_is_a_real_choice(runs):
    """The two options differ only where the start had |w̃| > 1: the signs the forward sees agree
    after the first projection, so the weights inside the box move alike."""
    start = runs[True][3]["QuantDense_1"]["kernel"]
    gated, ungated = (runs[g][0]["QuantDense_1"]["kernel"] for g in (True, False))
    outside = np.abs(start) > 1.0
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(gated[~outside], ungated[~outside])
    assert np.any(gated[outside] != ungated[outside])
    assert np.all(np.abs(gated) <= 1.0) and np.all(np.abs(ungated) <= 1.0)


def test_ste_default_and_preset(compose):
    """bnnx's default keeps the gate; the bnew_cifar paper preset runs the poster's ungated STE."""
    assert compose("method=ste").method.weight_gate is True
    assert "method.weight_gate=false" in ref.paper_overrides("bnew_cifar", "Method", "ste")
