"""Small digits runs trained once per pytest process (once per xdist worker) and shared by the tests
that only read them: export, eval and the export formats. Each training compiles its model's init,
train step and eval step (2-7 s of XLA each), which used to be paid again by every test that
trained the same small net.

A shared run is read-only: a test that writes into a run folder (`bnnx export RUN` with no --out
writes RUN/export.npz) works on `copy_run(...)`'s copy in its own tmp_path."""

from __future__ import annotations

import atexit
import dataclasses
import shutil
import tempfile
from pathlib import Path

# the digits MLP of the export/eval tests: two binary hidden layers (QuantDense_1, QuantDense_2)
# with a BN between them that the export folds into thresholds (W1A1)
MLP = ("model=mlp", "model.hidden=[48,40,32]", "batch_size=32")
MLP_STE = (*MLP, "method=ste", "epochs=2")  # test_eval's ste run, which the export-format tests read too
# the digits ConvNet: two binary hidden 3×3 convs with the BN between them folded
CONVNET = ("model=convnet", "model.widths=[8,16,16]", "epochs=3", "batch_size=32", "method.lr=0.01")

_runs: dict[tuple[str, ...], tuple] = {}
_root: list[Path] = []


def trained(digits, *overrides: str):
    """(config, result) of a completed digits run of `overrides`, trained on first use in this
    process. Do not write into `result.run_dir`: copy it (`copy_run`) first."""
    from bnnx.config.compose import compose_config
    from bnnx.train.loop import train

    if overrides not in _runs:
        if not _root:
            _root.append(Path(tempfile.mkdtemp(prefix="bnnx-shared-runs-")))
            atexit.register(shutil.rmtree, _root[0], True)
        out = _root[0] / f"run{len(_runs)}"
        config = compose_config([*overrides, f"out_dir={out}"])
        result = train(config, dataset=digits)
        assert result.status == "completed"
        _runs[overrides] = (config, result)
    return _runs[overrides]


def copy_run(digits, dest: Path, *overrides: str):
    """(config, run dir) of a private copy of the shared run of `overrides` at `dest`."""
    config, result = trained(digits, *overrides)
    shutil.copytree(result.run_dir, dest)
    return dataclasses.replace(config, out_dir=str(dest)), Path(dest)
