"""Partial pre-training (bnnx/methods/ppt.py) and time to accuracy (bnnx/sweeps/timing.py)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bnnx.io import write_json, write_jsonl
from bnnx.layers import flat
from bnnx.methods.base import scheduled_values
from bnnx.models import build_model
from bnnx.sweeps.timing import speedup, speedup_stats
from bnnx.train.experiment import build_experiment
from bnnx.train.loop import train
from bnnx.train.plateau import epochs_to_target, seconds_to_target
from bnnx.train.step import evaluate

STEPS = 21  # digits: 1,347 training images, batch 64


def masks(state) -> dict:
    return {path: np.asarray(value) for path, value in flat(state.quant).items() if path[-1].endswith("_mask")}


def run_epoch(experiment, state, epoch, record=None):
    state = experiment.for_epoch(experiment.recipe.on_epoch(state, epoch), epoch)
    if record is not None:
        record.append(masks(state))
    for batch in experiment.dataset.train_batches(epoch, experiment.config.batch_size, experiment.config.seed):
        state, _ = experiment.train_step(state, batch, experiment.loss)
    return state


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    """Reference runs: the FP method over 2 epochs; STE and PPT with fp_fraction 0 over 1 epoch."""
    from bnnx.config.compose import compose_config

    root = tmp_path_factory.mktemp("ppt")
    overrides = {"fp": ["method=fp", "epochs=2"], "ste": ["method=ste", "epochs=1"],
                 "ppt0": ["method=ppt", "epochs=1", "method.fp_fraction=0"]}
    results = {name: train(compose_config([*o, f"out_dir={root / name}"]), dataset=digits)
               for name, o in overrides.items()}
    return {
        **{name: r.metrics for name, r in results.items()},
        "dirs": {name: r.run_dir for name, r in results.items()},
    }


@pytest.fixture(scope="module")
def ppt(digits):
    """PPT over 4 epochs, the first 2 full precision, trained epoch by epoch as the loop does:
    the rows it would log, the quant after each epoch hook, the state at the end of the FP epochs."""
    from bnnx.config.compose import compose_config

    config = compose_config(["method=ppt", "epochs=4", "method.fp_fraction=0.5", "+method.inner_config.lr=0.01"])
    experiment = build_experiment(config, dataset=digits)
    state = experiment.recipe.prepare(experiment.state)
    out = {"experiment": experiment, "prepared": masks(state), "masks": [], "rows": []}
    for epoch in range(4):
        if epoch == 2:
            out["fp_state"] = jax.tree.map(jnp.copy, state)
        state = run_epoch(experiment, state, epoch, out["masks"])
        out["rows"].append({**evaluate(experiment, state), **scheduled_values(state.opt_state),
                            **experiment.recipe.metrics(state)})
    return out


def test_precision_masks_are_zero_for_fp_epochs_then_one(ppt):
    assert ppt["prepared"] and all(np.all(m == 0) for m in ppt["prepared"].values())
    assert {path[-1] for path in ppt["prepared"]} == {"kernel_mask", "input_mask"}
    for epoch, epoch_masks in enumerate(ppt["masks"]):
        expected = 1.0 if epoch >= 2 else 0.0
        assert all(np.all(m == expected) for m in epoch_masks.values()), epoch


def test_metrics_log_the_precision_state(ppt, runs):
    assert [row["binary"] for row in ppt["rows"]] == [0.0, 0.0, 1.0, 1.0]
    assert [row["binary"] for row in runs["ppt0"]] == [1.0]


def test_fp_epochs_are_the_fp_twin_exactly(ppt, runs):
    # The FP epochs compile the FP twin's own graph, as method=fp does: the first epoch's training
    # loss is the same number; the Adam updates run inside PPT's phase switch (a lax.cond), whose
    # float32 rounding may differ in the last bits (1e-6 relative after an epoch on one CPU).
    # A binarized forward is off by >10 %.
    for ppt_row, fp_row in zip(ppt["rows"][:2], runs["fp"]):
        assert ppt_row["lr"] == fp_row["lr"]
        assert ppt_row["test_loss"] == pytest.approx(fp_row["test_loss"], rel=2e-5)
        assert ppt_row["test_accuracy"] == pytest.approx(fp_row["test_accuracy"], abs=1.01 / 450)  # one example


def test_fp_epochs_compile_the_fp_twins_graph_and_no_quantizer(ppt):
    from bnnx.layers import FULL_PRECISION

    experiment, state = ppt["experiment"], ppt["fp_state"]
    fp_apply = experiment.for_epoch(state, 0).apply_fn
    assert fp_apply.__self__.policy == FULL_PRECISION and fp_apply == experiment.for_epoch(state, 1).apply_fn
    assert experiment.for_epoch(state, 2).apply_fn == experiment.model.apply
    # the FP epochs' forward is the FP twin's graph op for op, not the masked BNN's
    images = jnp.zeros((64, *experiment.dataset.input_shape), jnp.float32)

    def graph(apply_fn):
        return (
            jax.jit(lambda v: apply_fn(v, images, train=True, mutable=["batch_stats"]))
            .lower(state.variables())
            .as_text()
        )

    twin = build_model(experiment.config.trained_model.full_precision_twin(), experiment.dataset.num_classes)
    assert graph(fp_apply) == graph(twin.apply) != graph(experiment.model.apply)


def _primitives(jaxpr) -> set[str]:
    out = set()
    for equation in jaxpr.eqns:
        out.add(equation.primitive.name)
        for value in equation.params.values():
            for inner in value if isinstance(value, (list, tuple)) else [value]:
                if hasattr(inner, "jaxpr"):
                    out |= _primitives(getattr(inner.jaxpr, "jaxpr", inner.jaxpr))
    return out


def test_each_epoch_steps_only_its_phases_optimizer_with_the_same_updates(ppt):
    """Under vmap a lax.cond on the (batched) step count runs both optimizers every step; the
    loop hands each epoch the phase's own branch instead, which must compute the same updates."""
    experiment, state = ppt["experiment"], ppt["fp_state"]
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.01), state.params)
    both = experiment.recipe.tx.update  # the one-graph form (lax.cond on the count)
    assert "cond" in _primitives(jax.make_jaxpr(both)(grads, state.opt_state, state.params).jaxpr)
    for epoch, opt_state in ((1, experiment.recipe.tx.init(state.params)), (2, state.opt_state)):
        fixed = experiment.for_epoch(state, epoch).tx.update
        assert "cond" not in _primitives(jax.make_jaxpr(fixed)(grads, opt_state, state.params).jaxpr)
        want, got = both(grads, opt_state, state.params), fixed(grads, opt_state, state.params)
        for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9)  # fused apart
    assert experiment.for_epoch(state, 1).tx is experiment.for_epoch(state, 0).tx  # one compile per phase


