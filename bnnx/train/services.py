"""Services a method may use while it is built: load another run's weights, run sub-runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bnnx.errors import CheckpointError


@dataclasses.dataclass
class RunServices:
    config: object  # TrainConfig of the run being built
    dataset: object
    model: object
    variables: dict  # freshly initialised variables of this run's model

    def load_run_variables(self, run_dir: str | Path) -> tuple[dict, object]:
        """Variables of a finished run, checked to fit this run's model. Returns (variables, its config)."""
        from bnnx.config import config_from_dict
        from bnnx.layers import flat
        from bnnx.train.checkpoint import load_variables
        from bnnx.train.experiment import build_experiment
        from omegaconf import OmegaConf

        run_dir = Path(run_dir)
        config_file = run_dir / "config.yaml"
        if not config_file.exists():
            raise CheckpointError(f"{run_dir} is not a bnnx run (no config.yaml)")

        other = config_from_dict(OmegaConf.to_container(OmegaConf.load(config_file), resolve=True))
        mine = {k: v.shape for k, v in flat(self.variables["params"]).items()}
        if other.model.name != self.config.model.name or other.dataset.name != self.config.dataset.name:
            raise CheckpointError(f"run {run_dir} trained {other.model.name} on {other.dataset.name}; "
                                  f"this run needs {self.config.model.name} on {self.config.dataset.name}")
        template = build_experiment(dataclasses.replace(other, out_dir=None, resume=False), dataset=self.dataset).state
        variables = load_variables(run_dir, template)
        theirs = {k: v.shape for k, v in flat(variables["params"]).items()}
        if mine != theirs:
            raise CheckpointError(f"run {run_dir} has a different parameter structure than this model")
        return variables, other
