"""What every command shares: bad input as one line on stderr and exit code 2."""

from __future__ import annotations

import functools

import typer

from bnnx.errors import BnnxError


def user_errors(command):
    """Print a BnnxError as one line and exit with its code (2), never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except BnnxError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code)

    return wrapper
