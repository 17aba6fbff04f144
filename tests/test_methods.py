"""Optimizer-level methods: one battery over every registered method, plus hand-computed checks
of Bop (flip rule), BNEW (update formula, stages), RPR (partition, rescaling, schedule, start
from a full-precision run, resume) and BMD (β schedule)."""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnnx.layers import flat, param_labels
from bnnx.methods import METHODS
from bnnx.methods.base import MethodContext, scheduled_values
from bnnx.methods.bnew import bnew, ramp_growth, slope_for_expansion
from bnnx.methods.bop import Bop, bop, flip_ratio, reset_flip_counter, step_decay
from bnnx.methods.rpr import constrained_mask, filter_scale, quantize_levels
from bnnx.quantizers import SignSTE, Ternary
from bnnx.train.experiment import build_experiment
from bnnx.train.loop import Trainer, prepare_run_dir, train

TINY = ("model.hidden=[64,64]", "checkpoint_every=100")
# Per method: overrides that fit a short digits run, and the test accuracy it must reach.
BATTERY = {
    "fp": ((), 0.85),
    "ste": ((), 0.75),
    "bmd": ((), 0.7),
    "bop": ((), 0.8),
    "bnew": ((), 0.75),
    "rpr": ((), 0.8),
}
OPTIMIZER_METHODS = [name for name in METHODS if name not in ("ppt", "ilb")]
LOGGED = {"bmd": {"beta"}, "bop": {"gamma", "threshold", "flip_ratio"}, "bnew": {"lam", "binary_fraction", "expansion"},
          "rpr": {"freezing_fraction"}}


def _experiment(compose, digits, name, *overrides, epochs=3):
    config = compose(f"method={name}", f"epochs={epochs}", *TINY, *BATTERY[name][0], *overrides)
    return build_experiment(config, dataset=digits)


def _binary_kernels(state, labels):
    """Host copies (the jitted train step donates the state's buffers)."""
    return {p: np.array(w) for p, w in flat(state.params).items() if flat(labels)[p] == "binary"}


def _shapes(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.asarray(x).dtype), tree)


def _in_levels(w, levels=(-1.0, 1.0)):
    return bool(np.isin(np.asarray(w), levels).all())


def _effective_kernels(experiment, state):
    """What the evaluation/export forward pass sees in each binary-bound layer."""
    quantizer = experiment.model.policy.kernel_quantizer
    kernels = _binary_kernels(state, param_labels_of(experiment))
    masks = flat(state.quant)
    return {p: jnp.where(masks[p[:-1] + ("kernel_mask",)] > 0, quantizer(w, train=False), w)
            for p, w in kernels.items()}


def param_labels_of(experiment):
    return param_labels(experiment.state.params, experiment.state.quant)


@pytest.mark.parametrize("name", OPTIMIZER_METHODS)
def test_battery(name, compose, digits, tmp_path):
    """Jit-able init/update, finite values, stable shapes, binary kernels where promised; then the
    method learns digits with the MLP and exports exactly binary (or ternary) kernels."""
    overrides, bar = BATTERY[name]
    config = compose(f"method={name}", "epochs=8", *TINY, *overrides, f"out_dir={tmp_path / name}")
    experiment = build_experiment(config, dataset=digits)
    _check_steps(experiment, digits)

    template = jax.tree.map(jnp.copy, experiment.state)  # the run donates experiment.state
    result = Trainer(experiment, prepare_run_dir(config), quiet=True).run()
    assert result.status == "completed"
    assert result.summary["test_accuracy"] >= bar, result.summary["test_accuracy_curve"]
    assert {"lr"} | LOGGED.get(name, set()) <= set(result.metrics[-1])

    state, _ = _restore(template, result.run_dir)
    effective = _effective_kernels(experiment, state)
    assert (len(effective) > 0) == (name != "fp")
    for path, w in effective.items():
        assert _in_levels(w, _levels(experiment)), f"{name}: exported {path} is not in {_levels(experiment)}"


def _levels(experiment):
    return (-1.0, 0.0, 1.0) if experiment.model.policy.kernel_quantizer.levels == 3 else (-1.0, 1.0)


