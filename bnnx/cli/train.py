"""`bnnx train` and `bnnx list`."""

from __future__ import annotations

from typing import List, Optional

import typer

from bnnx.cli import app, user_errors
from bnnx.cli.compose import GROUPS, complete_override, compose_config, config_yaml, group_options


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


@app.command(help=TRAIN_HELP)
@user_errors
def train(
    overrides: Optional[List[str]] = typer.Argument(None, help="Hydra overrides (key=value).",
                                                    autocompletion=complete_override),
    cfg: Optional[str] = typer.Option(None, "--cfg", help="'job': print the resolved config and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No epoch lines and no progress bar."),
):
    from bnnx.errors import ConfigError

    overrides = list(overrides or [])
    if cfg is not None:
        if cfg != "job":
            raise ConfigError(f"unknown --cfg '{cfg}'; valid options: job")
        typer.echo(config_yaml(overrides))
        return
    config = _resolve_resume(overrides, compose_config(overrides))
    from bnnx.train.loop import train as run_training

    result = run_training(config, quiet=quiet)
    summary = result.summary
    typer.echo(f"{summary['status']}: test_accuracy={_shown(summary['test_accuracy'])} "
               f"best={_shown(summary['best_test_accuracy'])} "
               f"epochs={summary['epochs_done']}/{config.epochs} run_dir={result.run_dir}")
    raise typer.Exit(result.exit_code)


def _shown(accuracy) -> str:
    return f"{accuracy:.4f}" if accuracy is not None else "n/a"  # None: no epoch finished


def _resolve_resume(overrides: list[str], config):
    """With resume=true, the run's own config.yaml is the base: `bnnx train resume=true out_dir=D`
    needs nothing else, and any other override must agree with what the run recorded."""
    if not config.resume:
        return config
    if not config.out_dir:
        from bnnx.errors import ConfigError

        raise ConfigError("resume=true needs out_dir=DIR, the folder of the run to continue")
    import dataclasses
    from pathlib import Path

    from bnnx.cli.compose import load_run_config
    from bnnx.config import config_to_dict
    from bnnx.errors import ConfigError

    if not (Path(config.out_dir) / "config.yaml").exists():
        return config  # the loop reports that there is nothing to resume
    saved = load_run_config(Path(config.out_dir))
    keys = {o.partition("=")[0].lstrip("+~") for o in overrides} - {"resume", "out_dir"}
    if keys:
        mine, theirs = _flat(config_to_dict(config)), _flat(config_to_dict(saved))
        for key in sorted(mine):
            if key not in ("resume", "out_dir") and mine.get(key) != theirs.get(key):
                raise ConfigError(f"cannot resume with a different config: {key}={mine[key]!r} but the run has {theirs.get(key)!r}")
    return dataclasses.replace(saved, resume=True, out_dir=config.out_dir)


def _flat(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@app.command("list", help="List the config groups and their options.")
@user_errors
def list_options():
    for group in GROUPS:
        typer.echo(f"{group}: {', '.join(group_options(group))}")