def test_fp_fraction_zero_is_the_inner_method(runs):
    for ppt_row, ste_row in zip(runs["ppt0"], runs["ste"]):
        for key in ("train_loss", "test_loss", "test_accuracy", "lr"):
            assert ppt_row[key] == pytest.approx(ste_row[key], rel=1e-6), key


def test_lr_schedule_restarts_with_the_inner_config(ppt):
    fp_lr, inner_lr = optax.cosine_decay_schedule(1e-3, 2 * STEPS), optax.cosine_decay_schedule(0.01, 2 * STEPS)
    logged = [row["lr"] for row in ppt["rows"]]  # the lr of each epoch's last step
    expected = [fp_lr(STEPS - 1), fp_lr(2 * STEPS - 1), inner_lr(STEPS - 1), inner_lr(2 * STEPS - 1)]
    assert logged == pytest.approx([float(v) for v in expected], rel=1e-5, abs=1e-9)


def test_without_restart_one_schedule_spans_the_budget(compose, digits):
    experiment = build_experiment(compose("method=ppt", "epochs=4", "method.fp_fraction=0.5",
                                          "method.restart_optimizer=false"), dataset=digits)
    state = experiment.recipe.prepare(experiment.state)
    lrs = []
    for epoch in range(3):
        state = run_epoch(experiment, state, epoch)
        lrs.append(experiment.recipe.metrics(state)["lr"])
    schedule = optax.cosine_decay_schedule(1e-3, 4 * STEPS)  # the inner STE's, over 4 epochs
    assert lrs == pytest.approx([float(schedule((e + 1) * STEPS - 1)) for e in range(3)], rel=1e-5)
    assert experiment.recipe.metrics(state)["binary"] == 1.0


