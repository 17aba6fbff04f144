"""`bnnx train` and `bnnx list`."""

from __future__ import annotations

from typing import List, Optional

import typer

from bnnx.cli.common import user_errors
from bnnx.config.compose import GROUPS, complete_override, compose_config, config_yaml, group_options

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app


def _groups_help() -> str:
    lines = [f"{group}: {', '.join(group_options(group))}" for group in GROUPS]
    return "\b\n" + "\n".join(lines)


TRAIN_HELP = f"""Train one run. OVERRIDES are Hydra overrides, e.g. method=bop model.hidden=[512,512] epochs=10.

Top-level keys: seed, epochs, batch_size, eval_batch_size, out_dir, resume, checkpoint_every,
distill.*, analysis.*; group keys: method.*, model.*, dataset.* (see --cfg job).

Config groups and their options:

{_groups_help()}

Results go to out_dir (default runs/<time>-<method>-<model>-<dataset>): config.yaml,
metrics.jsonl, summary.json, checkpoints/. Exit codes: 0 completed, 2 bad input,
3 diverged, 130 interrupted (resume with resume=true out_dir=DIR).
"""


@commands.command(help=TRAIN_HELP)
@user_errors
def train(
    overrides: Optional[List[str]] = typer.Argument(None, help="Hydra overrides (key=value).",
                                                    autocompletion=complete_override),
    cfg: Optional[str] = typer.Option(None, "--cfg", help="'job': print the resolved config and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No epoch lines and no progress bar."),
):
    from bnnx.errors import ConfigError
    from bnnx.train.init_from import inherit_model
    from bnnx.train.rundir import resolve_resume

    overrides = list(overrides or [])
    if cfg is not None:
        if cfg != "job":
            raise ConfigError(f"unknown --cfg '{cfg}'; valid options: job")
        typer.echo(config_yaml(overrides))
        return
    config = inherit_model(resolve_resume(compose_config(overrides), overrides), overrides)
    from bnnx.train.loop import train as run_training

    result = run_training(config, quiet=quiet)
    summary = result.summary
    typer.echo(f"{summary['status']}: test_accuracy={_shown(summary['test_accuracy'])} "
               f"best={_shown(summary['best_test_accuracy'])} "
               f"epochs={summary['epochs_done']}/{config.epochs} run_dir={result.run_dir}")
    raise typer.Exit(result.exit_code)


def _shown(accuracy) -> str:
    return f"{accuracy:.4f}" if accuracy is not None else "n/a"  # None: no epoch finished


@commands.command("list", help="List the config groups and their options.")
@user_errors
def list_options():
    for group in GROUPS:
        typer.echo(f"{group}: {', '.join(group_options(group))}")
