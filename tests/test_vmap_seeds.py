"""Seeds in one program: K seeds trained as one jit(vmap(train_step)) equal the same seeds trained
one by one, each into its own ordinary run folder.

The vmapped step sums in another order than the single one (batched matmuls), ~1e-7 relative.
Where an Adam step normalises a gradient that is mathematically zero, that rounding noise
becomes a full ±lr step: a digits pixel constant over a batch (the zero border, normalised to a
nonzero constant) feeds a batch-normalised layer whose backpropagated signal sums to zero over
the batch, so its first-layer weights get noise-sign updates, harmless until a batch where the
pixel varies. With binary activations after that layer (ste, bnew, rpr) the first epoch's mean
loss then drifts by up to ~4e-4 relative, and fp's by 1.0e-5 (too close to the bound to hold
it there on every CPU); the first step's loss still agrees to ~1e-7. bmd, bop, ppt, ilb and
augmented ste agree within 1e-5 over the whole first epoch (measured: at most 3e-6)."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from bnnx.data.base import random_crop_flip
from bnnx.io import read_json, read_jsonl
from bnnx.train.loop import train, train_seeds
from bnnx.train.seeds import NotVectorisable

SEEDS = (0, 1, 2)
TINY = ("model=mlp", "model.hidden=[32,32]", "batch_size=64")  # the middle layer is binary

# every method, with the epochs its schedule needs on a 2-layer MLP; a random ILB order and
# distillation (a stacked teacher per seed) included
METHODS = {
    "fp": ("method=fp", "epochs=2"),
    "ste": ("method=ste", "epochs=2"),
    "bmd": ("method=bmd", "epochs=2"),
    "bop": ("method=bop", "epochs=2"),
    "bnew": ("method=bnew", "epochs=2"),
    "rpr": ("method=rpr", "epochs=2"),
    "rpr-ternary": ("method=rpr", "method.levels=ternary", "epochs=2"),
    "ppt": ("method=ppt", "epochs=2"),
    "ilb-random": ("method=ilb", "method.order=random", "epochs=4"),
    "ste-augmented": ("method=ste", "epochs=2", "dataset.augment=true"),  # random crops and flips, rng per seed
}
NOISE_AMPLIFIED = {"fp", "ste", "bnew", "rpr", "rpr-ternary"}  # see the module docstring


def seed_configs(compose, folder: Path, overrides, seeds=SEEDS):
    return [compose(*TINY, *overrides, f"seed={seed}", f"out_dir={folder / f'seed{seed}'}") for seed in seeds]


def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_vmapped_seeds_equal_the_same_seeds_run_one_by_one(name, compose, digits, tmp_path):
    if name.endswith("augmented"):
        digits = dataclasses.replace(digits, augment=random_crop_flip(padding=1))
    configs = seed_configs(compose, tmp_path / "vmapped", METHODS[name])
    grouped = train_seeds(configs, dataset=digits)
    alone = [train(dataclasses.replace(c, out_dir=str(tmp_path / "alone" / f"seed{c.seed}")), dataset=digits)
             for c in configs]
    for together, single in zip(grouped, alone):
        assert together.summary["vmapped_seeds"] == list(SEEDS)
        assert together.status == single.status == "completed"
        first, reference = together.metrics[0], single.metrics[0]
        tolerance = 1e-3 if name in NOISE_AMPLIFIED else 1e-5
        assert relative(first["train_loss"], reference["train_loss"]) <= tolerance, (first, reference)
        # the ordinary run folder, in the format a separate run writes
        files = {p.name for p in together.run_dir.iterdir()}
        assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoints"} <= files
        assert read_jsonl(together.run_dir / "metrics.jsonl") == together.metrics
        assert set(together.metrics[-1]) == set(single.metrics[-1])
        assert read_json(together.run_dir / "summary.json")["seed"] == single.summary["seed"]
    # the seeds differ from each other: each run had its own initialisation and data order
    assert len({round(r.metrics[0]["train_loss"], 6) for r in grouped}) == len(SEEDS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_first_vmapped_step_equals_each_seeds_own_step(name, compose, digits):
    from bnnx.train.experiment import build_experiment
    from bnnx.train.seeds import SeedGroup

    if name.endswith("augmented"):
        digits = dataclasses.replace(digits, augment=random_crop_flip(padding=1))
    configs = [compose(*TINY, *METHODS[name], f"seed={seed}") for seed in SEEDS]
    experiments = [build_experiment(c, dataset=digits) for c in configs]
    states = [e.recipe.on_epoch(e.recipe.prepare(e.state), 0) for e in experiments]
    batches = [next(digits.train_batches(0, c.batch_size, c.seed)) for c in configs]
    group = SeedGroup(experiments)
    _, sums = group.train_step(group.stack(states), tuple(np.stack(parts) for parts in zip(*batches)))
    for i, (e, state, batch) in enumerate(zip(experiments, states, batches)):
        _, own = e.train_step(state, batch, e.loss)
        assert relative(float(sums["loss"][i]), float(own["loss"])) <= 1e-6
        assert float(sums["correct"][i]) == float(own["correct"])


# the stacking is method-agnostic pytree code: these three cover the state shapes that differ
# (Bop's flip-threshold optimizer state, ILB's masks that epoch hooks change, PPT's switch of graph)
@pytest.mark.parametrize("name", ["bop", "ilb-random", "ppt"])
def test_stacking_on_the_host_trains_exactly_as_the_compiled_stacking(name, compose, digits, tmp_path, monkeypatch):
    """On the CPU NumPy stacks the seeds' states and slices them into host rows (no compile); every
    number equals the compiled programs': rows, metrics of the epoch hooks that change arrays, sign
    tracking, the summary's parameter counts and the checkpoints."""
    from bnnx.train import seeds
    from bnnx.train.checkpoint import Checkpoints

    def trained(folder):
        configs = seed_configs(compose, tmp_path / folder, (*METHODS[name], "analysis.signs=true"))
        return [([{k: v for k, v in row.items() if not k.endswith("time_s")} for row in r.metrics],
                 r.summary["parameters"], (r.run_dir / "signs.json").read_text(),
                 Checkpoints(r.run_dir).restore_tree()[0]) for r in train_seeds(configs, dataset=digits)]

    def not_compiled(*args):
        raise AssertionError("a compiled stacking program ran on the CPU")

    with monkeypatch.context() as patch:
        patch.setattr(seeds, "_stack_compiled", not_compiled)
        patch.setattr(seeds, "_unstack_compiled", not_compiled)
        on_host = trained("host")
    monkeypatch.setattr(seeds, "_copies_exactly_on_host", lambda leaves: False)
    compiled = trained("compiled")
    for (*records, tree), (*records_compiled, tree_compiled) in zip(on_host, compiled):
        assert records == records_compiled
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(tree_compiled)))