def test_converted_network_is_the_bnn_forward_of_the_fp_weights(ppt, digits):
    experiment, state = ppt["experiment"], ppt["fp_state"]
    images = digits.normalize(digits.test_images[:200])

    def logits(state):
        return jax.jit(lambda variables: state.apply_fn(variables, images, train=False))(state.variables())

    fp_logits = logits(state)
    converted = experiment.for_epoch(experiment.recipe.on_epoch(state, 2), 2)
    converted_logits = logits(converted)

    bnn = build_model(experiment.config.model, digits.num_classes)  # the binarized network, masks all 1
    fresh_quant = jax.jit(lambda key: bnn.init(key, images[:1], train=False)["quant"])(jax.random.key(1))
    bnn_logits = jax.jit(lambda variables: bnn.apply(variables, images, train=False))(
        {"params": state.params, "batch_stats": state.batch_stats, "quant": fresh_quant})
    np.testing.assert_allclose(converted_logits, bnn_logits, rtol=1e-6, atol=1e-6)
    assert not np.allclose(fp_logits, bnn_logits, atol=1e-3)
    jax.tree.map(np.testing.assert_array_equal, converted.params, state.params)  # same parameters

    labels = digits.test_labels[:200]
    first_eval = experiment.eval_step(converted, (digits.test_images[:200], labels, np.ones(200, np.float32)))
    assert float(first_eval["correct"]) == float(jnp.sum(jnp.argmax(bnn_logits, -1) == labels))


def test_resume_at_the_switch_replays_the_conversion(compose, digits, tmp_path):
    """Stopped right after the FP epochs, a PPT+Bop run resumes into the same numbers: the
    conversion (masks, Bop's signing of the kernels) happens again in the epoch hook."""
    import shutil

    overrides = ("method=ppt", "method.inner=bop", "epochs=3", "method.fp_fraction=0.67", "model.hidden=[32,32]",
                 "checkpoint_every=1")  # a checkpoint after each epoch, to cut back to the switch
    full = train(compose(*overrides, f"out_dir={tmp_path / 'full'}"), dataset=digits)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    checkpoints = sorted((tmp_path / "cut" / "checkpoints").iterdir(), key=lambda p: int(p.name))
    assert [int(p.name) for p in checkpoints] == [2 * STEPS, 3 * STEPS]
    shutil.rmtree(checkpoints[-1])
    (tmp_path / "cut" / "summary.json").unlink()
    resumed = train(compose(*overrides, f"out_dir={tmp_path / 'cut'}", "resume=true"), dataset=digits)
    assert [row["binary"] for row in resumed.metrics] == [0.0, 0.0, 1.0]
    assert resumed.summary["test_accuracy_curve"] == full.summary["test_accuracy_curve"]
    assert resumed.metrics[-1]["train_loss"] == full.metrics[-1]["train_loss"]


def test_bad_inner_method_is_one_line(run_cli):
    code, output = run_cli("train", "method=ppt", "method.inner=fp", "epochs=1")
    assert code == 2 and output.strip().count("\n") == 0 and "method.inner" in output
    code, output = run_cli("train", "method=ppt", "method.inner_config={momentum:1}", "epochs=1")
    assert code == 2 and "method.inner_config.momentum" in output


# ---- time to accuracy --------------------------------------------------------------------------

def test_epochs_and_seconds_to_target_on_a_hand_made_curve():
    curve = [0.50, 0.70, 0.80, 0.79, 0.81]
    seconds = [2.0, 1.0, 1.5, 1.0, 1.0]
    assert epochs_to_target(curve, 0.80) == 3
    assert epochs_to_target(curve, 0.805) == 5
    assert epochs_to_target(curve, 0.40) == 1
    assert epochs_to_target(curve, 0.90) is None
    assert seconds_to_target(curve, seconds, 0.80) == 4.5
    assert seconds_to_target(curve, seconds, 0.90) is None


def fake_run(folder, accuracies, seconds, seed=0, compile_s=None, binary=None):
    folder.mkdir()
    compile_s = compile_s or [0.0] * len(seconds)
    rows = [{"epoch": e, "test_accuracy": a, "epoch_time_s": s, "compile_time_s": c}
            for e, (a, s, c) in enumerate(zip(accuracies, seconds, compile_s))]
    for row, fraction in zip(rows, binary or []):
        row["binary"] = fraction
    write_jsonl(folder / "metrics.jsonl", rows)
    write_json(folder / "summary.json", {"seed": seed, "test_accuracy_curve": accuracies})
    return folder


