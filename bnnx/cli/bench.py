"""`bnnx bench`: throughput/compile/memory figures against their targets, written to JSON."""

from __future__ import annotations

from typing import Optional

import typer

from bnnx.cli import app, user_errors


@app.command(help="Benchmark train-step speed and memory; results (with targets) go to a JSON file.")
@user_errors
def bench(out: str = typer.Option("bench.json", "--out", help="Where to write the results."),
          only: Optional[str] = typer.Option(None, "--only", help="Run only cases whose name contains this.")):
    from rich.console import Console
    from rich.table import Table

    from bnnx.bench import run_benchmark
    from bnnx.cli.compose import compose_config

    report = run_benchmark(compose_config, out, only)
    table = Table(title=f"bnnx bench ({report['backend']}, {report['versions']['device']})")
    for column in ("case", "compile s", "step ms", "measured", "target", "met"):
        table.add_column(column)
    for row in report["cases"]:
        if "ratio" in row:  # packed inference and export size: a ratio against its target
            if row["target"] is None:
                target, met = "none", "report"
            else:
                target, met = f"{row['target']}×", "yes" if row["met"] else "NO"
            table.add_row(row["case"], "", "", f"{row['ratio']:.3f}×", target, met)
            continue
        table.add_row(row["case"], f"{row['compile_s']:.2f}", f"{row['step_ms']:.2f}",
                      f"{row['images_per_s']:.0f} img/s", f"{row['target_images_per_s']:.0f}",
                      "yes" if row["meets_target"] else "NO")
    Console().print(table)
    for row in report.get("ratio_cases", []):
        if "target_ratio_at_most" in row:  # a cost ratio: lower is better
            figure = f"{row['ratio']:.2f}x (target <= {row['target_ratio_at_most']}x)"
        elif "ratio" in row and row["target_ratio"] is None:
            figure = f"{row['ratio']:.2f}x (no target: {row.get('note', 'report only')})"
        elif "ratio" in row:
            figure = f"{row['ratio']:.2f}x (target >= {row['target_ratio']}x)"
        else:
            figure = f"{row['overhead_s']:.2f} s (target <= {row['target_s']} s)"
        if "bound_ratio" in row:
            figure += f"; bound {row['bound_ratio']:.2f}x with all but the trained programs at 0 s"
        verdict = {True: " met", False: " NOT MET", None: ""}[row["meets_target"]]
        typer.echo(f"{row['case']}: {figure}{verdict}")
    typer.echo(f"peak RSS {report['peak_rss_mib']} MiB; results written to {out}")