def _check_steps(experiment, digits, steps_per_epoch: int = 2):
    name, recipe, labels = experiment.config.method.name, experiment.recipe, param_labels_of(experiment)
    state = recipe.prepare(jax.tree.map(jnp.copy, experiment.state))  # the step donates its input
    shapes = _shapes((state.params, state.quant, state.trainable, state.opt_state))

    opt_state = jax.jit(recipe.tx.init)(state.params)
    assert _shapes(opt_state) == _shapes(state.opt_state)
    grads = jax.tree.map(lambda w: jnp.full_like(w, 0.01), state.params)
    updates, opt_state = jax.jit(recipe.tx.update)(grads, opt_state, state.params)
    assert _shapes(opt_state) == _shapes(state.opt_state)
    assert all(bool(jnp.isfinite(u).all()) for u in jax.tree.leaves(updates))

    batches, promised = digits.train_batches(0, 64, 0), []
    for epoch in range(experiment.config.epochs):
        state = recipe.on_epoch(state, epoch)
        before = _binary_kernels(state, labels)
        for _ in range(steps_per_epoch):
            state, sums = experiment.train_step(state, next(batches), experiment.loss)
            assert np.isfinite(float(sums["loss"]))
        assert _shapes((state.params, state.quant, state.trainable, state.opt_state)) == shapes
        assert all(bool(jnp.isfinite(x).all()) for x in jax.tree.leaves((state.params, state.opt_state)))
        effective = _effective_kernels(experiment, state)
        for path, w in _binary_kernels(state, labels).items():
            frozen = np.broadcast_to(np.asarray(flat(state.trainable)[path]) == 0, w.shape)
            np.testing.assert_array_equal(w[frozen], before[path][frozen])  # frozen means unchanged
            if name == "bop" or (name == "bnew" and frozen.all()):
                promised.append(path)
                assert _in_levels(w), f"{name}: {path} left {{-1, +1}} in epoch {epoch}"
            if name == "rpr":
                constrained = np.asarray(flat(state.quant)[path[:-1] + ("kernel_mask",)]) > 0
                promised.append(path)
                assert _in_levels(np.asarray(effective[path])[constrained], _levels(experiment))
    assert promised or name not in ("bop", "bnew", "rpr")


def _restore(template, run_dir):
    from bnnx.train.checkpoint import Checkpoints

    checkpoints = Checkpoints(run_dir)
    try:
        return checkpoints.restore(template)
    finally:
        checkpoints.close()


# ---- Bop -------------------------------------------------------------------------------

def test_bop_flips_exactly_the_weights_the_rule_names():
    w = {"kernel": jnp.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])}
    g = {"kernel": jnp.array([0.4, -0.4, -0.4, 0.4, 0.1, -0.25])}
    tx = bop(gamma=0.5, threshold=0.1)
    state = tx.init(w)._replace(momentum={"kernel": jnp.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.1])})
    updates, state = jax.jit(tx.update)(g, state, w)
    # m = 0.5·m + 0.5·g = [0.2, −0.2, −0.2, 0.2, 0.05, −0.075]
    np.testing.assert_allclose(state.momentum["kernel"], [0.2, -0.2, -0.2, 0.2, 0.05, -0.075], rtol=1e-6)
    # flip where |m| > 0.1 and sign(m) = sign(w): elements 0 and 1 only
    np.testing.assert_array_equal(w["kernel"] + updates["kernel"], [-1.0, 1.0, 1.0, -1.0, 1.0, -1.0])
    assert flip_ratio(state, {"kernel": "binary"}, w) == pytest.approx(2 / 6)
    assert flip_ratio(reset_flip_counter(state), {"kernel": "binary"}, w) == 0.0


def test_bop_gamma_decays_by_epochs():
    gamma = step_decay(1e-4, 0.1, every_epochs=2, steps_per_epoch=10)
    assert [float(gamma(t)) for t in (0, 19, 20, 39, 40)] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5, 1e-6])
    assert float(step_decay(1e-4, 0.1, every_epochs=0, steps_per_epoch=10)(1000)) == pytest.approx(1e-4)