def test_speedup_on_hand_made_runs(tmp_path):
    scratch = fake_run(tmp_path / "scratch", [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.9, 0.91], [1.0] * 8)
    ppt = fake_run(tmp_path / "ppt", [0.6, 0.8, 0.9, 0.906, 0.92, 0.9, 0.92, 0.92], [0.5, 0.5, 1.0, 1.0, 1, 1, 1, 1])
    result = speedup(scratch, ppt)  # plateau 0.91, target 0.905: scratch needs 8 epochs, PPT 4
    assert result["target"] == pytest.approx(0.905)
    assert (result["scratch_epochs"], result["epochs"], result["epoch_speedup"]) == (8, 4, 2.0)
    assert (result["scratch_seconds"], result["seconds"]) == (8.0, 3.0)
    assert result["time_speedup"] == pytest.approx(8 / 3)
    assert speedup(scratch, ppt, margin=0.0)["epochs"] == 5


def test_speedup_stats_over_seeds(tmp_path):
    pairs = [
        (
            fake_run(tmp_path / "s0", [0.5, 0.8, 0.9, 0.9], [1] * 4),
            fake_run(tmp_path / "p0", [0.9, 0.9, 0.9, 0.9], [1] * 4),
        ),
        (
            fake_run(tmp_path / "s1", [0.5, 0.8, 0.9, 0.9], [1] * 4),
            fake_run(tmp_path / "p1", [0.8, 0.9, 0.9, 0.9], [2] * 4),
        ),
        (
            fake_run(tmp_path / "s2", [0.5, 0.8, 0.9, 0.9], [1] * 4),
            fake_run(tmp_path / "p2", [0.5, 0.6, 0.7, 0.8], [1] * 4),
        ),
    ]
    stats = speedup_stats(pairs)
    assert (stats["pairs"], stats["unreached"]) == (3, 1)
    assert stats["epoch_speedup"]["values"] == [3.0, 1.5]
    assert stats["epoch_speedup"]["mean"] == pytest.approx(2.25)
    assert stats["epoch_speedup"]["std"] == pytest.approx(math.sqrt(2 * 0.75 ** 2))
    assert stats["time_speedup"]["values"] == pytest.approx([3.0, 0.75])
    assert (stats["epoch_speedup"]["min"], stats["epoch_speedup"]["max"]) == (1.5, 3.0)


def test_speedup_of_real_runs(runs):
    """PPT with fp_fraction 0 is STE: the same epochs to any target."""
    result = speedup(runs["dirs"]["ste"], runs["dirs"]["ppt0"])
    assert result["epoch_speedup"] == 1.0 and result["epochs"] == result["scratch_epochs"]
    row = runs["ppt0"][0]
    assert result["seconds"] == pytest.approx(row["epoch_time_s"] - row["compile_time_s"])


def test_runs_record_compilation_apart_and_their_own_time_to_plateau(runs):
    from bnnx.io import read_json

    rows = runs["fp"]
    assert rows[0]["compile_time_s"] > 0  # the first epoch traces and compiles the steps
    assert all(0 <= r["compile_time_s"] <= r["epoch_time_s"] for r in rows)
    assert rows[1]["compile_time_s"] < 0.1 * rows[0]["compile_time_s"]  # nothing new to compile
    summary = read_json(runs["dirs"]["fp"] / "summary.json")
    assert summary["compile_time_s"] == pytest.approx(sum(r["compile_time_s"] for r in rows))
    own = summary["time_to_plateau"]
    best = max(r["test_accuracy"] for r in rows)
    first = next(i for i, r in enumerate(rows) if r["test_accuracy"] >= best - 0.005)
    assert (own["plateau"], own["epochs"]) == (best, first + 1)
    assert own["seconds"] == pytest.approx(sum(r["epoch_time_s"] - r["compile_time_s"] for r in rows[:first + 1]))


