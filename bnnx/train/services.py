"""Services a method may use while it is built: load another run's weights, run sub-runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bnnx.errors import CheckpointError


def read_run_config(run_dir: str | Path):
    """The typed config a finished run recorded, or a one-line CheckpointError."""
    from omegaconf import OmegaConf

    from bnnx.config import config_from_dict

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} does not exist or is not a folder")
    config_file = run_dir / "config.yaml"
    if not config_file.exists():
        raise CheckpointError(f"{run_dir} is not a bnnx run (no config.yaml)")
    return config_from_dict(OmegaConf.to_container(OmegaConf.load(config_file), resolve=True))


def restore_state(run_dir: str | Path, dataset, config=None):
    """(train state, config, model) of a run's latest checkpoint, its model built for `dataset`
    (the loaded set, or `bnnx.data.shape_only` of it: only shapes are needed).

    The checkpoint's structure comes from the run's own config (its method builds the state, with
    the run's dir so what the method saved there, e.g. ILB's sensitivity.json, is reused),
    traced abstractly: nothing is initialised or compiled. Its own teacher is not loaded."""
    import jax
    import numpy as np

    from bnnx.config import DistillConfig
    from bnnx.models import build_model
    from bnnx.train.checkpoint import Checkpoints
    from bnnx.train.experiment import build_experiment

    run_dir = Path(run_dir)
    config = config if config is not None else read_run_config(run_dir)
    checkpoints = Checkpoints(run_dir)
    if not checkpoints.exists():
        raise CheckpointError(f"run {run_dir} has no checkpoint")
    template = dataclasses.replace(config, out_dir=None, resume=False, distill=DistillConfig())
    shapes = jax.eval_shape(lambda: build_experiment(template, run_dir=run_dir, dataset=dataset).state)
    try:
        state, _ = checkpoints.restore(jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes))
    finally:
        checkpoints.close()
    return state, config, build_model(config.trained_model, dataset.num_classes)


def restore_run(run_dir: str | Path, dataset, config=None):
    """(variables, config, model) of a finished run: `restore_state` without the optimizer."""
    state, config, model = restore_state(run_dir, dataset, config)
    return state.variables(), config, model


@dataclasses.dataclass
class RunServices:
    config: object  # TrainConfig of the run being built
    dataset: object
    model: object
    variables: dict  # freshly initialised variables of this run's model

    def load_run_variables(self, run_dir: str | Path) -> tuple[dict, object]:
        """Variables of a finished run, checked to fit this run's model. Returns (variables, its config)."""
        from bnnx.layers import flat

        other = read_run_config(run_dir)
        mine = {k: v.shape for k, v in flat(self.variables["params"]).items()}
        if (other.model.name, other.model.target, other.dataset.name) != \
                (self.config.model.name, self.config.model.target, self.config.dataset.name):
            raise CheckpointError(f"run {run_dir} trained {other.model.name} on {other.dataset.name}; "
                                  f"this run needs {self.config.model.name} on {self.config.dataset.name}")
        variables, _, _ = restore_run(run_dir, self.dataset, other)
        theirs = {k: v.shape for k, v in flat(variables["params"]).items()}
        if mine != theirs:
            raise CheckpointError(f"run {run_dir} has a different parameter structure than this model")
        return variables, other

    def train_sub_run(self, config, dataset=None):
        """Train `config` quietly on this run's data set (or `dataset`): a completed run in its
        out_dir is reused, an interrupted one resumed. Returns the loop's RunResult."""
        from bnnx.io import read_json, read_jsonl
        from bnnx.train.loop import RESULT_FILES, RunResult, train

        out = Path(config.out_dir)
        summary = out / "summary.json"
        if summary.exists() and read_json(summary).get("status") == "completed":
            return RunResult(out, read_json(summary), read_jsonl(out / "metrics.jsonl"))
        started = out.is_dir() and any((out / name).exists() for name in RESULT_FILES)
        result = train(dataclasses.replace(config, resume=started), quiet=True,
                       dataset=dataset if dataset is not None else self.dataset)
        if result.status == "interrupted":
            raise KeyboardInterrupt
        return result
