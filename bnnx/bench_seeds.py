"""Benchmark cases for seeds in one program (`bnnx sweep --vmap-seeds`), as ratios with targets.

- `vmap-seeds-step-*`: K = 5 seeds' train steps as one vmapped step against 5 sequential steps
  of the same compiled single-seed step (target ≥ 1.0×: the vectorised step is no slower);
- `vmap-seeds-cell-digits`: a 5-seed digits cell end to end, `bnnx sweep --seeds 5` against the
  same with `--vmap-seeds`, each in a fresh process (target ≥ 2×: compilation paid once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

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


def _ratio_row(name: str, ratio: float, target: float, **figures) -> dict:
    return {"case": name, "ratio": round(ratio, 3), "target_ratio": target, "meets_target": ratio >= target,
            **figures}


def step_case(name: str, compose, steps: int = 20) -> dict:
    from bnnx.bench import synthetic_dataset
    from bnnx.train.experiment import build_experiment
    from bnnx.train.seeds import SeedGroup

    overrides, shape, batch_size = STEP_CASES[name]
    dataset = synthetic_dataset(shape, batch_size)
    experiments = [build_experiment(compose([*overrides, f"batch_size={batch_size}", "epochs=1", f"seed={s}"]),
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
    sequential_s = _timed(lambda: sequential(states), steps, lambda out: states.__setitem__(slice(None), out[0]))
    holder = [stacked]
    vmapped_s = _timed(lambda: vectorised(holder[0]), steps, lambda out: holder.__setitem__(0, out[0]))
    return _ratio_row(name, sequential_s / vmapped_s, 1.0, seeds=SEEDS, batch_size=batch_size,
                      sequential_ms=round(1000 * sequential_s, 3), vmapped_ms=round(1000 * vmapped_s, 3))


def _timed(step, repeats: int, keep) -> float:
    """Seconds per call of `step` (its output kept for the next call, as a training loop does)."""
    began = time.perf_counter()
    for _ in range(repeats):
        out = step()
        keep(out)
    jax.block_until_ready(out)
    return (time.perf_counter() - began) / repeats


def cell_case(name: str = "vmap-seeds-cell-digits") -> dict:
    """Wall time of a fresh `bnnx sweep` process for a 5-seed digits cell, without and with
    --vmap-seeds (JAX's persistent compilation cache off in both, so each compiles); beside it,
    the same 5 runs as one `bnnx train` process each (a launcher that starts a process per run)."""
    walls = {}
    with tempfile.TemporaryDirectory() as folder:
        sweep_file = Path(folder) / "vmap_bench.yaml"
        sweep_file.write_text(CELL_SWEEP)
        env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
        for flag in ("", "--vmap-seeds"):
            out = Path(folder) / (flag.strip("-") or "separate")
            command = [sys.executable, "-m", "bnnx.cli.__main__", "sweep", str(sweep_file), "--preset", "bench",
                       "--out", str(out), "--quiet", *([flag] if flag else [])]
            began = time.perf_counter()
            subprocess.run(command, check=True, env=env, capture_output=True)
            walls[flag or "separate"] = time.perf_counter() - began
        began = time.perf_counter()
        for seed in range(SEEDS):
            subprocess.run([sys.executable, "-m", "bnnx.cli.__main__", "train", "method=ste", "model=mlp",
                            "dataset=digits", "epochs=5", f"seed={seed}", f"out_dir={Path(folder) / 'own' / str(seed)}"],
                           check=True, env=env, capture_output=True)
        walls["processes"] = time.perf_counter() - began
    return _ratio_row(name, walls["separate"] / walls["--vmap-seeds"], 2.0, seeds=SEEDS,
                      separate_s=round(walls["separate"], 2), vmapped_s=round(walls["--vmap-seeds"], 2),
                      process_per_run_s=round(walls["processes"], 2),
                      ratio_vs_process_per_run=round(walls["processes"] / walls["--vmap-seeds"], 3),
                      meets_target_vs_process_per_run=walls["processes"] / walls["--vmap-seeds"] >= 2.0)


def seed_cases(compose, only: str | None = None) -> list[dict]:
    """The ratio cases of seeds in one program, of the sweep engine and of data parallelism."""
    from bnnx.bench_devices import devices_case
    from bnnx.bench_sweep import overhead_case

    cases = {**{name: lambda name=name: step_case(name, compose) for name in STEP_CASES},
             "vmap-seeds-cell-digits": cell_case,
             "sweep-run-overhead-jobs1": lambda: overhead_case(compose, 1),
             "sweep-run-overhead-jobs2": lambda: overhead_case(compose, 2),
             "data-parallel-2-vs-1-device": devices_case}
    return [case() for name, case in cases.items() if only is None or only in name]
