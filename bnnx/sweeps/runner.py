"""Run a sweep: validate everything, then every run not yet done, dependencies first.

The run folders are the truth: a run is done when its summary.json says `completed` (or
`diverged`: a deterministic outcome, recorded and not retried). Anything else — interrupted,
failed, killed — is resumed from its checkpoint when it has one, else started over in a clean
folder. So rerunning the same command after any stop skips the finished runs and never
duplicates one. `sweep.json` (written atomically after every run) records what happened:
status and error per run, the command, the machine.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

from bnnx.errors import ConfigError, DataNotFoundError
from bnnx.io import check_writable, read_json_object, write_json, write_text
from bnnx.lock import FolderLock, is_locked
from bnnx.sweeps.folders import check_run_folders, check_yaml_file
from bnnx.sweeps.launchers import LocalLauncher
from bnnx.sweeps.plan import Run, compose_runs, plan_runs, waves
from bnnx.sweeps.progress import SweepProgress
from bnnx.sweeps.spec import SweepSpec

INDEX_FILE, SPEC_FILE = "sweep.json", "sweep.yaml"
FINAL = ("completed", "diverged", "provided")  # never launched again
USABLE = ("completed", "provided")  # what a dependent run can build on
EXIT_OK, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 130


@dataclasses.dataclass
class SweepResult:
    sweep_dir: Path
    statuses: dict[tuple[str, int], str]
    launched: int  # runs trained (fresh or resumed) by this call
    skipped: int  # runs already final when this call started
    interrupted: bool = False
    errors: dict[tuple[str, int], str] = dataclasses.field(default_factory=dict)  # failed and blocked runs
    notes: list[str] = dataclasses.field(default_factory=list)  # cells whose seeds could not be vmapped

    @property
    def counts(self) -> Counter:
        return Counter(self.statuses.values())

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_OK if all(s in FINAL for s in self.statuses.values()) else EXIT_INCOMPLETE


def disk_status(run: Run) -> str:
    """completed | diverged | interrupted (from summary.json) | partial | pending | provided."""
    if run.provided:
        return "provided"
    summary = run.run_dir / "summary.json"
    if summary.exists():
        try:
            return str(read_json_object(summary).get("status", "partial"))
        except ValueError:
            return "partial"
    return "partial" if run.run_dir.exists() else "pending"


def has_checkpoint(run_dir: Path) -> bool:
    folder = run_dir / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def machine_info() -> dict:
    cpu = platform.processor() or ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import jax

        device = f"{jax.devices()[0].device_kind} ×{jax.device_count()}"
    except Exception:  # no backend: still record the rest
        device = "unknown"
    return {"platform": platform.platform(), "cpu": cpu or "unknown", "cpu_count": os.cpu_count(),
            "jax_device": device, "python": platform.python_version()}


def first_difference(mine: dict, theirs: dict, prefix: str = "") -> tuple[str, object, object] | None:
    """The first dotted key (sorted) whose value differs between two nested dicts: (key, mine, theirs)."""
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}", a, b
    return None


def check_recorded_configs(runs: list[Run], configs: dict) -> None:
    """A folder that holds a run of another config must not be resumed or counted as this one."""
    from bnnx.config import config_to_dict

    for run in runs:
        recorded = run.run_dir / "config.yaml"
        if run.provided or not recorded.exists():
            continue
        theirs = check_yaml_file(recorded)
        mine = config_to_dict(configs[run.id])
        for config in (mine, theirs):  # where and how a run continues is not what it computes
            config.pop("out_dir", None)
            config.pop("resume", None)
        found = first_difference(mine, theirs)
        if found:
            key, wanted, held = found
            raise ConfigError(f"{run.run_dir} holds a run with {key}={held!r}, but the sweep now asks for "
                              f"{wanted!r}; choose another --out or remove that run")


class SweepIndex:
    """sweep.json: one entry per (cell, seed), rewritten atomically whenever a status changes.

    Entries of an earlier call that this call does not plan (other seeds, cells left out by
    --only) are kept, so a partial rerun never drops a finished run from the report."""

    def __init__(self, sweep_dir: Path, spec: SweepSpec, preset: str, runs: list[Run], command: str, launcher: str):
        self.path = Path(sweep_dir) / INDEX_FILE
        old = read_json_object(self.path) if self.path.exists() else {}
        self.data = {"sweep": spec.name, "title": spec.title, "preset": preset, "command": command,
                     "created": old.get("created", _now()), "updated": _now(), "launcher": launcher,
                     "machine": machine_info(), "runs": []}
        self.entries = {}
        for run in runs:
            entry = {"cell": run.cell, "seed": run.seed, "run_dir": _relative(run.run_dir, self.path.parent),
                     "status": disk_status(run), "error": None, "depends": [f"{c}/seed{s}" for c, s in run.depends]}
            self.entries[run.id] = entry
        cells = {c.key for c in spec.cells()}
        for entry in old.get("runs", []):
            if (entry["cell"], entry["seed"]) not in self.entries and entry["cell"] in cells:
                self.entries[entry["cell"], entry["seed"]] = entry
        self.data["runs"] = sorted(self.entries.values(), key=lambda e: (_order(spec, e["cell"]), e["seed"]))

    def record(self, run_id, status: str, error: str | None = None) -> None:
        self.entries[run_id].update(status=status, error=error)
        self.save()

    def save(self) -> None:
        self.data["updated"] = _now()
        write_json(self.path, self.data)


def _order(spec: SweepSpec, cell: str) -> int:
    return [c.key for c in spec.cells()].index(cell)


def check_sweep_folder(sweep_dir: Path, spec: SweepSpec, preset: str) -> None:
    """A sweep folder holds one sweep under one preset."""
    path = Path(sweep_dir) / INDEX_FILE
    if path.exists():
        old = read_json_object(path)
        if (old.get("sweep"), old.get("preset")) != (spec.name, preset):
            raise ConfigError(f"{sweep_dir} holds sweep '{old.get('sweep')}' with preset '{old.get('preset')}'; "
                              f"choose another --out for '{spec.name}' with preset '{preset}'")


def data_problems(configs: dict) -> dict[str, str]:
    """Data sets the runs read that are not prepared: name -> the one-line fix (digits is embedded)."""
    from bnnx.data.tfds_source import prepared_builder, resolve_data_dir

    problems = {}
    for dataset in {config.dataset.name: config.dataset for config in configs.values()}.values():
        if dataset.name == "digits":
            continue
        try:
            prepared_builder(dataset.name, resolve_data_dir(dataset.data_dir))
        except DataNotFoundError as error:
            problems[dataset.name] = str(error)
    return problems


def _now() -> str:
    return datetime.now().isoformat(timespec="seconds")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root.absolute()))
    except ValueError:
        return str(path)


def prepare_job(run: Run, config, sweep_dir: Path) -> dict:
    """Resume from the run's checkpoint when it has one; otherwise start it in a clean folder."""
    from bnnx.config import config_to_dict

    resume = has_checkpoint(run.run_dir)
    if not resume and run.run_dir.exists() and not is_locked(run.run_dir):  # a live writer's run fails, intact
        if Path(sweep_dir).absolute() not in run.run_dir.parents:
            raise ConfigError(f"refusing to clean {run.run_dir}: it is outside the sweep folder")
        shutil.rmtree(run.run_dir)
    return {"config": config_to_dict(dataclasses.replace(config, resume=resume)), "resume": resume}


