"""The loop's observers built from the config: TensorBoard event files in every run dir, the
sign tracker (`analysis.signs`), and the optional `logger` (W&B or MLflow).

metrics.jsonl stays the record; these mirror it where users already look. Rows and per-step
values are logged against the global train step, so curves of a sweep's runs line up.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bnnx.config import TrainConfig, config_to_dict, flat_dict
from bnnx.errors import ConfigError
from bnnx.observers import Observer, scalars


class TensorBoard(Observer):
    """Event files (tensorboardX, no TensorFlow) in the run dir: `tensorboard --logdir runs/`."""

    def __init__(self, config: TrainConfig, run_dir: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=str(run_dir), flush_secs=30)
        self.writer.add_text("config", f"```\n{json.dumps(config_to_dict(config), indent=2)}\n```")

    def step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"step/{key}", value, step)

    def row(self, step: int, row: dict) -> None:
        for key, value in scalars(row).items():
            self.writer.add_scalar(f"epoch/{key}", value, step)
        self.writer.flush()

    def finish(self, run_dir: Path, summary: dict) -> None:
        self.writer.add_text("summary", f"```\n{json.dumps(summary, indent=2, default=str)}\n```")
        self.writer.close()


class WandB(Observer):
    """Weights & Biases (`pip install 'bnnx[wandb]'`); `logger.mode=offline` or WANDB_MODE for no network."""

    def __init__(self, config: TrainConfig, run_dir: Path):
        wandb = _import("wandb", "wandb")
        logger = config.logger
        self.run = wandb.init(project=logger.project, entity=logger.entity, mode=logger.mode, name=run_dir.name,
                              dir=str(run_dir), config=config_to_dict(config), reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def step(self, step: int, values: dict[str, float]) -> None:
        self.run.log({f"step/{k}": v for k, v in values.items()}, step=step)

    def row(self, step: int, row: dict) -> None:
        self.run.log(scalars(row), step=step)

    def finish(self, run_dir: Path, summary: dict) -> None:
        self.run.summary.update({"status": summary["status"], **scalars(summary)})
        self.run.finish(exit_code=0 if summary["status"] == "completed" else 1)


class MLflow(Observer):
    """MLflow (`pip install 'bnnx[mlflow]'`): params = the flattened config, metrics per step,
    summary.json as an artifact; `logger.tracking_uri` (null: MLflow's own default, MLFLOW_TRACKING_URI
    or a local sqlite file, which needs the full `mlflow` package). A `file:` URI is an explicit
    choice of MLflow's file store, which MLflow 3 only opens with MLFLOW_ALLOW_FILE_STORE set, so
    it is set for it."""

    STATUS = {"completed": "FINISHED", "diverged": "FAILED", "interrupted": "KILLED"}

    def __init__(self, config: TrainConfig, run_dir: Path):
        mlflow = _import("mlflow", "mlflow")
        uri = config.logger.tracking_uri
        if uri and uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            experiment = self.client.get_experiment_by_name(config.logger.project)
            experiment_id = (experiment.experiment_id if experiment
                             else self.client.create_experiment(config.logger.project))
        except mlflow.exceptions.MlflowException as error:
            raise ConfigError(f"logger=mlflow: {' '.join(str(error).split())[:300]}") from None
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
        for key, value in flat_dict(config_to_dict(config)).items():
            self.client.log_param(self.run_id, key, str(value)[:500])

    def _log(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        from mlflow.entities import Metric

        stamp = _now_ms()
        metrics = [Metric(_metric_key(prefix + k), v, stamp, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def step(self, step: int, values: dict[str, float]) -> None:
        self._log(values, step, "step/")

    def row(self, step: int, row: dict) -> None:
        self._log(scalars(row), step)

    def finish(self, run_dir: Path, summary: dict) -> None:
        self.client.log_dict(self.run_id, summary, "summary.json")
        self.client.set_tag(self.run_id, "status", summary["status"])
        self.client.set_terminated(self.run_id, self.STATUS.get(summary["status"], "FAILED"))


LOGGER_CLASSES = {"wandb": WandB, "mlflow": MLflow}


def build_observers(config: TrainConfig, run_dir: Path, experiment) -> list[Observer]:
    """Every observer of this run, in the order the loop calls them."""
    observers: list[Observer] = []
    if config.analysis.signs:
        from bnnx.analysis.signs import SignTracker

        observers.append(SignTracker(run_dir, experiment))
    if config.logger.name != "none":  # first: a logger that cannot start leaves no file behind
        observers.append(LOGGER_CLASSES[config.logger.name](config, run_dir))
    observers.append(TensorBoard(config, run_dir))
    return observers


def _import(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"logger={extra} needs {module}: pip install 'bnnx[{extra}]'") from None


def _metric_key(key: str) -> str:
    """MLflow keys allow letters, digits, _ - . space / only."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)

