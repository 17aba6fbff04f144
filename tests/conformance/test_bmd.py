"""BMD against a NumPy reference written from "Mirror Descent View for Neural Network
Quantization" (Ajanthan, Gupta, Torr, Hartley and Dokania, AISTATS 2021, arXiv 1910.08237) and
its official code, kartikgupta-at-anu/md-bnn (MD-tanh-S: methods/tanh_projn.py with `--tanh
--full-ste`, train_scripts/cifar10resnet18.sh):

    forward w_b = tanh(β_t·w̃);  ∂ℓ/∂w̃ := ∂ℓ/∂w_b (full STE);  w̃ ← w̃ − η_t·Adam(∂ℓ/∂w̃)

with β and the lr multiplied after every iteration t with t mod k = 0 (the loop below is
md-bnn's: `if iters % beta_interval == 0: beta *= beta_scale`, then the StepLR step), and sign(w̃)
at evaluation (`doround`). No PyTorch fixture: md-bnn is Python 2 code for PyTorch 0.4 that a
current interpreter cannot import, so its loop is transcribed here instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from . import _reference_b as ref

BINARY = (False, True, False)
STEPS = 5


def md_bnn_loop(iterations, beta0, beta_scale, beta_interval, lr0, lr_scale, lr_interval):
    """β and lr each iteration uses, by md-bnn's training loop."""
    beta, lr, used = beta0, lr0, []
    for iters in range(iterations):
        used.append((beta, lr))  # train_step(..., beta=beta) with the optimizer's current lr
        if iters % beta_interval == 0:
            beta = min(beta * beta_scale, 1e35)
        if iters % lr_interval == 0:
            lr = lr * lr_scale  # StepLR(step_size=1, gamma=lr_scale).step()
    return used


def test_beta_and_lr_follow_md_bnn_loop(compose):
    method = compose("method=bmd", "method.beta_end=null", "method.beta0=1.5", "method.beta_growth=1.02",
                     "method.beta_every=200", "method.schedule=md_bnn", "method.lr_every=300").method
    steps = jnp.asarray([0, 1, 2, 199, 200, 201, 300, 301, 400, 401, 601, 1201], jnp.int32)
    used = md_bnn_loop(1202, 1.5, 1.02, 200, 1e-3, 0.3, 300)
    np.testing.assert_allclose(np.asarray(method.beta_at(steps, 1202)), [used[t][0] for t in steps], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(method.lr_schedule(1202)(steps)), [used[t][1] for t in steps], rtol=1e-6)


def test_floor_option_is_bnnx_earlier_count(compose):
    """`beta_steps: floor` keeps β₀·ρ^⌊t/k⌋ (one step later than md-bnn at every multiple of k)."""
    method = compose("method=bmd", "method.beta_end=null", "method.beta_growth=2", "method.beta_every=3",
                     "method.beta_steps=floor").method
    betas = np.asarray(method.beta_at(jnp.arange(8), 8))
    assert betas.tolist() == [2.0 ** (t // 3) for t in range(8)]


def test_the_step_uses_the_schedule(trained):
    """The runtime β the jitted step writes into the binary layer is the method's β_t."""
    experiment, state = trained[0], trained[1]
    runtime = jax.jit(experiment.recipe.runtime)
    betas = [float(runtime(state.quant, jnp.int32(t))["QuantDense_1"]["beta"]) for t in (0, 1, 2, 3)]
    assert betas == pytest.approx([2.0, 3.0, 3.0, 4.5])


def bmd_reference(params, data, betas, lrs):
    params, adam = ref.host(params), ref.Adam()
    for (_, x, labels, weights), beta, lr in zip(data, betas, lrs):
        seen = [params["QuantDense_0"]["kernel"], np.tanh(beta * params["QuantDense_1"]["kernel"]),
                params["QuantDense_2"]["kernel"]]
        logits, cache = ref.mlp_forward(params, x, seen, BINARY)
        _, dlogits = ref.cross_entropy(logits, labels, weights)
        grads = ref.mlp_backward(params, seen, cache, dlogits, BINARY)  # full STE: ∂ℓ/∂w_b goes to w̃
        for path, g in list(ref.flat_items(grads)):
            ref.set_leaf(params, path, ref.get_leaf(params, path) - lr * adam.direction(path, g))
    return params


@pytest.fixture(scope="module")
def trained(digits):
    """STEPS steps with β ×1.5 and lr ×0.5 every 2 steps (md-bnn's count), bnnx and reference."""
    experiment = ref.experiment(digits, "bmd", "method.beta_end=null", "method.beta0=2", "method.beta_growth=1.5",
                                "method.beta_every=2", "method.schedule=md_bnn", "method.lr_every=2",
                                "method.lr_decay=0.5", "method.lr=0.001")
    start, data = ref.host(experiment.state.params), ref.batches(experiment, 0)[:STEPS]
    used = md_bnn_loop(STEPS, 2.0, 1.5, 2, 0.001, 0.5, 2)
    state = experiment.state
    for batch in data:
        state = ref.step(experiment, state, batch[0])
    expected = bmd_reference(start, data, [b for b, _ in used], [lr for _, lr in used])
    return experiment, state, expected, data


def test_bmd_updates_match_the_reference(trained):
    _, state, expected, data = trained
    ref.assert_tree_close(ref.drop_constant_inputs(ref.host(state.params), data),
                          ref.drop_constant_inputs(expected, data))


def test_bmd_evaluates_the_signs(trained, digits):
    """At evaluation the binary layer sees sign(w̃) (md-bnn's `doround`) and BN its running stats."""
    experiment, state, _, data = trained
    params, stats = ref.host(state.params), ref.host(state.batch_stats)
    x = data[0][1]
    seen = [params["QuantDense_0"]["kernel"], ref.sign(params["QuantDense_1"]["kernel"]),
            params["QuantDense_2"]["kernel"]]
    running = [(stats[f"BatchNorm_{i}"]["mean"], stats[f"BatchNorm_{i}"]["var"]) for i in range(3)]
    expected, _ = ref.mlp_forward(params, x, seen, BINARY, stats=running)
    logits = experiment.model.apply(state.variables(), experiment.dataset.normalize(data[0][0][0]), train=False)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=1e-5)
