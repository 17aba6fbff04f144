"""Benchmark case for the sweep engine: the overhead a run pays beyond its epochs.

A sweep's runs execute in long-lived processes: this one (`--jobs 1`, the local launcher) or
joblib's reusable loky workers (`--jobs N`), which import JAX once and keep it. The overhead of
a run is its wall time in the worker minus its epochs' train time (summary.json's
`train_time_s`, which holds the step compilation of its first epoch); the target is ≤ 0.5 s for
every run after the first one of its worker.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bnnx.bench.common import Result
from bnnx.config.compose import compose_config
from bnnx.io import read_json

RUNS, EPOCHS, TARGET_S = 4, 3, 0.5


def timed_execute(job: dict) -> dict:
    """`execute(job)` with its wall time and the worker process that ran it."""
    from bnnx.sweeps.launchers import execute

    began = time.perf_counter()
    outcome = execute(job)
    return {**outcome, "seconds": time.perf_counter() - began, "worker": os.getpid()}


def overhead_case(jobs: int) -> Result:
    """The worst wall time a sweep's run spends outside its epochs, every run after a worker's first."""
    from bnnx.config import config_to_dict
    from bnnx.sweeps.launchers import JoblibLauncher, LocalLauncher

    launcher = LocalLauncher(timed_execute) if jobs == 1 else JoblibLauncher(jobs, timed_execute)
    with tempfile.TemporaryDirectory() as folder:
        configs = [compose_config(["method=ste", "model=mlp", f"epochs={EPOCHS}", f"seed={seed}",
                            f"out_dir={Path(folder) / f'seed{seed}'}"]) for seed in range(RUNS)]
        outcomes = dict(launcher.launch([{"config": config_to_dict(c), "resume": False} for c in configs]))
        overheads, seen = [], set()
        for index in sorted(outcomes):
            outcome = outcomes[index]
            summary = read_json(Path(str(configs[index].out_dir)) / "summary.json")
            if outcome["worker"] in seen:  # the first run of each worker pays its imports and compiles
                overheads.append(outcome["seconds"] - summary["train_time_s"])
            seen.add(outcome["worker"])
    worst = max(overheads) if overheads else float("nan")
    return Result(f"sweep-run-overhead-jobs{jobs}", round(worst, 3), "s", TARGET_S, "lower",
                  {"runs": RUNS, "epochs": EPOCHS, "overheads_s": [round(o, 3) for o in overheads]})
