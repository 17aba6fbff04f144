"""BMD against a NumPy reference written from "Mirror Descent View for Neural Network
Quantization" (Ajanthan, Gupta, Torr, Hartley and Dokania, AISTATS 2021, arXiv 1910.08237) and
its official code, kartikgupta-at-anu/md-bnn (MD-tanh-S: methods/tanh_projn.py with `--tanh
--full-ste`, train_scripts/cifar10resnet18.sh):

    forward w_b = tanh(β_t·w̃);  ∂ℓ/∂w̃ := ∂ℓ/∂w_b (full STE);  w̃ ← w̃ − η_t·Adam(∂ℓ/∂w̃)

with β and the lr multiplied after every iteration t with t mod k = 0 (the loop below is
md-bnn's: `if iters % beta_interval == 0: beta *= beta_scale`, then the StepLR step), and sign(w̃)
at evaluation (`doround`).

The last test compares with md-bnn itself: tests/fixtures/bmd_trajectory.npz was recorded once by
tests/fixtures/make_bmd_fixture.py, which runs md-bnn's own tanh_projn.setup_and_run (its
Python 2 print statements rewritten as calls at load time, and one `view` that current PyTorch
refuses in its accuracy helper made a `reshape`) under current PyTorch on a CPU, for a tiny MLP in
md-bnn's conventions (every parameter through tanh, BatchNorm without affine parameters, ReLU).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.data.base import normalizer
from bnnx.methods.base import scheduled_values

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


# Against md-bnn itself (MD-tanh-S, `--tanh --full-ste`): the fixture's 12 iterations, lr 0.01 ×0.3
# every 5, β 1 ×2 every 4 (train_scripts/cifar10resnet18.sh's flags with the schedule scaled).

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bmd_trajectory.npz"
MD_BNN = ["model.hidden=[8,8]", "model.activation=relu", "model.real_roles=[]", "model.binary_activations=false",
          "epochs=3", "method.lr=0.01", "method.schedule=md_bnn", "method.lr_decay=0.3", "method.lr_every=5",
          "method.beta_end=null", "method.beta0=1", "method.beta_growth=2", "method.beta_every=4"]


def md_bnn_fixture():
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def run_from_md_bnn_fixture(digits, fixture, *overrides):
    """bnnx from md-bnn's initial weights on its batches: per iteration the β its runtime writes
    into each layer, the lr and the dual weights after the step (torch layout).

    Every layer's kernel goes through tanh (md-bnn maps every parameter: model.real_roles=[]) and
    activations stay real; md-bnn's BatchNorm has no affine parameters, so bnnx's BN scale and bias
    are held at 1 and 0 through the train state's trainable mask."""
    from bnnx.config.compose import compose_config
    from bnnx.train.experiment import build_experiment

    pixels, labels = fixture["pixels"], fixture["labels"]
    dataset = dataclasses.replace(digits, normalize=normalizer([float(fixture["mean"])], [float(fixture["std"])],
                                                              scale=float(fixture["scale"])))
    config = compose_config(["method=bmd", "model=mlp", *MD_BNN, *overrides, "dataset=digits",
                             f"batch_size={dataset.num_train // pixels.shape[1]}"])
    experiment = build_experiment(config, dataset=dataset)
    state = experiment.state
    params = {name: dict(layer) for name, layer in state.params.items()}
    trainable = {name: dict(layer) for name, layer in state.trainable.items()}
    for i in range(3):
        params[f"QuantDense_{i}"]["kernel"] = fixture[f"weight{i}"][0].T.copy()
        np.testing.assert_array_equal(params[f"BatchNorm_{i}"]["scale"], 1.0)
        np.testing.assert_array_equal(params[f"BatchNorm_{i}"]["bias"], 0.0)
        trainable[f"BatchNorm_{i}"] = jax.tree.map(jnp.zeros_like, trainable[f"BatchNorm_{i}"])
    state = experiment.recipe.prepare(state.replace(params=params, trainable=trainable))
    runtime = jax.jit(experiment.recipe.runtime)
    betas, lrs, weights = [], [], []
    for epoch in range(pixels.shape[0]):
        state = experiment.recipe.on_epoch(state, epoch)
        for step in range(pixels.shape[1]):
            quant = runtime(state.quant, state.step)
            betas.append([float(quant[f"QuantDense_{i}"]["beta"]) for i in range(3)])
            images = pixels[epoch, step].reshape(-1, 8, 8, 1).astype(np.float32)
            state = ref.step(experiment, state, (images, labels[epoch, step].astype(np.int32),
                                                 np.ones(len(images), np.float32)))
            lrs.append(scheduled_values(state.opt_state)["lr"])
            weights.append([np.asarray(state.params[f"QuantDense_{i}"]["kernel"]).T for i in range(3)])
    return betas, lrs, weights


def test_md_tanh_s_follows_md_bnn(digits):
    """md-bnn's MD-tanh-S from the same weights on the same batches: every layer's β and the lr
    of each iteration (across three β and two lr steps), and every dual weight after every
    iteration within 1e−5 (tanh(β·w̃) forward, the gradient w.r.t. it applied to w̃, Adam)."""
    fixture = md_bnn_fixture()
    betas, lrs, weights = run_from_md_bnn_fixture(digits, fixture)
    assert fixture["beta"].tolist() == [1, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8, 8]
    np.testing.assert_allclose(betas, np.repeat(fixture["beta"][:, None], 3, 1), rtol=1e-6, atol=0)
    np.testing.assert_allclose(lrs, fixture["lr"], rtol=1e-6, atol=0)
    assert len(weights) == len(fixture["weight0"]) - 1
    for t, ours in enumerate(weights):
        for i in range(3):
            np.testing.assert_allclose(ours[i], fixture[f"weight{i}"][t + 1], atol=1e-5, rtol=0,
                                       err_msg=f"iteration {t} weight{i}")
