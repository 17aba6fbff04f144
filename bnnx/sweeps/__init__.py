"""Sweeps that reproduce the papers' tables: `sweeps/*.yaml` → runs → `bnnx report`.

- spec.py: a sweep as typed dataclasses (axes, layout, metrics, paper numbers, presets);
- parse.py: the sweep file (YAML), parsed and validated into a spec;
- plan.py: cells × seeds → runs, `${cell:...}` references resolved, dependency waves;
- runner.py: validate, then run what is not done (resumable, sweep.json index);
- launchers.py: local, joblib, and Hydra's submitit/ray launcher plugins;
- metrics.py: a metric's value from a run's files.
"""

from bnnx.sweeps.launchers import make_launcher
from bnnx.sweeps.parse import load_spec, spec_from_dict
from bnnx.sweeps.plan import Run, compose_runs, plan_runs
from bnnx.sweeps.runner import SweepResult, run_sweep
from bnnx.sweeps.spec import SweepSpec

__all__ = ["Run", "SweepResult", "SweepSpec", "compose_runs", "load_spec", "make_launcher", "plan_runs",
           "run_sweep", "spec_from_dict"]
