"""Benchmark cases for seeds in one program (`bnnx sweep --vmap-seeds`), as ratios with targets.

- `vmap-seeds-step-*`: K = 5 seeds' train steps as one vmapped step against 5 sequential steps
  of the same compiled single-seed step (target ≥ 1.0×: the vectorised step is no slower);
- `vmap-seeds-cell-digits`: a 5-seed digits cell end to end, `bnnx sweep --seeds 5` against the
  same with `--vmap-seeds`, each in a fresh process (target ≥ 2×: compilation paid once), with
  the bound that the compile and step figures put on that ratio; `-vs-process-per-run`: the
  vmapped sweep against one `bnnx train` process per run (target ≥ 2×);
- `vmap-seeds-cell-digits-5-vs-1-seed`: the vmapped 5-seed cell against a 1-seed run of the same
  cell (target ≤ 1.5×: a seed study costs little more than one run).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from bnnx.bench.common import Result, seconds_per_call, synthetic_dataset
from bnnx.config.compose import compose_config
from bnnx.io import read_json

SEEDS = 5
STEP_CASES = {  # name -> (overrides, input shape, batch size)
    "vmap-seeds-step-mlp-digits": (("model=mlp", "method=ste"), (8, 8, 1), 64),
    "vmap-seeds-step-mlp512-fmnist": (("model=mlp", "model.hidden=[512,512]", "method=ste"), (28, 28, 1), 64),
}
CELL_SWEEP = """name: vmap_bench
title: a 5-seed digits cell
source: bnnx bench
metrics: [{name: top-1 %, key: test_accuracy, scale: 100, digits: 1}]
base: [method=ste, model=mlp, dataset=digits]
axes: [{name: Method, values: [{key: ste, name: STE, overrides: []}]}]
rows: [Method]
columns: []
presets:
  bench: {description: digits MLP, seeds: 5, overrides: [epochs=5]}
