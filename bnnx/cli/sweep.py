"""`bnnx sweep` and `bnnx report`: regenerate a paper's table, mean ± std over seeds.

Also the entry point of cluster jobs: `python -m bnnx.cli.sweep --multirun ...` is a Hydra app
whose launcher plugin (submitit, ray) runs one job of a sweep wave per Hydra job.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

SWEEP_HELP = """Run every cell × seed of a sweep file (sweeps/*.yaml, or a bundled table's name such as
bnew_cifar) as ordinary training runs.

Each run goes to <out>/<cell>/seed<N> (default out: sweep_runs/<sweep>-<preset>). Rerunning the
same command skips completed runs and resumes or restarts the others; sweep.json records every
run's status. Then `bnnx report <out>` writes the table beside the paper's numbers.

Exit codes: 0 all runs done (completed, or diverged: recorded, not retried), 1 some failed or
blocked (recorded; rerun to retry), 2 bad input (nothing was run), 130 interrupted.
"""


def _pairs(values: list[str] | None, option: str) -> dict[str, str]:
    from bnnx.errors import ConfigError

    out = {}
    for value in values or []:
        key, equal, rest = value.partition("=")
        if not equal or not key or not rest:
            raise ConfigError(f"{option} takes KEY=VALUE (got '{value}')")
        out[key] = rest
    return out


def resolve_sweep_file(name_or_path: Path) -> Path:
    """A sweep file's path, or the bundled paper table of that name (`bnnx sweep bnew_cifar`)."""
    from bnnx.errors import ConfigError
    from bnnx.resources import bundled_sweeps, sweeps_dir

    if name_or_path.exists():
        return name_or_path
    if name_or_path.suffix in (".yaml", ".yml") and name_or_path.stem in bundled_sweeps():
        raise ConfigError(f"no sweep file {name_or_path} here; the bundled table of that name runs as "
                          f"`bnnx sweep {name_or_path.stem}`")
    if name_or_path.suffix or len(name_or_path.parts) > 1:
        return name_or_path
    bundled = sweeps_dir() / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise ConfigError(f"no sweep file {name_or_path} and no bundled sweep of that name; "
                      f"bundled: {', '.join(bundled_sweeps())}")


def _command(sweep_file: Path, preset: str, seeds, jobs, launcher, out, only, use, options, vmap_seeds) -> str:
    parts = ["bnnx sweep", str(sweep_file), f"--preset {preset}"] + (["--vmap-seeds"] if vmap_seeds else [])
    parts += [f"--seeds {seeds}"] if seeds else []
    parts += [f"--jobs {jobs}"] if jobs != 1 else []
    parts += [f"--launcher {launcher}"] if launcher else []
    parts += [f"--out {out}"] if out else []
    parts += [f"--only {o}" for o in only or []] + [f"--use {u}" for u in use or []]
    parts += [f"--launcher-opt {o}" for o in options or []]
    return " ".join(parts)


@commands.command(help=SWEEP_HELP)
@user_errors
def sweep(
    sweep_file: Path = typer.Argument(..., help="A sweep file, e.g. sweeps/bnew_cifar.yaml, or a bundled one's "
                                                "name, e.g. bnew_cifar."),
    preset: str = typer.Option("cpu", "--preset", help="smoke | cpu | paper (see the sweep file)."),
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Seeds 0..N-1 instead of the preset's."),
    jobs: int = typer.Option(1, "--jobs", min=1, help="Runs at a time (joblib processes)."),
    launcher: Optional[str] = typer.Option(None, "--launcher",
                                           help="local | joblib | submitit | submitit_local | ray."),
    out: Optional[Path] = typer.Option(None, "--out", help="Sweep folder."),
    only: Optional[List[str]] = typer.Option(None, "--only", help="Only cells matching this glob (repeatable)."),
    use: Optional[List[str]] = typer.Option(None, "--use", help="CELL=RUN_DIR: use a finished run for a cell."),
    launcher_opt: Optional[List[str]] = typer.Option(None, "--launcher-opt", help="key=value for hydra.launcher."),
    vmap_seeds: bool = typer.Option(False, "--vmap-seeds", help="Train a cell's seeds as one vmapped program "
                                    "(one compile per cell; each seed keeps its own run folder)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and list the runs; run nothing."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress view."),
):
    from bnnx.sweeps import load_spec, make_launcher, run_sweep

    sweep_file = resolve_sweep_file(sweep_file)
    spec = load_spec(sweep_file)
    settings = spec.preset(preset)  # an unknown preset is refused before anything else
    out = out or Path("sweep_runs") / f"{spec.name}-{preset}"
    provided, options = _pairs(use, "--use"), _pairs(launcher_opt, "--launcher-opt")
    runner = make_launcher(launcher, jobs, spec.name, out, settings.resources, options)
    seed_list = tuple(range(seeds)) if seeds else None
    if dry_run:
        _dry_run(spec, preset, out, seed_list, only, provided, runner)
        return
    result = run_sweep(spec, preset, out, spec_text=Path(sweep_file).read_text(), seeds=seed_list,
                       only=only, provided=provided, launcher=runner, quiet=quiet, vmap_seeds=vmap_seeds,
                       command=_command(sweep_file, preset, seeds, jobs, launcher, out, only, use, launcher_opt,
                                        vmap_seeds))
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    for (cell, seed), error in list(result.errors.items())[:5]:
        typer.echo(f"{result.statuses[cell, seed]}: {cell} seed {seed}: {error}", err=True)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(result.counts.items()))
    typer.echo(f"sweep {spec.name}-{preset}: {len(result.statuses)} runs ({counts}); "
               f"{result.skipped} already done, {result.launched} run now; next: bnnx report {out}")
    raise typer.Exit(result.exit_code)


def _dry_run(spec, preset, out, seeds, only, provided, runner) -> None:
    from bnnx.sweeps import compose_runs, plan_runs
    from bnnx.sweeps.runner import check_sweep_folder, data_problems, disk_status

    check_sweep_folder(out, spec, preset)
    runs = plan_runs(spec, preset, out, seeds, only, provided)
    configs = compose_runs(runs, spec.name)
    runner.check()
    for run in runs:
        typer.echo(f"{run.cell} seed {run.seed} [{disk_status(run)}]: {' '.join(run.overrides)}")
    for message in data_problems(configs).values():
        typer.echo(f"data: {message}")
    typer.echo(f"{len(runs)} runs compose; launcher {runner.name}; out {out}")


@commands.command(help="Write report.md, report.csv, curves.png and schedules.png for a sweep folder and print the "
                       "table.")
@user_errors
def report(sweep_dir: Path = typer.Argument(..., help="A sweep folder (sweep_runs/<sweep>-<preset>).")):
    from bnnx.sweeps.report import write_report

    _, table = write_report(sweep_dir, command=f"bnnx report {sweep_dir}")
    typer.echo(table)
    typer.echo(f"wrote {sweep_dir / 'report.md'}, report.csv, curves.png and schedules.png (when logged)")


# ---- cluster jobs: a Hydra app run by the sweep's launcher plugin -------------------------

def hydra_job(cfg) -> None:
    """One job of a sweep wave: `+jobs_file=<wave file> +job=<index>`."""
    from bnnx.sweeps.launchers import run_job_file

    run_job_file(cfg.jobs_file, int(cfg.job))


def hydra_multirun() -> None:
    import hydra

    hydra.main(version_base=None, config_path=None, config_name=None)(hydra_job)()


if __name__ == "__main__":
    from bnnx.cli import sweep as module  # the importable module, so launchers can pickle hydra_job

    module.hydra_multirun()
