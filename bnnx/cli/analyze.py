"""`bnnx analyze RUN_DIR`: sign stability, binary-kernel patterns and QBN codebooks of a run."""

from __future__ import annotations

from pathlib import Path

import typer

from bnnx.cli.common import user_errors

commands = typer.Typer()  # this module's commands; bnnx.cli adds them to the `bnnx` app

ANALYZE_HELP = (
    "Analyze a finished run (Stable signs / QBN paper).\n\n"
    "Writes into RUN_DIR: flips.png and sign_agreement.png (when the run was trained with analysis.signs=true); "
    "kernels.json and kernels_<layer>.png (the 512 sign patterns of each binary 3x3 conv layer); qbn.json and "
    "qbn.png (test accuracy when every kernel is replaced by the nearest of its layer's 2^b most frequent "
    "patterns). Exit code 2 on bad input."
)


@commands.command(help=ANALYZE_HELP)
@user_errors
def analyze(
    run_dir: Path = typer.Argument(..., help="Run folder (holds config.yaml and checkpoints/)."),
    finetune: int = typer.Option(0, "--finetune", help="Also fine-tune the real parameters E epochs per codebook."),
    bits: str = typer.Option("1,2,3,4,5,6,7,8", "--bits", help="Codebook sizes K = 2^b, b in 1..8, comma-separated."),
    merge_negation: bool = typer.Option(False, "--merge-negation/--no-merge-negation",
                                        help="Count a pattern and its negation as one."),
):
    from bnnx.analysis import analyze_run
    from bnnx.analysis.qbn import parse_bits

    bit_list = parse_bits(bits)
    result = analyze_run(run_dir, bit_list, finetune, merge_negation,
                         on_qbn_result=lambda row: typer.echo(
                             f"  QBN b={row['bits']}: test_accuracy={row['test_accuracy']:.4f}"))
    _print(result)


def _print(result) -> None:
    from rich.console import Console

    console = Console()
    if result.signs is not None:
        console.print(_signs_table(result.signs))
    if result.kernels:
        console.print(_kernels_table(result.kernels))
    if result.qbn is not None:
        console.print(_qbn_table(result.qbn))
    for note in result.notes:
        console.print(f"note: {note}")
    for figure in result.figures:
        console.print(f"wrote {figure}")


def _signs_table(signs: dict):
    from rich.table import Table

    table = Table(title=f"Sign stability over {signs['epochs']} epochs ({signs['tracked']})")
    for column in ("layer", "weights", "flips last epoch", "95 % fixed after", "99 % fixed after"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    rows = dict(signs["layers"])
    if "all" in signs:
        rows["all"] = signs["all"]
    for name, layer in rows.items():
        last = f"{layer['flip_ratio'][-1] * 100:.3f} %" if layer["flip_ratio"] else "-"
        table.add_row(name, str(layer["weights"]), last, f"{layer['epochs_until_95pct_fixed']} epochs",
                      f"{layer['epochs_until_99pct_fixed']} epochs")
    return table


def _kernels_table(kernels: dict):
    from rich.table import Table

    table = Table(title="Binary 3x3 kernels: patterns used (of 512), entropy, top-k coverage")
    table.caption = "random: the same number of uniformly random kernels (mean of 20 draws)"
    for column in ("layer", "kernels", "patterns", "bits/kernel", "top-16", "top-64"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for name, stats in kernels.items():
        for label, values in ((name, stats), ("  random", stats["uniform_random_reference"])):
            cover = values["top_k_coverage"]
            table.add_row(label, str(stats["kernels"]), f"{values['distinct_patterns']:.0f}",
                          f"{values['entropy_bits_per_kernel']:.2f}",
                          *(f"{cover[k] * 100:.1f} %" for k in ("16", "64")))
    return table


def _qbn_table(qbn: dict):
    from rich.table import Table

    table = Table(title=f"QBN (binary network: test accuracy {qbn['baseline_test_accuracy'] * 100:.2f} %)")
    columns = ["b", "K", "bits/weight", "compression", "kernels changed", "test acc."]
    tuned = bool(qbn["results"]) and "finetuned_test_accuracy" in qbn["results"][0]
    if tuned:
        columns.append(f"fine-tuned {qbn['finetune_epochs']} ep.")
    for column in columns:
        table.add_column(column, justify="right")
    for row in qbn["results"]:
        cells = [str(row["bits"]), str(row["codebook_size"]), f"{row['bits_per_weight']:.3f}",
                 f"{row['compression_vs_1bit']:.2f}x", f"{row['changed_kernels']}/{row['kernels']}",
                 f"{row['test_accuracy'] * 100:.2f} %"]
        if tuned:
            cells.append(f"{row['finetuned_test_accuracy'] * 100:.2f} %")
        table.add_row(*cells)
    return table
