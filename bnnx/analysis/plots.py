"""Figures of the sign and kernel analyses (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from bnnx.analysis.kernels import ALL_ONES, decode

TOP_TILES = 16


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, tight_layout: bool = True) -> Path:
    if tight_layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_flips(signs: dict, path: Path) -> Path:
    """Flip ratio per epoch, one line per layer (signs.json)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, layer in signs["layers"].items():
        ratios = np.asarray(layer["flip_ratio"]) * 100
        ax.plot(np.arange(1, len(ratios) + 1), ratios, marker="o", markersize=3, label=name)
    _percent_axis(ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Sign flips per epoch: share of weights whose sign changed during the epoch")
    ax.set_xlabel("epoch (1 = first epoch of training)")
    ax.set_ylabel("weights that flipped sign (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, title=signs.get("tracked", "layer"), title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def _percent_axis(ax) -> None:
    """Log scale where the values span more than a decade, with labelled ticks at 1, 2 and 5 of
    each decade (a bare log axis over one decade shows a single tick); linear otherwise."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    values = [v for line in ax.lines for v in line.get_ydata() if v > 0]
    if not values or max(values) <= 10 * min(values):
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _epochs(count) -> str:
    return "?" if count is None else f"{count} epoch" + ("" if count == 1 else "s")


def plot_agreement(signs: dict, path: Path) -> Path:
    """Share of signs already equal to their final value after k epochs, per layer and overall."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    curves = dict(signs["layers"])
    if "all" in signs:
        curves["all layers"] = signs["all"]
    for name, layer in curves.items():
        fixed = np.asarray(layer["fixed_fraction"]) * 100
        style = {"color": "black", "linewidth": 2.5} if name == "all layers" else {}
        ax.plot(np.arange(len(fixed)), fixed, marker="o", markersize=3, label=name, **style)
    for share in (95, 99):
        ax.axhline(share, color="grey", linestyle=":", linewidth=1)
        ax.text(0, share, f" {share} %", va="bottom", fontsize=8, color="grey")
    total = signs.get("all", {})
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("Signs that are already final after k epochs\n"
                 f"(all layers: 95 % fixed after {_epochs(total.get('epochs_until_95pct_fixed'))}, "
                 f"99 % after {_epochs(total.get('epochs_until_99pct_fixed'))})")
    ax.set_xlabel("epochs finished (0 = initialisation)")
    ax.set_ylabel("weights whose sign never changes again (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_kernel_patterns(name: str, stats: dict, path: Path) -> Path:
    """Sorted pattern frequencies (with top-k coverage) and the top patterns as 3×3 tiles."""
    plt = _pyplot()
    fig = plt.figure(figsize=(11, 4.8))
    outer = fig.add_gridspec(1, 2, width_ratios=[1.4, 1], wspace=0.3)
    ax = fig.add_subplot(outer[0])
    counts = np.asarray(stats["sorted_counts"], float)
    share = counts / max(counts.sum(), 1.0) * 100
    ranks = np.arange(1, len(share) + 1)
    possible = 256 if stats["merge_negation"] else 512
    ax.fill_between(ranks, share, step="mid", alpha=0.35, color="tab:blue")
    ax.step(ranks, share, where="mid", color="tab:blue", label="share of kernels per pattern")
    ax.axhline(100 / possible, color="tab:blue", linestyle=":", label=f"uniform over {possible} patterns")
    ax.set_xscale("log")
    ax.set_xlim(0.8, possible)
    ax.set_xlabel("pattern rank (most frequent first, log scale)")
    ax.set_ylabel("kernels with this pattern (%)")
    cover = ax.twinx()
    cover.plot(ranks, np.cumsum(share), color="tab:red", label="top-k coverage (right axis)")
    reference = stats["uniform_random_reference"]["top_k_coverage"]
    ks = [int(k) for k in reference]
    cover.plot(ks, [reference[str(k)] * 100 for k in ks], color="tab:red", linestyle="--", marker=".",
               label=f"top-k coverage of {stats['kernels']} uniformly random kernels")
    cover.set_ylabel("top-k coverage: kernels among the k most frequent (%)", color="tab:red", fontsize=8)
    cover.set_ylim(0, 101)
    lines = ax.get_legend_handles_labels()[0] + cover.get_legend_handles_labels()[0]
    ax.legend(lines, [str(line.get_label()) for line in lines], fontsize=7, loc="center left")
    kind = "pattern classes (± merged)" if stats["merge_negation"] else "patterns"
    ax.set_title(f"{name}: {stats['kernels']} binary 3×3 kernels use {stats['distinct_patterns']} of {possible} "
                 f"{kind}\n"
                 f"entropy {stats['entropy_bits_per_kernel']:.2f} bits/kernel (random: "
                 f"{stats['uniform_random_reference']['entropy_bits_per_kernel']:.2f}; 9 = 1 bit/weight), "
                 f"top-16 coverage {stats['top_k_coverage']['16'] * 100:.1f} % "
                 f"(random: {stats['uniform_random_reference']['top_k_coverage']['16'] * 100:.1f} %)", fontsize=9)
    _draw_tiles(fig, outer[1], stats)
    return _save(fig, path, tight_layout=False)  # nested grids: the grid spacing does the layout


def _draw_tiles(fig, cell, stats: dict) -> None:
    top = stats["top_patterns"][:TOP_TILES]
    tiles = cell.subgridspec(4, 4, hspace=0.45, wspace=0.15)
    for i, entry in enumerate(top):
        tile = fig.add_subplot(tiles[i // 4, i % 4])
        tile.imshow(decode([entry["code"]])[0], cmap="gray", vmin=-1.6, vmax=1, interpolation="nearest")
        tile.set_xticks(np.arange(-0.5, 3), minor=True)
        tile.set_yticks(np.arange(-0.5, 3), minor=True)
        tile.grid(which="minor", color="tab:gray", linewidth=0.6)
        tile.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        code = entry["code"]
        label = f"{code}/{code ^ ALL_ONES}" if stats["merge_negation"] else f"#{code}"
        tile.set_title(f"{label}: {entry['count'] / max(stats['kernels'], 1) * 100:.1f} %", fontsize=7)
        if i == 0:
            tile.text(-0.5, -1.5, f"top {len(top)} patterns (white = +1, dark = −1)", fontsize=8,
                      transform=tile.transData, ha="left")


def plot_qbn(qbn: dict, path: Path) -> Path:
    """Test accuracy vs bits per weight of QBN codebooks, with the 1-bit network as reference."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = qbn["results"]
    bpw = [r["bits_per_weight"] for r in rows]
    ax.plot(bpw, [r["test_accuracy"] * 100 for r in rows], marker="o", label="QBN, no fine-tuning")
    if rows and "finetuned_test_accuracy" in rows[0]:
        ax.plot(bpw, [r["finetuned_test_accuracy"] * 100 for r in rows], marker="s",
                label=f"QBN, real parameters fine-tuned for {_epochs(qbn['finetune_epochs'])}")
    for r in rows:
        ax.annotate(f"K={r['codebook_size']}", (r["bits_per_weight"], r["test_accuracy"] * 100),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
    ax.text(1.0, 0.02, " 1 bit/weight", transform=ax.get_xaxis_transform(), fontsize=7, color="grey")
    ax.axhline(qbn["baseline_test_accuracy"] * 100, color="black", linestyle="--",
               label=f"binary network (1 bit/weight): {qbn['baseline_test_accuracy'] * 100:.2f} %")
    ax.set_title("QBN: test accuracy vs storage of the binary 3×3 conv kernels")
    ax.set_xlabel("bits per weight (index b/9 + codebook)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