def run_sweep(spec: SweepSpec, preset: str, sweep_dir: Path, *,
              spec_text: str, seeds=None, only=None, provided=None, launcher=None, quiet: bool = True,
              command: str = "", vmap_seeds: bool = False) -> SweepResult:
    """Validate the whole sweep (every run composes, folders agree and read back), then run what is
    not done. The sweep folder's lock is held throughout: a second sweep of it is refused.
    With `vmap_seeds`, the seeds of a cell that are due together train as one program."""
    sweep_dir = Path(sweep_dir).absolute()
    check_writable(sweep_dir, "sweep folder")
    created = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(sweep_dir, "--out sweep"):
            return _validate_and_run(spec, preset, sweep_dir, spec_text=spec_text, seeds=seeds, only=only,
                                     provided=provided, launcher=launcher, quiet=quiet, command=command,
                                     vmap_seeds=vmap_seeds)
    except BaseException:
        if created and sweep_dir.is_dir() and not any(sweep_dir.iterdir()):
            sweep_dir.rmdir()  # a refused sweep leaves no folder behind
        raise


def _validate_and_run(spec, preset, sweep_dir, *, spec_text, seeds, only, provided, launcher, quiet,
                      command, vmap_seeds) -> SweepResult:
    check_sweep_folder(sweep_dir, spec, preset)
    runs = plan_runs(spec, preset, sweep_dir, seeds, only, provided)
    configs = compose_runs(runs, spec.name)
    check_recorded_configs(runs, configs)
    check_run_folders(runs)
    launcher = launcher or LocalLauncher()
    launcher.check()
    problems = data_problems(configs)
    if problems:
        raise DataNotFoundError(next(iter(problems.values())))

    write_text(sweep_dir / SPEC_FILE, spec_text)
    index = SweepIndex(sweep_dir, spec, preset, runs, command, launcher.name)
    index.save()
    statuses = {run.id: disk_status(run) for run in runs}
    skipped = sum(s in FINAL for s in statuses.values())
    result = SweepResult(sweep_dir, statuses, 0, skipped)
    with SweepProgress(f"{spec.name}-{preset}", len(runs), skipped, quiet) as progress:
        for wave in waves(runs):
            if _run_wave(wave, configs, launcher, index, result, progress, sweep_dir, vmap_seeds):
                result.interrupted = True
                break
    index.save()
    return result