def test_a_vmapped_run_resumes_as_an_ordinary_run(compose, digits, tmp_path):
    configs = seed_configs(compose, tmp_path, ("method=ste", "epochs=2", "checkpoint_every=1"), seeds=(0, 1))
    grouped = train_seeds(configs, dataset=digits)
    # drop the last epoch's checkpoint and row, as a kill after epoch 1 would leave them
    run_dir = grouped[1].run_dir
    latest = max(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    import shutil

    shutil.rmtree(run_dir / "checkpoints" / str(latest))
    (run_dir / "summary.json").unlink()
    resumed = train(dataclasses.replace(configs[1], resume=True), dataset=digits)
    assert resumed.status == "completed"
    assert [r["epoch"] for r in resumed.metrics] == [0, 1]
    assert resumed.metrics[0] == grouped[1].metrics[0]
    assert relative(resumed.metrics[1]["train_loss"], grouped[1].metrics[1]["train_loss"]) <= 1e-5


def test_runs_differing_in_more_than_the_seed_are_refused_before_writing(compose, digits, tmp_path):
    configs = [compose(*TINY, "method=ste", "epochs=1", f"method.lr={lr}", f"seed={seed}",
                       f"out_dir={tmp_path / f'seed{seed}'}") for seed, lr in ((0, 0.001), (1, 0.01))]
    with pytest.raises(NotVectorisable, match="differ in more than their seed"):
        train_seeds(configs, dataset=digits)
    assert not any(tmp_path.iterdir())


def test_a_seed_dependent_constant_in_the_step_is_detected(compose, digits, tmp_path, monkeypatch):
    """A method whose compiled step bakes in its seed (here a step-size factor) cannot share one
    program: the check compares the traced steps, not a list of methods."""
    import optax

    from bnnx.methods.ste import STE

    build = STE.build

    def seeded_build(self, ctx):
        recipe = build(self, ctx)
        return dataclasses.replace(recipe, tx=optax.chain(recipe.tx, optax.scale(1.0 + 0.001 * ctx.seed)))

    monkeypatch.setattr(STE, "build", seeded_build)
    configs = seed_configs(compose, tmp_path, ("method=ste", "epochs=1"), seeds=(0, 1))
    with pytest.raises(NotVectorisable, match="differs between seeds"):
        train_seeds(configs, dataset=digits)
    assert not any(tmp_path.iterdir())


def report_layout(out: Path) -> tuple:
    table = list(csv.reader(open(out / "report.csv")))
    return table[0], [row[0] for row in table[1:]], sorted(str(p.relative_to(out)) for p in out.rglob("*.json")
                                                          if ".launch" not in p.parts)


ONLY_BWN_COSINE = ("--only", "none/cosine", "--only", "mean_abs/cosine", "--only", "learned/cosine")  # 3 of its cells


def test_sweep_with_vmap_seeds_reports_the_same_layout(run_cli, tmp_path):
    from bnnx.resources import sweeps_dir

    outs = {}
    for flag in ((), ("--vmap-seeds",)):
        out = tmp_path / ("vmapped" if flag else "separate")
        code, output = run_cli("sweep", str(sweeps_dir() / "stable_signs.yaml"), "--preset", "smoke", "--seeds", "2",
                               "--out", str(out), "-q", *flag, *ONLY_BWN_COSINE)
        assert code == 0, output
        assert "6 runs (6 completed)" in output, output
        code, output = run_cli("report", str(out))
        assert code == 0, output
        outs[bool(flag)] = out
    assert report_layout(outs[True]) == report_layout(outs[False])
    for summary in outs[True].rglob("summary.json"):
        assert read_json(summary)["vmapped_seeds"] == [0, 1]
    assert "--vmap-seeds" in read_json(outs[True] / "sweep.json")["command"]
    # rerunning skips every finished run, vmapped or not
    code, output = run_cli("sweep", str(sweeps_dir() / "stable_signs.yaml"), "--preset", "smoke", "--seeds", "2",
                           "--out", str(outs[True]), "-q", "--vmap-seeds", *ONLY_BWN_COSINE)
    assert code == 0 and "6 already done, 0 run now" in output, output


def test_a_cell_that_cannot_be_vmapped_says_so_and_runs_its_seeds_separately(compose, monkeypatch, tmp_path):
    from bnnx.config import config_to_dict
    from bnnx.sweeps import launchers
    from bnnx.train import loop

    def refuse(configs, **kwargs):
        raise NotVectorisable("its train step differs between seeds (a seed-dependent constant in the step)")

    calls = []
    monkeypatch.setattr(loop, "train_seeds", refuse)
    monkeypatch.setattr(launchers, "execute", lambda job: calls.append(job) or {"status": "completed", "error": None})
    jobs = [
        {"config": config_to_dict(c), "resume": False} for c in seed_configs(compose, tmp_path, ("method=ste",), (0, 1))
    ]
    outcome = launchers.execute_group(jobs)
    assert (
        outcome["note"]
        == "seeds run separately: its train step differs between seeds (a seed-dependent constant in the step)"
    )
    assert calls == jobs and [o["status"] for o in outcome["outcomes"]] == ["completed", "completed"]
