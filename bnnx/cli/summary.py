"""`bnnx summary`: per-layer parameters, packed storage, MACs and the compression ratio."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

SUMMARY_HELP = """Show a model's layers with their parameters (binary/ternary/real), packed storage
(binary 1 bit, ternary 2 bits, real 32 bits), MACs (binary vs real) and the compression ratio.
OVERRIDES are the same as for `bnnx train`, e.g. model=resnet18 dataset=imagenet2012
model.kernel_quantizer=ternary. The data set need not be downloaded. --run DIR summarizes the model a
run records (an import included: `bnnx summary --run runs/mine`); OVERRIDES then change that config."""


@commands.command(help=SUMMARY_HELP)
@user_errors
def summary(
    overrides: Optional[List[str]] = typer.Argument(None, help="Hydra overrides (key=value)."),
    json_file: Optional[str] = typer.Option(None, "--json", help="Also write the summary as JSON to this file."),
    run: Optional[Path] = typer.Option(None, "--run", help="A run directory whose recorded config to summarize."),
):
    from rich.console import Console

    from bnnx.config.compose import compose_config
    from bnnx.io import write_json
    from bnnx.summary import render, summarize, totals_text

    config = compose_config(list(overrides or [])) if run is None else _recorded(run, list(overrides or []))
    result = summarize(config.trained_model, config.dataset)
    console = Console()
    if not console.is_terminal:  # pipes and files get the whole table, not 80 columns
        console = Console(width=200)
    console.print(render(result))
    typer.echo(totals_text(result))
    if json_file:
        write_json(json_file, result.to_dict())


def _recorded(run: Path, overrides: list[str]):
    """The config `run`'s config.yaml records, with `overrides` applied."""
    from bnnx.cli.eval import with_overrides
    from bnnx.config import config_to_dict
    from bnnx.train.rundir import RunDir

    return with_overrides(config_to_dict(RunDir(run).config()), overrides)
