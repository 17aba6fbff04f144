"""Analyses of trained runs (Stable signs / QBN paper): sign stability, kernel patterns, QBN.

- signs.py: `SignTracker`, the training observer behind `analysis.signs=true` (signs.json);
- kernels.py: the 512 sign patterns of binary 3×3 kernels, top-k coverage, entropy;
- qbn.py: Quantized Binary-Kernel Networks (codebooks of 2^b patterns, accuracy vs bits);
- plots.py: the figures.

`analyze_run` is the Python API behind `bnnx analyze RUN_DIR`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bnnx.errors import check
from bnnx.io import read_json, write_json

KERNELS_FILE = "kernels.json"
QBN_FILE = "qbn.json"


@dataclasses.dataclass
class Analysis:
    run_dir: Path
    signs: dict | None = None  # signs.json, when the run tracked signs
    kernels: dict = dataclasses.field(default_factory=dict)  # layer -> pattern statistics
    qbn: dict | None = None
    figures: list[Path] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def layer_file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def analyze_run(run_dir: Path, bits: list[int], finetune: int = 0, merge_negation: bool = False,
                on_qbn_result=None) -> Analysis:
    """Sign plots (if signs.json exists), kernel pattern statistics and QBN for one finished run.

    Raises ConfigError when `run_dir` is not a run or holds nothing to analyze.
    """
    from bnnx.analysis import plots
    from bnnx.analysis.signs import SIGNS_FILE
    from bnnx.data import load_dataset
    from bnnx.train.rundir import RunDir

    run_dir = Path(run_dir)
    check(run_dir.is_dir(), f"{run_dir} is not a folder")
    check(finetune >= 0, f"--finetune must be >= 0 epochs (got {finetune})")
    config = dataclasses.replace(RunDir(run_dir).config(), out_dir=None, resume=False)
    result = Analysis(run_dir)
    if (run_dir / SIGNS_FILE).exists():
        result.signs = read_json(run_dir / SIGNS_FILE)
    dataset = load_dataset(config.dataset)
    kernels = has_binary_3x3_convs(config, dataset)
    if not kernels:
        check(result.signs is not None, f"nothing to analyze in {run_dir}: {config.model.name} has no binary 3x3 "
                                        "conv layers and the run has no signs.json (train with analysis.signs=true)")
    restored = restore_run(config, run_dir, dataset) if kernels else None  # read everything before writing
    if result.signs is not None:
        result.figures += [plots.plot_flips(result.signs, run_dir / "flips.png"),
                           plots.plot_agreement(result.signs, run_dir / "sign_agreement.png")]
    else:
        result.notes.append("no signs.json: train with analysis.signs=true to track sign flips")
    if restored is None:  # no binary 3x3 convs
        result.notes.append(f"{config.model.name} has no binary 3x3 conv layers: only sign statistics are reported")
        return result
    _kernel_analysis(result, *restored, bits, finetune, merge_negation, on_qbn_result)
    return result


def has_binary_3x3_convs(config, dataset) -> bool:
    """From an abstract forward pass: no parameters are initialised (that costs a compilation)."""
    from bnnx.layers import record_layers
    from bnnx.models import build_model
    from bnnx.train.experiment import example_input

    model = build_model(config.trained_model, dataset.num_classes)
    return any(r.binary and r.kind == "conv" and tuple(r.kernel_shape[:2]) == (3, 3)
               for r in record_layers(model, example_input(dataset)))


def restore_run(config, run_dir: Path, dataset=None):
    """(experiment, trained state) of a run from its latest checkpoint."""
    from bnnx.errors import CheckpointError
    from bnnx.train.checkpoint import Checkpoints
    from bnnx.train.experiment import build_experiment
    from bnnx.train.loop import train

    checkpoints = Checkpoints(run_dir)
    check(checkpoints.exists(), f"{run_dir} has no checkpoint: kernel patterns and QBN need trained weights",
          CheckpointError)
    # the run's own folder, so what its method saved there (ILB's sensitivity.json) is reused
    template = dataclasses.replace(config, method=dataclasses.replace(config.method, init_from=None))  # filled below
    experiment = build_experiment(template, run_dir=run_dir, dataset=dataset, train_run=train)
    try:
        state, _ = checkpoints.restore(experiment.state)
    finally:
        checkpoints.close()
    return experiment, state


def _kernel_analysis(result: Analysis, experiment, state, bits, finetune, merge_negation, on_qbn_result):
    from bnnx.analysis import plots
    from bnnx.analysis.kernels import binary_conv_kernels, kernel_stats
    from bnnx.analysis.qbn import run_qbn

    run_dir = result.run_dir
    for name, kernel in binary_conv_kernels(state.params, state.quant).items():
        result.kernels[name] = kernel_stats(kernel, merge_negation)
        result.figures.append(plots.plot_kernel_patterns(
            name, result.kernels[name], run_dir / f"kernels_{layer_file_name(name)}.png"))
    write_json(run_dir / KERNELS_FILE, result.kernels)
    result.qbn = run_qbn(experiment, state, bits, merge_negation, finetune, on_qbn_result)
    write_json(run_dir / QBN_FILE, result.qbn)
    result.figures.append(plots.plot_qbn(result.qbn, run_dir / "qbn.png"))
