"""`bnnx export`: bit-pack a trained run into one .npz with a JSON manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app


@commands.command(help="Bit-pack a run's latest checkpoint: binary kernels as sign bits, ternary kernels as two "
                  "bit-planes, everything else float32, in one .npz with a JSON manifest.")
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (holds config.yaml and checkpoints/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default RUN_DIR/export.npz)."),
):
    from bnnx.export import export_run
    from bnnx.train.rundir import RunDir

    path, manifest = export_run(RunDir(run_dir).config(), run_dir, out)
    sizes = manifest["bytes"]
    typer.echo(f"exported {len(manifest['tensors'])} tensors to {path}: {sizes['stored'] / 1024:,.2f} KiB "
               f"(float32: {sizes['float32'] / 1024:,.2f} KiB)")
