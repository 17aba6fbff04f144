"""Iterative layer binarization (bnnx/methods/ilb.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bnnx.io import read_json, read_jsonl, write_json
from bnnx.layers import flat, param_labels
from bnnx.methods.base import MethodContext
from bnnx.methods.ilb import holdout_split, project_box_from
from bnnx.train.experiment import build_experiment
from bnnx.train.loop import train
from bnnx.train.services import RunServices

LAYERS = ["QuantDense_0", "QuantDense_1", "QuantDense_2", "QuantDense_3"]  # hidden=[16,16,16] + output


@pytest.fixture(scope="module")
def base(digits):
    """One built ILB experiment (MLP 64-16-16-16-10): its layers, labels and initial state."""
    from bnnx.config.compose import compose_config

    return build_experiment(compose_config(["method=ilb", "model.hidden=[16,16,16]", "epochs=10"]), dataset=digits)


def ilb(base, *overrides, run_dir=None, seed=0, epochs=10):
    """The recipe of ILB configured by `overrides`, built for the base experiment's model."""
    from bnnx.config.compose import compose_config

    method = compose_config(["method=ilb", *overrides]).method
    return method.build(MethodContext(layers=base.layers, labels=param_labels(base.state.params, base.state.quant),
                                      steps_per_epoch=21, epochs=epochs, seed=seed, run_dir=run_dir))


def binary_layers(quant) -> list[str]:
    return sorted("/".join(p[:-1]) for p, m in flat(quant).items() if p[-1] == "kernel_mask" and float(m) > 0)


def binarization_sequence(recipe, state, epochs=10) -> list[list[str]]:
    """The binary layers of each epoch, as the epoch hook sets them."""
    state = recipe.prepare(state)
    sequence = []
    for epoch in range(epochs):
        state = recipe.on_epoch(state, epoch)
        sequence.append(binary_layers(state.quant))
    return sequence


def order_of(sequence) -> list[str]:
    """The layers in the order they turned binary (one per stage)."""
    order = []
    for layers in sequence:
        order += [name for name in layers if name not in order]
    return order