def test_full_precision_epochs_count_in_the_time_but_cannot_reach_the_target(tmp_path):
    scratch = fake_run(tmp_path / "scratch", [0.5, 0.7, 0.8, 0.9, 0.9, 0.9], [1.0] * 6)
    # PPT: two FP epochs already above the BNN's target, then the converted network
    ppt = fake_run(tmp_path / "ppt", [0.88, 0.92, 0.80, 0.897, 0.91, 0.9], [1.0] * 6, binary=[0, 0, 1, 1, 1, 1])
    result = speedup(scratch, ppt)  # target 0.895: scratch at epoch 4, PPT's BNN at epoch 4 (not 2)
    assert (result["scratch_epochs"], result["epochs"], result["epoch_speedup"]) == (4, 4, 1.0)
    from bnnx.sweeps.timing import load_curve
    from bnnx.train.plateau import time_to_plateau

    own = time_to_plateau(load_curve(ppt))  # its own plateau is the BNN's best, 0.91, not the FP 0.92
    assert (own["plateau"], own["epochs"], own["seconds"]) == (0.91, 5, 5.0)


def test_seconds_to_target_leave_compilation_out(tmp_path):
    scratch = fake_run(tmp_path / "scratch", [0.5, 0.9], [5.0, 1.0], compile_s=[4.0, 0.0])
    ppt = fake_run(tmp_path / "ppt", [0.9, 0.9], [9.0, 1.0], compile_s=[8.5, 0.0])
    result = speedup(scratch, ppt)
    assert (result["scratch_seconds"], result["seconds"]) == (2.0, 0.5)
    assert result["time_speedup"] == 4.0


def test_parameter_counts_follow_the_precision_masks(ppt):
    """summary.json's `parameters`: binary where the mask is on, real where it is off."""
    from bnnx.layers import unflat
    from bnnx.summary import run_precision

    experiment, fp_state = ppt["experiment"], ppt["fp_state"]
    count = lambda state: run_precision(experiment.layers, experiment.config.trained_model,  # noqa: E731
                                        state.params, state.quant)
    bound = [r for r in experiment.layers if r.binary]
    fp = count(fp_state)
    assert fp["binary_params"] == 0 and fp["real_params"] == fp["params"]
    converted = experiment.recipe.on_epoch(fp_state, 2)
    assert count(converted)["binary_params"] == sum(math.prod(r.kernel_shape) for r in bound) > 0
    quant = dict(flat(converted.quant))  # per-weight masks (RPR): only the weights whose mask is on
    first = bound[0]
    quant[(*first.path, "kernel_mask")] = jnp.zeros(first.kernel_shape).at[0, :3].set(1.0)
    partial = count(converted.replace(quant=unflat(quant)))
    assert partial["binary_params"] == 3 + sum(math.prod(r.kernel_shape) for r in bound[1:])
    assert partial["params"] == fp["params"] == partial["binary_params"] + partial["real_params"]


def test_resume_in_the_middle_of_an_fp_epoch_replays_the_fp_graph(compose, digits, tmp_path):
    """Interrupted halfway through an FP epoch, a resumed run trains the rest of it with the FP
    twin's graph (the loop picks the epoch's forward also when it resumes mid-epoch): same numbers."""
    import signal

    from bnnx.layers import FULL_PRECISION
    from bnnx.train.loop import Trainer, prepare_run_dir

    # the `ppt` fixture's configuration: its compiled steps (both phases) are reused
    args = ("method=ppt", "epochs=4", "method.fp_fraction=0.5", "+method.inner_config.lr=0.01")
    reference = train(compose(*args, f"out_dir={tmp_path / 'ref'}"), dataset=digits)

    def run(config, stop_at=None):
        experiment = build_experiment(config, dataset=digits)
        step, forwards = experiment.train_step, []

        def recording_step(state, batch, loss):
            forwards.append(state.apply_fn.__self__.policy == FULL_PRECISION)
            if len(forwards) == stop_at:
                signal.raise_signal(signal.SIGINT)
            return step(state, batch, loss)

        experiment.train_step = recording_step
        return Trainer(experiment, prepare_run_dir(config), quiet=True).run(), forwards

    first, forwards = run(compose(*args, f"out_dir={tmp_path / 'run'}"), stop_at=STEPS + STEPS // 2)
    assert first.status == "interrupted" and forwards == [True] * (STEPS + STEPS // 2)
    resumed, forwards = run(compose(*args, f"out_dir={tmp_path / 'run'}", "resume=true"))
    assert resumed.status == "completed"
    rest = STEPS - STEPS // 2  # of epoch 1, then two binarized epochs
    assert forwards == [True] * rest + [False] * (2 * STEPS)
    for key in ("train_loss", "test_loss", "test_accuracy"):
        assert [row[key] for row in resumed.metrics] == [row[key] for row in reference.metrics], key