def test_bop_gamma_by_the_run_is_one_over_horizon_times_steps():
    run = MethodContext(layers=[], labels={}, steps_per_epoch=10, epochs=10, seed=0)  # T = 100 steps
    gamma = Bop(gamma_horizon=0.5, gamma_decay=0.1, gamma_decay_every=0.25).gamma_schedule(run)
    # 1/γ = 0.5·100 = 50 steps; ×0.1 every 0.25·100 = 25 steps
    assert [float(gamma(t)) for t in (0, 24, 25, 49, 50)] == pytest.approx([0.02, 0.02, 0.002, 0.002, 2e-4])
    assert float(Bop(gamma_horizon=0.001).gamma_schedule(run)(0)) == 1.0  # 1/(0.1 step) caps at 1
    paper = Bop(gamma=1e-4, gamma_decay_every_epochs=2).gamma_schedule(run)  # the paper's form: per step, by epochs
    assert [float(paper(t)) for t in (0, 19, 20)] == pytest.approx([1e-4, 1e-4, 1e-5])


def test_bop_descends_on_least_squares():
    """Flipping where sign(m) = sign(w), m an EMA of +g, lowers the loss."""
    x = jax.random.normal(jax.random.key(0), (64, 16))
    target = jnp.where(jax.random.normal(jax.random.key(1), (16,)) >= 0, 1.0, -1.0)
    y = x @ target
    loss = lambda w: jnp.mean((x @ w - y) ** 2)  # noqa: E731
    w = -target
    tx = bop(gamma=0.1, threshold=0.0)
    state = tx.init(w)
    start = float(loss(w))
    for _ in range(20):
        updates, state = tx.update(jax.grad(loss)(w), state, w)
        w = w + updates
    assert _in_levels(w)
    assert float(loss(w)) < 0.1 * start


# ---- BNEW ------------------------------------------------------------------------------

def test_bnew_update_equals_the_formula():
    w = jnp.array([0.5, -0.2, 0.9, -0.99])
    g = jnp.array([1.0, -2.0, -0.5, 3.0])
    tx = optax.inject_hyperparams(bnew)(learning_rate=0.1, lam=2.0)
    updates, _ = jax.jit(tx.update)(g, tx.init(w), w)
    # first Adam step = g/|g| = [1, −1, −1, 1]; (1 + 2·2·0.1)·(w − 0.1·step) = 1.4·[0.4, −0.1, 1.0, −1.09]
    np.testing.assert_allclose(w + updates, [0.56, -0.14, 1.0, -1.0], atol=1e-6)


def test_bnew_slope_for_expansion_solves_the_product():
    half = optax.constant_schedule(0.5)
    # ramp of 2 steps: weights 2·t·η = [0, 1], so 1 + β = expansion
    assert slope_for_expansion(10.0, half, ramp=4, lock=6) == pytest.approx(9.0)
    # 3 steps: weights [0, 1, 2]: (1 + β)(1 + 2β) = 6 → 2β² + 3β − 5 = 0 → β = 1
    assert slope_for_expansion(6.0, half, ramp=0, lock=3) == pytest.approx(1.0)
    np.testing.assert_allclose(ramp_growth(1.0, half, 0, 3), [1.0, 1.0, 2.0, 6.0])
    assert slope_for_expansion(1.0, half, 0, 3) == 0.0 and slope_for_expansion(6.0, half, 3, 3) == 0.0


