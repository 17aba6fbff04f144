"""`bnnx export`: bit-pack a trained run into one .npz with a JSON manifest, or write it in
another runtime's format (`--format`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app


def _write_npz(config, run_dir: Path, out: Optional[Path]) -> str:
    from bnnx.export import export_run

    path, manifest = export_run(config, run_dir, out)
    sizes = manifest["bytes"]
    return (f"exported {len(manifest['tensors'])} tensors to {path}: {sizes['stored'] / 1024:,.2f} KiB "
            f"(float32: {sizes['float32'] / 1024:,.2f} KiB)")


def _write_c(config, run_dir: Path, out: Optional[Path]) -> str:
    from bnnx.deploy.c_export import export_run_c

    out = out if out is not None else run_dir / "c"
    facts = export_run_c(config, run_dir, out)
    inputs = f"{out}/input.bin" if facts["input_bin"] else "INPUTS.bin (float32 N x H x W x C; no test examples here)"
    return (f"wrote a C99 program to {out} (arena {facts['arena_bytes']:,} bytes); "
            f"build and run it: make -C {out} && {out}/infer {inputs}")


def _write_qonnx(config, run_dir: Path, out: Optional[Path]) -> str:
    from bnnx.deploy.qonnx_export import export_run_qonnx

    out = out if out is not None else run_dir / "model.onnx"
    facts = export_run_qonnx(config, run_dir, out)
    return f"wrote a QONNX graph to {out}: {facts['nodes']} nodes ({', '.join(facts['ops'])})"


def _write_lce(config, run_dir: Path, out: Optional[Path]) -> str:
    from bnnx.export.lce import export_lce

    path = export_lce(config, run_dir, out)
    return f"exported a Larq Compute Engine flatbuffer to {path}: {path.stat().st_size / 1024:,.2f} KiB"


# --format name → writer(config, run_dir, out) → message
WRITERS = {"npz": _write_npz, "c": _write_c, "qonnx": _write_qonnx, "lce": _write_lce}


@commands.command(help="Bit-pack a run's latest checkpoint: binary kernels as sign bits, ternary kernels as two "
                  "bit-planes, everything else float32, in one .npz with a JSON manifest (--format npz), or "
                  "a dependency-free C99 program of it (--format c: OUT is a folder), or a QONNX graph "
                  "(--format qonnx: needs bnnx[qonnx]), or a Larq Compute Engine .tflite flatbuffer (--format lce).")
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory (holds config.yaml and checkpoints/)."),
    dest: Optional[Path] = typer.Argument(None, help="Output (the same as --out)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file or folder (default RUN_DIR/export.npz, "
                                                           "RUN_DIR/c, RUN_DIR/model.onnx, RUN_DIR/model.tflite)."),
    format: str = typer.Option("npz", "--format", help=f"One of {', '.join(WRITERS)}."),
):
    from bnnx.errors import check, unknown_choice
    from bnnx.train.rundir import RunDir

    if format not in WRITERS:
        raise unknown_choice("format", format, WRITERS)
    check(dest is None or out is None or dest == out, f"give the output once: {dest} and --out {out}")
    typer.echo(WRITERS[format](RunDir(run_dir).config(), run_dir, dest if dest is not None else out))
