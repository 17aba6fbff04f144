"""Where a sweep's runs execute: in this process, in local processes (joblib), or on a cluster
through Hydra's launcher plugins (submitit for Slurm, ray).

A job is a plain dict `{"config": <config_to_dict of the run>, "resume": bool}`; `execute(job)`
trains it and returns an outcome `{"status": ..., "error": ...}` without ever raising, so one
failed run never stops a sweep. Cluster launchers run `python -m bnnx.cli.sweep --multirun`
with the plugin chosen by `hydra/launcher=...`: Hydra stays in the CLI, this module only
builds the overrides.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, cast

from bnnx.errors import BnnxError, CheckpointError, ConfigError
from bnnx.io import read_json, write_json


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:300] if not isinstance(error, BnnxError) else text[:300]


def execute(job: dict) -> dict:
    """Train one run; a resume whose checkpoint cannot be read starts over in a clean folder.
    A job `{"group": [job, ...]}` is the seeds of one cell, trained as one program."""
    from bnnx.config import config_from_dict
    from bnnx.train.loop import train

    if "group" in job:
        return execute_group(job["group"])
    try:
        config = config_from_dict({**job["config"], "resume": job["resume"]})
        try:
            result = train(config, quiet=True)
        except CheckpointError:
            if not job["resume"]:
                raise
            if config.out_dir is not None:  # a sweep's job always names it
                shutil.rmtree(config.out_dir, ignore_errors=True)
            result = train(dataclasses.replace(config, resume=False), quiet=True)
        return {"status": result.status, "error": None}
    except KeyboardInterrupt:
        return {"status": "interrupted", "error": "interrupted before the run could checkpoint"}
    except Exception as error:  # any failure is a recorded outcome, never the sweep's end
        return {"status": "failed", "error": one_line(error)}


def execute_group(jobs: list[dict]) -> dict:
    """Train the jobs (seeds of one cell) as one vectorised program: `{"outcomes": [one per job],
    "note": None}`; when they cannot share one (bnnx.train.seeds) or a resume cannot read a
    checkpoint, each is executed on its own and `note` says why in one line."""
    from bnnx.config import config_from_dict
    from bnnx.train.loop import train_seeds
    from bnnx.train.seeds import NotVectorisable

    try:
        configs = [config_from_dict({**job["config"], "resume": job["resume"]}) for job in jobs]
        results = train_seeds(configs, quiet=True)
        return {"outcomes": [{"status": r.status, "error": None} for r in results], "note": None}
    except (NotVectorisable, CheckpointError) as error:
        note = "seeds run separately: " + " ".join(str(error).split())[:300]
    except KeyboardInterrupt:
        interrupted = {"status": "interrupted", "error": "interrupted before the runs could checkpoint"}
        return {"outcomes": [interrupted] * len(jobs), "note": None}
    except Exception as error:  # any failure is a recorded outcome, never the sweep's end
        return {"outcomes": [{"status": "failed", "error": one_line(error)}] * len(jobs), "note": None}
    return {"outcomes": [execute(job) for job in jobs], "note": note}


def _indexed(index: int, job: dict, fn: Callable = execute) -> tuple[int, dict]:
    return index, fn(job)


class LocalLauncher:
    """One run after another in this process."""

    name, parallel = "local", 1

    def __init__(self, fn: Callable[[dict], dict] = execute):
        self.fn = fn

    def check(self) -> None:
        pass

    def launch(self, jobs: list[dict], started: Callable[[int], None] = lambda i: None) -> Iterator[tuple[int, dict]]:
        for index, job in enumerate(jobs):
            started(index)
            yield index, self.fn(job)


class JoblibLauncher:
    """`n_jobs` runs at a time, each in its own worker process (joblib's loky backend)."""

    name = "joblib"

    def __init__(self, n_jobs: int, fn: Callable[[dict], dict] = execute):
        self.parallel, self.fn = n_jobs, fn

    def check(self) -> None:
        if self.parallel < 1:
            raise ConfigError(f"--jobs must be >= 1 (got {self.parallel})")

    def launch(self, jobs: list[dict], started: Callable[[int], None] = lambda i: None) -> Iterator[tuple[int, dict]]:
        from joblib import Parallel, delayed

        waiting = list(range(len(jobs)))
        for _ in range(min(self.parallel, len(jobs))):
            started(waiting.pop(0))
        parallel = Parallel(n_jobs=self.parallel, backend="loky", return_as="generator_unordered")
        for outcome in parallel(delayed(_indexed)(i, job, self.fn) for i, job in enumerate(jobs)):
            yield cast(tuple[int, dict], outcome)  # _indexed's (joblib types results as optional)
            if waiting:  # the pool starts the next job as soon as one ends
                started(waiting.pop(0))


# ---- Hydra launcher plugins ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HydraPlugin:
    config: str  # the hydra/launcher option
    module: str | None  # the plugin's package, None when built into Hydra
    extra: str | None  # bnnx's pip extra that installs it
    resources: dict  # preset resource -> hydra.launcher key


HYDRA_PLUGINS = {
    "submitit": HydraPlugin("submitit_slurm", "hydra_plugins.hydra_submitit_launcher", "slurm",
                            {"gpus": "gpus_per_node", "cpus": "cpus_per_task", "mem_gb": "mem_gb",
                             "timeout_min": "timeout_min"}),
    "ray": HydraPlugin("ray", "hydra_plugins.hydra_ray_launcher", "ray",
                       {"gpus": "ray.remote.num_gpus", "cpus": "ray.remote.num_cpus"}),
    # submitit's local executor: the Slurm path (job files, outcome files, resume) on this machine
    "submitit_local": HydraPlugin("submitit_local", "hydra_plugins.hydra_submitit_launcher", "slurm",
                                  {"gpus": "gpus_per_node", "cpus": "cpus_per_task", "mem_gb": "mem_gb",
                                   "timeout_min": "timeout_min"}),
    "basic": HydraPlugin("basic", None, None, {}),  # Hydra's own sequential launcher
}


def plugin_installed(module: str | None) -> bool:
    if module is None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def launcher_settings(kind: str, sweep_name: str, sweep_dir: Path, resources: dict, options: dict) -> dict:
    """The `hydra.launcher.*` values for a plugin: the preset's resources mapped to its keys, the
    sweep's name and log folder, then the user's `--launcher-opt key=value` (which win)."""
    plugin = HYDRA_PLUGINS[kind]
    settings: dict = {}
    if kind.startswith("submitit"):
        settings = {"submitit_folder": str(Path(sweep_dir) / ".submitit" / "%j"), "name": sweep_name}
    for resource, value in resources.items():
        if resource in plugin.resources:
            settings[plugin.resources[resource]] = value
    return {**settings, **options}


def launcher_overrides(kind: str, settings: dict) -> list[str]:
    """Hydra overrides selecting the plugin and setting its config (`++` adds or replaces)."""
    return [f"hydra/launcher={HYDRA_PLUGINS[kind].config}",
            *(f"++hydra.launcher.{key}={_hydra_value(value)}" for key, value in settings.items())]


def _hydra_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return text if all(c.isalnum() or c in "_./:-%" for c in text) else "'" + text.replace("'", "\\'") + "'"


class HydraLauncher:
    """Each wave of jobs is one Hydra multirun (`+job=0,1,...`) through a launcher plugin."""

    parallel = 1

    def __init__(self, kind: str, sweep_name: str, sweep_dir: Path, resources: dict | None = None,
                 options: dict | None = None):
        if kind not in HYDRA_PLUGINS:
            raise ConfigError(f"unknown launcher '{kind}'; valid options: local, joblib, {', '.join(HYDRA_PLUGINS)}")
        self.name, self.kind, self.sweep_dir = kind, kind, Path(sweep_dir).absolute()
        self.settings = launcher_settings(kind, sweep_name, self.sweep_dir, resources or {}, options or {})
        self.parallel = 10**6 if kind != "basic" else 1
        self._wave = 0

    def check(self) -> None:
        plugin = HYDRA_PLUGINS[self.kind]
        if not plugin_installed(plugin.module):
            package = (plugin.module or "").split(".")[-1].replace("_", "-")
            raise ConfigError(f"the {self.kind} launcher needs {package}: pip install 'bnnx[{plugin.extra}]'")

    def command(self, jobs_file: Path, count: int) -> list[str]:
        return [sys.executable, "-m", "bnnx.cli.sweep", "--multirun", *launcher_overrides(self.kind, self.settings),
                f"hydra.sweep.dir={self.sweep_dir / '.hydra' / jobs_file.stem}", "hydra.job.chdir=false",
                f"+jobs_file={jobs_file}", f"+job={','.join(str(i) for i in range(count))}"]

    def launch(self, jobs: list[dict], started: Callable[[int], None] = lambda i: None) -> Iterator[tuple[int, dict]]:
        self._wave += 1
        folder = self.sweep_dir / ".launch"
        jobs_file = folder / f"wave{self._wave}.json"
        for index in range(len(jobs)):
            outcome_file(jobs_file, index).unlink(missing_ok=True)
        write_json(jobs_file, jobs)
        for index in range(len(jobs)):
            started(index)
        with open(folder / f"wave{self._wave}.log", "w") as log:
            subprocess.run(self.command(jobs_file, len(jobs)), stdout=log, stderr=subprocess.STDOUT, check=False)
        for index in range(len(jobs)):
            path = outcome_file(jobs_file, index)
            lost = {"status": "failed",
                    "error": f"the {self.kind} job reported nothing; see {folder / jobs_file.stem}.log"}
            yield index, read_json(path) if path.exists() else lost


def outcome_file(jobs_file: Path, index: int) -> Path:
    return jobs_file.with_name(f"{jobs_file.stem}-outcome-{index}.json")


def run_job_file(jobs_file: str | Path, index: int) -> dict:
    """Inside a launched job: run job `index` of `jobs_file` and leave its outcome beside it."""
    jobs_file = Path(jobs_file)
    outcome = execute(json.loads(jobs_file.read_text())[index])
    write_json(outcome_file(jobs_file, index), outcome)
    return outcome


def make_launcher(kind: str | None, jobs: int, sweep_name: str, sweep_dir: Path, resources: dict | None = None,
                  options: dict | None = None):
    """The launcher named `kind` (default: local for one job at a time, joblib for more)."""
    kind = kind or ("joblib" if jobs > 1 else "local")
    if options and kind in ("local", "joblib"):
        raise ConfigError(f"--launcher-opt applies to the submitit and ray launchers, not '{kind}'")
    if kind == "local":
        if jobs != 1:
            raise ConfigError(f"the local launcher runs one job at a time; use --launcher joblib for --jobs {jobs}")
        return LocalLauncher()
    if kind == "joblib":
        return JoblibLauncher(jobs)
    if kind == "basic" or kind not in HYDRA_PLUGINS:
        raise ConfigError(f"unknown launcher '{kind}'; valid options: local, joblib, submitit, submitit_local, ray")
    return HydraLauncher(kind, sweep_name, sweep_dir, resources, options)