def _units(todo: list[Run], vmap_seeds: bool) -> list[list[Run]]:
    """What each job trains: one run, or (vmap_seeds) all of a cell's due seeds together."""
    if not vmap_seeds:
        return [[run] for run in todo]
    cells: dict[str, list[Run]] = {}
    for run in todo:
        cells.setdefault(run.cell, []).append(run)
    return list(cells.values())


def _unit_job(unit: list[Run], configs: dict, sweep_dir: Path) -> dict:
    jobs = [prepare_job(run, configs[run.id], sweep_dir) for run in unit]
    return jobs[0] if len(jobs) == 1 else {"group": jobs}


def _label(unit: list[Run]) -> str:
    return unit[0].label if len(unit) == 1 else f"{unit[0].cell} seeds {', '.join(str(r.seed) for r in unit)}"


def _run_wave(wave, configs, launcher, index, result, progress, sweep_dir, vmap_seeds=False) -> bool:
    """Run one wave; returns True when the user interrupted the sweep."""
    statuses = result.statuses
    todo = []
    for run in wave:
        if statuses[run.id] in FINAL:
            continue
        missing = [f"{c} seed {s} ({statuses.get((c, s))})"
                   for c, s in run.depends if statuses.get((c, s)) not in USABLE]
        if missing:
            statuses[run.id] = "blocked"
            result.errors[run.id] = f"needs {', '.join(missing)}"
            index.record(run.id, "blocked", result.errors[run.id])
            progress.finished("blocked")
        else:
            todo.append(run)
    if not todo:
        return False
    units = _units(todo, vmap_seeds)
    jobs = [_unit_job(unit, configs, sweep_dir) for unit in units]
    interrupted = False
    try:
        for i, outcome in launcher.launch(jobs, started=lambda i: progress.started(_label(units[i]))):
            if outcome.get("note"):
                result.notes.append(f"{units[i][0].cell}: {outcome['note']}")
            for run, one in zip(units[i], outcome.get("outcomes", [outcome])):
                statuses[run.id] = one["status"]
                result.launched += 1
                index.record(run.id, one["status"], one.get("error"))
                if one["status"] == "failed":
                    result.errors[run.id] = one.get("error") or "failed"
                progress.finished(one["status"])
                interrupted = interrupted or one["status"] == "interrupted"
            if interrupted:
                break
    except KeyboardInterrupt:
        interrupted = True
    return interrupted
