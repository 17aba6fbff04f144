"""`bnnx export`: bit-pack a trained run into one .npz with a JSON manifest, or write it in
another runtime's format (`--format`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bnnx.cli.common import user_errors
from bnnx.errors import unknown_choice

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app


def _npz(config, run_dir: Path, out: Optional[Path]) -> str:
    from bnnx.export import export_run

    path, manifest = export_run(config, run_dir, out)
    sizes = manifest["bytes"]
    return (f"exported {len(manifest['tensors'])} tensors to {path}: {sizes['stored'] / 1024:,.2f} KiB "
            f"(float32: {sizes['float32'] / 1024:,.2f} KiB)")


def _lce(config, run_dir: Path, out: Optional[Path]) -> str:
    from bnnx.export.lce import export_lce

    path = export_lce(config, run_dir, out)
    return f"exported a Larq Compute Engine flatbuffer to {path}: {path.stat().st_size / 1024:,.2f} KiB"


FORMATS = {"npz": _npz, "lce": _lce}  # --format name → writer(config, run_dir, out) → summary line


@commands.command(help="Bit-pack a run's latest checkpoint: binary kernels as sign bits, ternary kernels as two "
                  "bit-planes, everything else float32, in one .npz with a JSON manifest; or (--format lce) a "
                  "Larq Compute Engine .tflite flatbuffer.")
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (holds config.yaml and checkpoints/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (default RUN_DIR/export.npz, "
                                       "RUN_DIR/model.tflite for lce)."),
    format: str = typer.Option("npz", "--format", help=f"Output format: {', '.join(FORMATS)}."),
):
    from bnnx.train.rundir import RunDir

    if format not in FORMATS:
        raise unknown_choice("--format", format, FORMATS)
    typer.echo(FORMATS[format](RunDir(run_dir).config(), run_dir, out))
