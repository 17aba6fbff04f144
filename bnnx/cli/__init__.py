"""The `bnnx` command line: a thin Typer layer over the Python API.

Every command turns bad input into one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="bnnx: train binarized and ternary neural networks, reproduce the papers' tables.")


def _print_version(value: bool) -> None:
    if value:
        from importlib import metadata

        try:
            version = metadata.version("bnnx")
        except metadata.PackageNotFoundError:
            version = "unknown (not installed)"
        typer.echo(f"bnnx {version}")
        raise typer.Exit()


@app.callback()
def global_options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print bnnx's version and exit."),
    jax_cache: Optional[Path] = typer.Option(
        None, "--jax-cache", envvar="BNNX_JAX_CACHE",
        help="Folder of JAX's persistent compilation cache (default: $XDG_CACHE_HOME/bnnx/jax or ~/.cache/bnnx/jax)."),
    no_jax_cache: bool = typer.Option(False, "--no-jax-cache", help="Do not read or write the compilation cache."),
):
    """Options for every command; they go before the command's name."""
    from bnnx.cli.jax_cache import configure

    configure(jax_cache, enabled=not no_jax_cache)


def _register_commands() -> None:
    """Add each command module's commands to `app` (once), in the order `bnnx --help` lists them."""
    from bnnx.cli import analyze, bench, data, eval, export, imports, predict, summary, sweep, train

    if not app.registered_groups:
        for module in (train, data, summary, sweep, analyze, export, eval, predict, bench, imports):
            app.add_typer(module.commands)


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _register_commands()
    sys.exit(app())
