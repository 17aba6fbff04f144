"""Services a method may use while it is built: load another run's weights, run sub-runs.

Sub-runs are trained by the loop, which sits above this module: the loop hands its `train`
function in (`train_run`), so the imports flow one way (services never import the loop).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bnnx.train.rundir import RunDir

if TYPE_CHECKING:
    import flax.linen as nn

    from bnnx.config import TrainConfig
    from bnnx.data.base import ArrayDataset
    from bnnx.data.streaming import StreamingDataset


@dataclasses.dataclass
class RunServices:
    config: TrainConfig  # of the run being built
    dataset: ArrayDataset | StreamingDataset
    model: nn.Module
    variables: dict  # freshly initialised variables of this run's model
    train_run: Callable | None = None  # bnnx.train.loop.train, for sub-runs

    def load_run_variables(self, run_dir: str | Path) -> tuple[dict, TrainConfig]:
        """Params and batch statistics of the run in `run_dir`, checked to fit this run's model (as
        `method.init_from` loads them). Returns (variables, its config)."""
        from bnnx.train.init_from import load_start, source_config

        variables, _ = load_start(run_dir, self.config, self.dataset, self.variables)
        return variables, source_config(run_dir)

    def full_precision_apply(self):
        """The apply function of this run's model's FP twin (same parameters, no quantizer), built once."""
        if not hasattr(self, "_fp_apply"):
            from bnnx.models import build_model

            twin = self.config.trained_model.full_precision_twin()
            self._fp_apply = build_model(twin, self.dataset.num_classes).apply
        return self._fp_apply

    def train_sub_run(self, config, dataset=None):
        """Train `config` quietly on this run's data set (or `dataset`): a completed run in its
        out_dir is reused, an interrupted one resumed. Returns the loop's RunResult."""
        if self.train_run is None:
            raise RuntimeError("this method trains sub-runs: build it with train_run=bnnx.train.loop.train")
        out = RunDir(config.out_dir)
        done = out.completed()
        if done is not None:
            return done
        result = self.train_run(dataclasses.replace(config, resume=out.holds_run()), quiet=True,
                                dataset=dataset if dataset is not None else self.dataset)
        if result.status == "interrupted":
            raise KeyboardInterrupt
        return result