def test_bnew_stages_ramp_lock_and_freeze(compose, digits):
    experiment = _experiment(compose, digits, "bnew", "method.stages=[0.25,0.25,0.25,0.25]",
                             "method.beta=0.01", epochs=4)
    spe, recipe = experiment.steps_per_epoch, experiment.recipe
    labels, state = param_labels_of(experiment), recipe.prepare(experiment.state)
    batches = list(digits.train_batches(0, 64, 0))
    seen = []
    for epoch in range(4):
        state = recipe.on_epoch(state, epoch)
        if epoch == 2:
            locked = _binary_kernels(state, labels)
            assert all(_in_levels(w) for w in locked.values())
        for batch in batches:
            state, _ = experiment.train_step(state, batch, experiment.loss)
        assert all(np.abs(w).max() <= 1.0 for w in _binary_kernels(state, labels).values())  # Π_[−1,1]
        seen.append((float(np.max(state.quant["QuantDense_1"]["kernel_mask"])), scheduled_values(state.opt_state)))
    for path, w in _binary_kernels(state, labels).items():
        np.testing.assert_array_equal(w, locked[path])
    assert [mask for mask, _ in seen] == [0.0, 0.0, 1.0, 1.0]
    # λ = β·(steps since stage 2 began), held after the lock (logged: the value of an epoch's last step)
    np.testing.assert_allclose([v["lam"] for _, v in seen], [0.0, 0.01 * (spe - 1), 0.01 * spe, 0.01 * spe], rtol=1e-5)
    # the lr decays linearly to 0 in stage 1, over stages 2–3, and again in stage 4
    lr = [v["lr"] for _, v in seen]
    np.testing.assert_allclose(lr, [1e-3 / spe, 1e-3 * (spe + 1) / (2 * spe), 1e-3 / (2 * spe), 1e-3 / spe], rtol=1e-4)


# ---- RPR -------------------------------------------------------------------------------

def test_rpr_constrains_round_ff_n_and_repartitions_each_epoch(compose, digits):
    experiment = _experiment(compose, digits, "rpr", "method.freezing_fraction=0.7", epochs=10)
    recipe, labels = experiment.recipe, param_labels_of(experiment)
    state = recipe.on_epoch(recipe.prepare(experiment.state), 0)
    (path, kernel), = _binary_kernels(state, labels).items()
    mask = np.asarray(state.quant[path[0]]["kernel_mask"])
    assert mask.shape == kernel.shape == (64, 64) and mask.sum() == 2867  # round(0.7·4096 = 2867.2)
    np.testing.assert_array_equal(np.asarray(flat(state.trainable)[path]), 1.0 - mask)

    state, _ = experiment.train_step(state, next(digits.train_batches(0, 64, 0)), experiment.loss)
    moved = np.asarray(state.params[path[0]]["kernel"]) != np.asarray(kernel)
    assert not moved[mask == 1].any() and moved[mask == 0].mean() > 0.9

    replayed = recipe.on_epoch(state, 0).quant[path[0]]["kernel_mask"]
    np.testing.assert_array_equal(replayed, mask)  # a pure function of (seed, epoch): resume replays it
    following = np.asarray(recipe.on_epoch(state, 1).quant[path[0]]["kernel_mask"])
    assert following.sum() == mask.sum() and (following != mask).any()


