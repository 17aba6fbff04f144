"""`bnnx predict RUN_OR_EXPORT INPUTS.npy OUT.npy`: a model's logits for inputs a user gives."""

from __future__ import annotations

from pathlib import Path

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

PREDICT_HELP = """Write the logits (inference mode) of PATH, a run directory (a trained, resumed or imported
run: `bnnx import larq|torchvision`) or an export file (`bnnx export`, run on packed bits), for the
inputs in INPUTS (.npy, shape (N, *input shape) in the model's layout, NHWC for images, preprocessed
as the model expects) to OUT (.npy, shape (N, classes)), e.g. to compare with another framework."""


@commands.command(help=PREDICT_HELP)
@user_errors
def predict(
    path: Path = typer.Argument(..., help="A run directory or an export file."),
    inputs: Path = typer.Argument(..., help="The inputs, a .npy array (N, *input shape)."),
    out: Path = typer.Argument(..., help="Where to write the logits (.npy)."),
):
    from bnnx.io import check_writable, write_bytes
    from bnnx.predict import load_inputs, npy_bytes, predict

    array = load_inputs(inputs)
    check_writable(out, "logits")
    logits = predict(path, array)
    write_bytes(out, npy_bytes(logits))
    typer.echo(f"wrote {out}: logits {tuple(logits.shape)} of {path}")
