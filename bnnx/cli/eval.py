"""`bnnx eval`: test accuracy of a run's checkpoint or of its packed export."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, cast

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

EVAL_HELP = """Evaluate PATH on its data set's test split and print one line
`test_accuracy=… test_top5_accuracy=… examples=… ran=checkpoint|packed-bits`.

PATH is a run directory (its latest checkpoint, evaluated as training evaluates) or an export
file from `bnnx export` (evaluated with the packed engine: binary layers on bits). OVERRIDES
change the recorded config, e.g. dataset.data_dir=DIR eval_batch_size=500."""

RAN = {"checkpoint": "checkpoint", "packed": "packed-bits"}  # what `bnnx eval` ran, as its line says


def _base_config(path: Path) -> dict:
    from bnnx.config import config_to_dict
    from bnnx.errors import CheckpointError
    from bnnx.export import unpack

    if path.is_dir():
        from bnnx.train.rundir import RunDir

        return config_to_dict(RunDir(path).config())
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    manifest = unpack(path).manifest
    if "config" not in manifest:
        raise CheckpointError(f"{path} does not record its run's config; export the run again")
    return manifest["config"]


def with_overrides(values: dict, overrides: list[str]):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from bnnx.config import config_from_dict
    from bnnx.errors import ConfigError

    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not key=value")
    try:
        merged = OmegaConf.merge(OmegaConf.create(values), OmegaConf.from_dotlist(overrides))
        return config_from_dict(cast(dict, OmegaConf.to_container(merged, resolve=True)))  # a DictConfig: a dict
    except OmegaConfBaseException as error:
        raise ConfigError(" ".join(str(error).split())[:300]) from None


@commands.command("eval", help=EVAL_HELP)
@user_errors
def eval_command(
    path: Path = typer.Argument(..., help="A run directory or an export file (.npz)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value changes to the recorded config."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write every figure to this JSON file."),
):
    from bnnx.evaluate import evaluate_checkpoint, evaluate_export
    from bnnx.io import write_json

    overrides = list(overrides or [])
    fixed = [o for o in overrides if o.lstrip("+~").split(".")[0].split("=")[0] in ("model", "method")]
    if fixed and not path.is_dir():
        from bnnx.errors import ConfigError

        raise ConfigError(f"{fixed[0]!r}: an export's model and method are fixed; only dataset.* and "
                          "eval_batch_size apply")
    config = with_overrides(_base_config(path), overrides)
    result = evaluate_checkpoint(config, path) if path.is_dir() else evaluate_export(path, config)
    if json_out is not None:
        try:
            write_json(json_out, result)
        except OSError as error:
            from bnnx.errors import ConfigError

            raise ConfigError(f"cannot write {json_out}: {error.strerror or error}") from None
    typer.echo(f"test_accuracy={result['test_accuracy']} test_top5_accuracy={result['test_top5_accuracy']} "
               f"examples={result['examples']} ran={RAN[result['source']]}")