def test_rpr_freezing_fraction_and_lr_schedule(compose):
    method = compose("method=rpr", "epochs=10", "method.initial_fraction=0.2", "method.final_fraction=0.2",
                     "method.lr_drop_at=0.5").method
    assert [method.freezing_fraction_at(e, 10) for e in range(10)] == [
        0.9, 0.9, 0.95, 0.95, 0.975, 0.975, 0.9875, 0.9875, 1.0, 1.0]
    lr = method.phase_lr_schedule(10, steps_per_epoch=6)
    # initial phase (12 steps) at 1e-3; each later FF phase (12 steps): 1e-3 for half, then 1e-4;
    # final phase (12 steps): thirds at 1×, 0.1×, 0.01×
    assert [float(lr(t)) for t in (0, 6, 11, 12, 17, 18, 23, 47, 48, 51, 52, 55, 56, 59)] == pytest.approx(
        [1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_rpr_default_is_the_papers_schedule_at_112_epochs(compose):
    """37 epochs at FF 0.9, then 15 each at 0.95, 0.975, 0.9875 (lr ×0.1 after 10), 30 at FF 1."""
    method = compose("method=rpr").method
    assert method.phase_ends(112) == [37, 52, 67, 82, 112]
    lr = method.phase_lr_schedule(112, steps_per_epoch=1)
    epochs = (0, 36, 37, 46, 47, 51, 52, 61, 62, 66, 67, 76, 77, 81, 82, 91, 92, 101, 102, 111)
    assert [float(lr(e)) for e in epochs] == pytest.approx(
        [1e-3, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-3, 1e-3, 1e-4, 1e-4, 1e-3, 1e-3, 1e-4, 1e-4,
         1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_rpr_quantizes_shortcut_projections(compose):
    model = compose("method=rpr", "model=resnet18").trained_model
    assert model.real_roles == ("first", "last") and not model.binary_activations


def test_rpr_quantizer_levels_match_the_model_quantizers():
    w = np.array([-1.2, -0.5, -0.49, 0.0, 0.3, 0.5, 0.51, 2.0], np.float32)
    np.testing.assert_array_equal(quantize_levels(w, "binary"), SignSTE()(jnp.asarray(w)))
    np.testing.assert_array_equal(quantize_levels(w, "ternary"), Ternary(threshold=0.5)(jnp.asarray(w)))
    np.testing.assert_array_equal(quantize_levels(w, "ternary"), [-1, 0, 0, 0, 0, 0, 1, 1])


def test_rpr_filter_scale_brute_force_and_nelder_mead():
    w = np.random.default_rng(0).normal(size=500)
    assert filter_scale(w, "binary") == pytest.approx(np.mean(np.abs(w)), rel=1e-6)  # closed form
    grid = np.linspace(1e-4, np.abs(w).max(), 20001)
    errors = [np.sum((w - s * quantize_levels(w / s, "ternary")) ** 2) for s in grid]
    found = filter_scale(w, "ternary")
    error = np.sum((w - found * quantize_levels(w / found, "ternary")) ** 2)
    assert error <= min(errors) + 1e-9 and found == pytest.approx(grid[int(np.argmin(errors))], rel=1e-3)


def test_constrained_mask_counts_exactly():
    masks = [constrained_mask(jax.random.key(0), (40,), ff) for ff in (0.9, 0.95, 0.975, 0.9875, 1.0)]
    assert [int(mask.sum()) for mask in masks] == [36, 38, 39, 40, 40]  # round(FF·40), 39.5 rounds up


def test_rpr_starts_from_a_full_precision_run(compose, digits, tmp_path):
    # test_battery[fp]'s configuration: its compiled steps are reused (8 epochs of the small MLP cost less)
    fp_config = compose("method=fp", "epochs=8", *TINY, f"out_dir={tmp_path / 'fp'}")
    fp_experiment = build_experiment(fp_config, dataset=digits)
    template = jax.tree.map(jnp.copy, fp_experiment.state)
    fp_dir = Trainer(fp_experiment, prepare_run_dir(fp_config), quiet=True).run().run_dir
    fp_state, _ = _restore(template, fp_dir)
    experiment = _experiment(compose, digits, "rpr", f"method.init_from={fp_dir}", "method.levels=ternary")
    state = experiment.recipe.prepare(experiment.state)
    labels = flat(param_labels_of(experiment))
    for path, w in flat(state.params).items():
        theirs = np.asarray(flat(fp_state.params)[path])
        if labels[path] == "real":
            np.testing.assert_array_equal(w, theirs)
            continue
        scales = theirs[:, :3] / np.asarray(w)[:, :3]  # each filter divided by its own ŝ
        expected = [filter_scale(theirs[:, c], "ternary") for c in range(3)]
        np.testing.assert_allclose(scales, np.broadcast_to(expected, scales.shape), rtol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, state.batch_stats, fp_state.batch_stats)


def test_rpr_resume_replays_an_uninterrupted_run(compose, digits, tmp_path):
    every_epoch = ("model.hidden=[64,64]", "checkpoint_every=1", "epochs=3", "method=rpr")
    full = train(compose(*every_epoch, f"out_dir={tmp_path / 'full'}"), dataset=digits)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    checkpoints = sorted((tmp_path / "cut" / "checkpoints").iterdir(), key=lambda p: int(p.name))
    shutil.rmtree(checkpoints[-1])  # as if stopped after epoch 2
    (tmp_path / "cut" / "summary.json").unlink()
    resumed = train(compose(*every_epoch, f"out_dir={tmp_path / 'cut'}", "resume=true"), dataset=digits)
    assert resumed.summary["test_accuracy_curve"] == full.summary["test_accuracy_curve"]
    assert resumed.metrics[-1]["freezing_fraction"] == full.metrics[-1]["freezing_fraction"] == 1.0


# ---- BMD -------------------------------------------------------------------------------

def test_bmd_beta_anneals_geometrically_to_beta_end(compose, digits):
    experiment = _experiment(compose, digits, "bmd", "method.beta0=2", "method.beta_end=32", epochs=4)
    total = 4 * experiment.steps_per_epoch
    runtime = jax.jit(experiment.recipe.runtime)
    betas = [float(runtime(experiment.state.quant, jnp.int32(t))["QuantDense_1"]["beta"])
             for t in (0, total // 4, total // 2, total, 2 * total)]
    # β₀·(β_end/β₀)^(t/T) = 2·16^(t/T): 2, 4, 8, 32, held at 32 past the end
    assert betas == pytest.approx([2.0, 4.0, 8.0, 32.0, 32.0], rel=1e-5)
    assert experiment.recipe.metrics(experiment.state.replace(step=jnp.int32(total))) == {"beta": pytest.approx(32.0)}


def test_bmd_beta_follows_its_step_schedule(compose, digits):
    experiment = _experiment(compose, digits, "bmd", "method.beta0=2", "method.beta_end=null", "method.beta_growth=1.5",
                             "method.beta_steps=floor",
                             "method.beta_every=3")
    assert experiment.config.trained_model.kernel_quantizer == "tanh_mirror"
    runtime = jax.jit(experiment.recipe.runtime)
    betas = [float(runtime(experiment.state.quant, jnp.int32(t))["QuantDense_1"]["beta"]) for t in (0, 2, 3, 5, 6, 9)]
    assert betas == pytest.approx([2.0, 2.0, 3.0, 3.0, 4.5, 6.75])
    assert experiment.recipe.metrics(experiment.state.replace(step=jnp.int32(7))) == {"beta": pytest.approx(4.5)}


# ---- bad input -------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    ("method=bop", "method.gamma=0"),
    ("method=bop", "method.gamma=-0.1"),
    ("method=bop", "method.threshold=-1e-8"),
    ("method=rpr", "method.freezing_fraction=0"),
    ("method=rpr", "method.freezing_fraction=1.5"),
    ("method=rpr", "method.levels=quaternary"),
    ("method=bnew", "method.stages=[0.2,0.6,0.1,0.2]"),
    ("method=bnew", "method.stages=[0.5,0.5]"),
    ("method=bnew", "method.stages=1"),
    ("method=bmd", "method.beta_growth=0.5"),
    ("method=bmd", "method.beta_end=0.5"),
    ("method=bnew", "method.expansion=0.5"),
    ("method=bop", "method.gamma_horizon=0"),
    ("method=bop", "method.gamma_decay_every=0.2", "method.gamma_decay_every_epochs=3"),
    ("method=rpr", "method.init_from=/nonexistent/run"),
])
def test_bad_input_exits_2_with_one_line(overrides, run_cli, tmp_path):
    code, output = run_cli("train", *overrides, *TINY, "epochs=1", f"out_dir={tmp_path / 'run'}")
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, output
    assert "Traceback" not in output and not (tmp_path / "run").exists()


def test_init_from_an_incompatible_run_exits_2(run_cli, tmp_path):
    code, _ = run_cli("train", "method=fp", "model.hidden=[16]", "epochs=1", f"out_dir={tmp_path / 'fp'}", "-q")
    assert code == 0
    code, output = run_cli("train", "method=rpr", f"method.init_from={tmp_path / 'fp'}", *TINY, "epochs=1",
                           f"out_dir={tmp_path / 'rpr'}")
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, output
    assert json.loads((tmp_path / "fp" / "summary.json").read_text())["status"] == "completed"