"""


def step_case(name: str, steps: int = 20) -> Result:
    from bnnx.train.experiment import build_experiment
    from bnnx.train.seeds import SeedGroup

    overrides, shape, batch_size = STEP_CASES[name]
    dataset = synthetic_dataset(shape, batch_size)
    experiments = [build_experiment(compose_config([*overrides, f"batch_size={batch_size}", "epochs=1", f"seed={s}"]),
                                    dataset=dataset) for s in range(SEEDS)]
    states = [e.recipe.prepare(e.state) for e in experiments]
    batch = next(dataset.train_batches(0, batch_size, 0))
    single, loss = experiments[0].train_step, experiments[0].loss

    def sequential(states):
        out = [single(s, batch, loss) for s in states]
        return [s for s, _ in out], out[-1][1]

    group = SeedGroup(experiments)
    stacked = group.stack(states)
    batches = tuple(jax.numpy.stack([part] * SEEDS) for part in batch)

    def vectorised(state):
        return group.train_step(state, batches)

    states, sums = sequential(states)  # compile both before timing
    stacked, _ = vectorised(stacked)
    sequential_s = seconds_per_call(lambda: sequential(states), steps,
                                    lambda out: states.__setitem__(slice(None), out[0]))
    holder = [stacked]
    vmapped_s = seconds_per_call(lambda: vectorised(holder[0]), steps, lambda out: holder.__setitem__(0, out[0]))
    return Result(name, round(sequential_s / vmapped_s, 3), "x", 1.0, figures={
        "seeds": SEEDS, "batch_size": batch_size, "sequential_ms": round(1000 * sequential_s, 3),
        "vmapped_ms": round(1000 * vmapped_s, 3)})


CELL_ROUNDS = 3  # interleaved rounds; each variant's best wall time counts (the least disturbed)
STUDY_TARGET = 1.5  # 5 seeds vmapped / 1 seed: a seed study costs little more than one run
CELL_VARIANTS = {"separate": (), "vmapped": ("--vmap-seeds",), "one_seed": ("--seeds", "1")}


def _cli(*args: str) -> list[str]:
    """A fresh `bnnx` process with JAX's persistent compilation cache off, so every program
    compiles (the CLI turns the cache on by default, whatever JAX's own environment says)."""
    return [sys.executable, "-m", "bnnx.cli.__main__", "--no-jax-cache", *args]


def _timed_process(command: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - began


def _sweep_round(folder: Path, sweep_file: Path, variant: str) -> tuple[float, list[dict]]:
    """Wall seconds of one fresh sweep of the cell and its runs' summaries."""
    out = folder / variant
    wall = _timed_process(_cli("sweep", str(sweep_file), "--preset", "bench", "--out", str(out), "--quiet",
                               *CELL_VARIANTS[variant]))
    summaries = [read_json(path) for path in sorted(out.glob("*/seed*/summary.json"))]
    shutil.rmtree(out)
    return wall, summaries


def cell_case(name: str = "vmap-seeds-cell-digits") -> list[Result]:
    """Wall time of a fresh `bnnx sweep` process for a 5-seed digits cell, without and with
    --vmap-seeds, and of its 1-seed run (compilation cache off in all, so each compiles); beside
    it, the same 5 runs as one `bnnx train` process each (a launcher that starts a process per run)."""
    best: dict[str, tuple[float, list[dict]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        sweep_file = folder / "vmap_bench.yaml"
        sweep_file.write_text(CELL_SWEEP)
        for _ in range(CELL_ROUNDS):
            for variant in CELL_VARIANTS:
                wall, summaries = _sweep_round(folder, sweep_file, variant)
                if variant not in best or wall < best[variant][0]:
                    best[variant] = wall, summaries
        processes = sum(_timed_process(_cli("train", "method=ste", "model=mlp", "dataset=digits", "epochs=5",
                                            f"seed={seed}", f"out_dir={folder / 'own' / str(seed)}"))
                        for seed in range(SEEDS))
    (separate, separate_runs), (vmapped, vmapped_runs) = best["separate"], best["vmapped"]
    steps = step_case("vmap-seeds-step-mlp-digits")
    bound = vmap_bound(separate_runs, vmapped_runs, steps, _cell_steps())
    study = vmapped / best["one_seed"][0]
    return [
        Result(name, round(separate / vmapped, 3), "x", 2.0, figures={
            "seeds": SEEDS, "rounds": CELL_ROUNDS, "separate_s": round(separate, 2), "vmapped_s": round(vmapped, 2),
            **bound, "outside_programs_s": round(vmapped - bound["vmapped_program_s"], 2)}),
        Result(f"{name}-vs-process-per-run", round(processes / vmapped, 3), "x", 2.0, figures={
            "seeds": SEEDS, "process_per_run_s": round(processes, 2), "vmapped_s": round(vmapped, 2)}),
        Result(f"{name}-5-vs-1-seed", round(study, 3), "x", STUDY_TARGET, "lower", {
            "vmapped_5_seeds_s": round(vmapped, 2), "one_seed_s": round(best["one_seed"][0], 2),
            "rounds": CELL_ROUNDS}),
    ]


def _cell_steps() -> int:
    """Train steps of one run of the cell (its preset's epochs)."""
    from bnnx.data import load_dataset

    config = compose_config(["method=ste", "model=mlp", "dataset=digits", "epochs=5"])
    return config.epochs * load_dataset(config.dataset).steps_per_epoch(config.batch_size)


def vmap_bound(separate_runs: list[dict], vmapped_runs: list[dict], steps: Result, step_count: int) -> dict:
    """The ratio the cell would reach if everything outside the trained programs cost nothing
    (imports, composing, data, initialisation, checkpoints, files: paid once by both sweeps): the
    separate runs' compiles and steps, S, over the vmapped group's, V, from the runs' own compile
    seconds and the step case's milliseconds. With F the rest of the vmapped sweep's wall time
    (`outside_programs_s`), the ratio is about (F + S) / (F + V), so 2× needs F ≤ S − 2V."""
    compile_single = sum(r["compile_time_s"] for r in separate_runs) / len(separate_runs)
    compile_vmapped = max(r["compile_time_s"] for r in vmapped_runs)
    single = SEEDS * (compile_single + step_count * steps.figures["sequential_ms"] / SEEDS / 1000)
    vmapped = compile_vmapped + step_count * steps.figures["vmapped_ms"] / 1000
    return {"bound_ratio": round(single / vmapped, 3), "compile_single_s": round(compile_single, 2),
            "compile_vmapped_s": round(compile_vmapped, 2), "step_ratio": steps.measured, "steps": step_count,
            "separate_programs_s": round(single, 2), "vmapped_program_s": round(vmapped, 2),
            "outside_programs_max_for_2x_s": round(single - 2 * vmapped, 2)}


def seed_cases(only: str | None = None) -> list[Result]:
    """The ratio cases of seeds in one program, of the sweep engine and of data parallelism."""
    from bnnx.bench.devices import devices_case
    from bnnx.bench.sweep import overhead_case

    cases = {**{name: lambda name=name: step_case(name) for name in STEP_CASES},
             "vmap-seeds-cell-digits": lambda: cell_case(),
             "sweep-run-overhead-jobs1": lambda: overhead_case(1),
             "sweep-run-overhead-jobs2": lambda: overhead_case(2),
             "data-parallel-2-vs-1-device": devices_case}
    results = []
    for name, case in cases.items():
        if only is None or only in name:
            found = case()
            results += found if isinstance(found, list) else [found]
    return results