def stages(order, per_stage=2, epochs=10) -> list[list[str]]:
    """Stage k (k = ⌊epoch / per_stage⌋, at most n − 1) has the first k + 1 layers of `order` binary."""
    return [sorted(order[:min(epoch // per_stage, len(order) - 1) + 1]) for epoch in range(epochs)]


def test_every_layer_is_binary_bound_weights_only(base):
    assert [r.name for r in base.layers if r.binary] == LAYERS  # first and last included
    assert not any(r.binary_inputs for r in base.layers)  # real activations
    assert {p[-1] for p in flat(base.state.quant)} == {"kernel_mask", "beta"}


def test_forward_order_binarizes_input_to_output(base):
    sequence = binarization_sequence(ilb(base), base.state)
    assert sequence == stages(LAYERS, per_stage=2)  # 10 epochs, 4 layers: 10 // 4 = 2 per stage
    assert sequence[0] == ["QuantDense_0"]  # the paper starts from one quantized layer
    assert sequence[6:] == [LAYERS] * 4  # fully binary from stage 3 (epoch 6) on, with the remainder


def test_final_fraction_gives_the_fully_binary_stage_its_share(base):
    # 10 epochs, final 0.4: the last 4 epochs fully binary, the 3 stages before share 6 → 2 each
    sequence = binarization_sequence(ilb(base, "method.final_fraction=0.4"), base.state)
    assert sequence == stages(LAYERS, per_stage=2)
    # final 0.7: 7 epochs fully binary, 3 epochs for 3 stages → 1 each
    sequence = binarization_sequence(ilb(base, "method.final_fraction=0.7"), base.state)
    assert sequence == stages(LAYERS, per_stage=1) and sequence[3:] == [LAYERS] * 7


def test_lr_milestones_drop_the_lr_tenfold(base):
    method = ilb_method("method.lr=0.1", "method.lr_milestones=[0.25,0.5]")
    lr = method.lr_schedule(100)
    # MultiStepLR stepped before each epoch (100 epochs of one step): milestones 25 and 50 (1-based)
    # lower the lr of 0-based epochs 24 and 49
    assert [float(lr(t)) for t in (0, 23, 24, 48, 49, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def ilb_method(*overrides):
    from bnnx.config.compose import compose_config

    return compose_config(["method=ilb", *overrides]).method


def test_all_binary_is_the_fully_binary_baseline(base):
    assert binarization_sequence(ilb(base, "method.all_binary=true"), base.state) == [LAYERS] * 10


def test_one_shot_has_ilbs_fully_binary_phase(base):
    # ILB with final_fraction 0.4 is fully binary from epoch 6; one_shot: nothing binary before, all from 6
    sequence = binarization_sequence(ilb(base, "method.one_shot=true", "method.final_fraction=0.4"), base.state)
    assert sequence == [[]] * 6 + [LAYERS] * 4


def test_reverse_order(base):
    assert binarization_sequence(ilb(base, "method.order=reverse"), base.state) == stages(LAYERS[::-1])


def test_random_order_is_reproducible_per_seed(base):
    def random_order(seed):
        return order_of(binarization_sequence(ilb(base, "method.order=random", seed=seed), base.state))

    orders = {seed: random_order(seed) for seed in range(4)}
    assert all(sorted(order) == LAYERS for order in orders.values())
    assert len({tuple(order) for order in orders.values()}) > 1  # the seed matters
    assert random_order(2) == orders[2]


def test_sensitivity_order_follows_a_saved_ranking(base, tmp_path):
    ranking = ["QuantDense_2", "QuantDense_0", "QuantDense_3", "QuantDense_1"]
    write_json(tmp_path / "sensitivity.json", {"ranking": ranking})
    recipe = ilb(base, "method.order=sensitivity", run_dir=tmp_path)
    assert binarization_sequence(recipe, base.state) == stages(ranking)
    explicit = ilb(base, "method.order=sensitivity", f"method.ranking=[{','.join(ranking[::-1])}]")
    assert order_of(binarization_sequence(explicit, base.state)) == ranking[::-1]


def test_initial_binary_layers_and_epochs_per_layer(base):
    recipe = ilb(base, "method.initial_binary=[QuantDense_3]", "method.epochs_per_layer=3")
    sequence = binarization_sequence(recipe, base.state)
    assert sequence[:3] == [["QuantDense_0", "QuantDense_3"]] * 3  # the initial layer and the order's first
    assert sequence[3] == ["QuantDense_0", "QuantDense_1", "QuantDense_3"] and sequence[6:] == [LAYERS] * 4


def test_composes_with_an_optimizer_level_method(base):
    recipe = ilb(base, "method.inner=bop")
    assert binarization_sequence(recipe, base.state) == stages(LAYERS)
    prepared = recipe.prepare(base.state)  # Bop's fresh start: binary-bound kernels become ±1
    kernels = [w for p, w in flat(prepared.params).items() if p[-1] == "kernel"]
    assert all(set(np.unique(np.asarray(w))) == {-1.0, 1.0} for w in kernels)
    assert "flip_ratio" in recipe.metrics(prepared)


def test_sensitivity_pretraining_ranks_one_layer_runs(compose, digits, tmp_path, monkeypatch):
    config = compose("method=ilb", "epochs=3", "method.order=sensitivity", "model.hidden=[32]")
    experiment = build_experiment(config, run_dir=tmp_path, dataset=digits, train_run=train)
    saved = read_json(tmp_path / "sensitivity.json")
    names = ["QuantDense_0", "QuantDense_1"]
    for name in names:  # each probe: one epoch with only that layer binary, ranked on held-out data
        probe = tmp_path / "sensitivity" / name
        summary, rows = read_json(probe / "summary.json"), read_jsonl(probe / "metrics.jsonl")
        assert summary["epochs_done"] == 1 and len(rows) == 1
        assert rows[0]["binary_layers"] == [name]
        assert saved["validation_accuracy"][name] == summary["test_accuracy"]
    accuracy = saved["validation_accuracy"]
    assert sorted(saved["ranking"]) == names
    assert [accuracy[n] for n in saved["ranking"]] == sorted(accuracy.values(), reverse=True)
    assert order_of(binarization_sequence(experiment.recipe, experiment.state, epochs=3)) == saved["ranking"]

    def no_more_runs(*args, **kwargs):
        raise AssertionError("sensitivity.json should be reused")

    monkeypatch.setattr(RunServices, "train_sub_run", no_more_runs)
    context = MethodContext(layers=experiment.layers, labels=None, steps_per_epoch=21, epochs=3, seed=0,
                            run_dir=tmp_path, services=RunServices(config, digits, experiment.model, {}))
    assert config.method.layer_order(context) == saved["ranking"]


def test_probes_rank_on_held_out_training_data(digits):
    split = holdout_split(digits, 0.1)
    assert (split.num_train, len(split.test_labels)) == (1212, 135)  # 1,347 training images
    train_rows = {row.tobytes() for row in split.train_images.reshape(1212, -1)}
    held_rows = [row.tobytes() for row in split.test_images.reshape(135, -1)]
    originals = {row.tobytes() for row in digits.train_images.reshape(1347, -1)}
    assert set(held_rows) <= originals and not set(held_rows) & train_rows
    np.testing.assert_array_equal(holdout_split(digits, 0.1).test_labels, split.test_labels)  # fixed split
    assert holdout_split(digits, 0.0) is digits


def test_layer_switches_never_recompile_and_the_run_ends_fully_binary(compose, digits):
    config = compose("method=ilb", "model.hidden=[16,16,16]", "epochs=5", "method.clip_latent=true")
    experiment = build_experiment(config, dataset=digits)
    state = experiment.recipe.prepare(experiment.state)
    for epoch in range(5):
        state = experiment.recipe.on_epoch(state, epoch)
        for batch in experiment.dataset.train_batches(epoch, 64, 0):
            state, _ = experiment.train_step(state, batch, experiment.loss)
        experiment.eval_step(state, next(experiment.dataset.test_batches(1000)))
    assert experiment.train_step._cache_size() == 1
    assert experiment.eval_step._cache_size() == 1
    metrics = experiment.recipe.metrics(state)
    assert metrics["binary_layers"] == LAYERS and metrics["num_binary_layers"] == 4
    kernels = [w for p, w in flat(state.params).items() if p[-1] == "kernel"]
    assert all(float(jnp.max(jnp.abs(w))) <= 1.0 for w in kernels)


def test_latent_clip_starts_when_the_layer_turns_binary():
    params = {
        "A": {"kernel": jnp.array([0.5, -0.9])},
        "B": {"kernel": jnp.array([0.5, -0.9]), "bias": jnp.array([0.9])},
    }
    updates = jax.tree.map(lambda w: jnp.full_like(w, 0.8), params)
    tx = project_box_from({"A": 0, "B": 2})
    state = tx.init(params)
    for step in range(3):
        new, state = tx.update(updates, state, params)
        np.testing.assert_allclose(new["A"]["kernel"], [0.5, 0.8])  # clip(w + u, -1, 1) − w
        np.testing.assert_allclose(new["B"]["bias"], [0.8])  # no start step: never clipped
        np.testing.assert_allclose(new["B"]["kernel"], [0.5, 0.8] if step >= 2 else [0.8, 0.8])


def test_ilb_trains_through_the_cli_and_reports_binary_layers(run_cli, tmp_path):
    code, output = run_cli("train", "method=ilb", "epochs=3", "method.order=reverse", "model.hidden=[32]",
                           f"out_dir={tmp_path / 'run'}", "-q")
    assert code == 0, output
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [row["binary_layers"] for row in rows] == [["QuantDense_1"], ["QuantDense_0", "QuantDense_1"],
                                                      ["QuantDense_0", "QuantDense_1"]]
    assert [row["num_binary_layers"] for row in rows] == [1, 2, 2]
    # fully binary at the end: both kernels (64·32 + 32·10) binary; BN and the output bias real
    counts = read_json(tmp_path / "run" / "summary.json")["parameters"]
    assert counts == {"params": 2452, "binary_params": 2368, "ternary_params": 0, "real_params": 84}


@pytest.mark.parametrize("overrides, words", [
    (["method.order=sideways"], "method.order"),
    (["method.epochs_per_layer=3"], "epochs_per_layer"),
    (["method.initial_binary=[nope]"], "nope"),
    (["method.final_fraction=1.0"], "method.final_fraction"),
    (["method.lr_milestones=[0.5,0.2]"], "method.lr_milestones"),
    (["method.optimizer=lbfgs"], "method.optimizer"),
])
def test_bad_ilb_config_is_one_line(run_cli, overrides, words):
    code, output = run_cli("train", "method=ilb", "epochs=4", *overrides)
    assert code == 2 and output.strip().count("\n") == 0 and words in output, output
