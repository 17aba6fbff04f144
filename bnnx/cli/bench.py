"""`bnnx bench`: throughput/compile/memory figures against their targets, written to JSON."""

from __future__ import annotations

from typing import Optional

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app


@commands.command(help="Benchmark train-step speed and memory; results (with targets) go to a JSON file.")
@user_errors
def bench(out: str = typer.Option("bench.json", "--out", help="Where to write the results."),
          only: Optional[str] = typer.Option(None, "--only", help="Run only cases whose name contains this.")):
    from rich.console import Console
    from rich.table import Table

    from bnnx.bench import run_benchmark

    report = run_benchmark(out, only)
    table = Table(title=f"bnnx bench ({report['backend']}, {report['versions']['device']})")
    for column in ("case", "measured", "target", "met", "note"):
        table.add_column(column)
    for row in report["results"]:
        target = "none" if row["target"] is None else f"{'≥' if row['direction'] == 'higher' else '≤'} {row['target']}"
        note = row.get("note", "")
        if "bound_ratio" in row:
            note = f"bound {row['bound_ratio']:.2f}x with all but the trained programs at 0 s"
        table.add_row(row["case"], f"{row['measured']:g} {row['unit']}", target,
                      {True: "yes", False: "NO", None: "report"}[row["met"]], note)
    Console().print(table)
    typer.echo(f"peak RSS {report['peak_rss_mib']} MiB; results written to {out}")
