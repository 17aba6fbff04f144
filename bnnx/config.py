"""Typed run configuration. Library code takes these; only the CLI touches Hydra."""

from __future__ import annotations

import dataclasses

from bnnx.data import DatasetConfig
from bnnx.errors import ConfigError, check
from bnnx.methods.base import MethodConfig
from bnnx.models import ModelConfig


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: α·CE + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T))."""

    teacher: str | None = None  # run dir of a finished full-precision run
    alpha: float = 0.5
    temperature: float = 4.0

    def __post_init__(self):
        check(0.0 <= self.alpha <= 1.0, f"distill.alpha must be in [0, 1] (got {self.alpha})")
        check(self.temperature > 0, f"distill.temperature must be > 0 (got {self.temperature})")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    signs: bool = False  # track sign flips of binary-bound kernels per epoch


LOGGERS = ("none", "wandb", "mlflow")


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    """Where a run is logged besides metrics.jsonl and its TensorBoard event files."""

    name: str = "none"  # none | wandb | mlflow
    project: str = "bnnx"  # W&B project, MLflow experiment
    entity: str | None = None  # W&B entity (null: your default)
    mode: str | None = None  # W&B mode: online | offline | disabled (null: WANDB_MODE, else online)
    tracking_uri: str | None = None  # MLflow, e.g. file:./mlruns (null: MLFLOW_TRACKING_URI, else MLflow's default)

    def __post_init__(self):
        check(self.name in LOGGERS, f"unknown logger '{self.name}'; valid options: {', '.join(LOGGERS)}")


@dataclasses.dataclass
class TrainConfig:
    method: MethodConfig
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    seed: int = 0
    epochs: int = 40
    batch_size: int = 64
    eval_batch_size: int = 1000
    out_dir: str | None = None
    resume: bool = False
    checkpoint_every: int = 1  # epochs; an interrupt always checkpoints
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    analysis: AnalysisConfig = dataclasses.field(default_factory=AnalysisConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    log_every_steps: int = 50  # per-step training loss and lr to the loggers; 0: epoch rows only

    def __post_init__(self):
        check(self.epochs >= 1, f"epochs must be >= 1 (got {self.epochs})")
        check(self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})")
        check(self.eval_batch_size >= 1, f"eval_batch_size must be >= 1 (got {self.eval_batch_size})")
        check(self.checkpoint_every >= 1, f"checkpoint_every must be >= 1 (got {self.checkpoint_every})")
        check(self.log_every_steps >= 0, f"log_every_steps must be >= 0 (got {self.log_every_steps})")

    @property
    def trained_model(self) -> ModelConfig:
        """The model as the method trains it."""
        return self.method.adapt_model(self.model)


# ---- plain dicts (Hydra's resolved config, config.yaml, sweeps) <-> typed config ---------

def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _build(cls, values: dict, where: str, extra_ok: bool = False):
    names = _field_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown and not extra_ok:
        raise ConfigError(f"unknown key '{where}.{unknown[0]}'; valid keys: {', '.join(names)}")
    kwargs = {k: tuple(v) if isinstance(v, list) and k in _TUPLE_FIELDS else v for k, v in values.items() if k in names}
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


_TUPLE_FIELDS = {"real_roles", "real_paths", "stages", "initial_binary", "ranking", "rules"}


def method_from_dict(values: dict) -> MethodConfig:
    from bnnx.methods import method_class

    values = dict(values)
    name = values.pop("name", None)
    check(name is not None, "method.name is missing")
    return _build(method_class(name), values, "method")


def model_from_dict(values: dict) -> ModelConfig:
    from bnnx.models import model_options

    values = dict(values)
    check("name" in values, "model.name is missing")
    common = {k: values.pop(k) for k in list(values) if k in _field_names(ModelConfig)}
    valid = model_options(common["name"], common.get("target"))
    unknown = sorted(set(values) - set(valid))
    if unknown:
        keys = sorted(set(_field_names(ModelConfig)) - {"options"} | set(valid))
        raise ConfigError(f"unknown key 'model.{unknown[0]}'; valid keys: {', '.join(keys)}")
    return _build(ModelConfig, {**common, "options": {**(common.get("options") or {}), **values}}, "model")


def config_from_dict(values: dict) -> TrainConfig:
    values = dict(values)
    check("method" in values, "the config has no method")
    parts = {
        "method": method_from_dict(values.pop("method")),
        "model": model_from_dict(values.pop("model", {"name": "mlp"})),
        "dataset": _build(DatasetConfig, values.pop("dataset", {}), "dataset"),
        "distill": _build(DistillConfig, values.pop("distill", {}) or {}, "distill"),
        "analysis": _build(AnalysisConfig, values.pop("analysis", {}) or {}, "analysis"),
        "logger": _build(LoggerConfig, values.pop("logger", {}) or {}, "logger"),
    }
    return _build(TrainConfig, {**values, **parts}, "config")


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: TrainConfig) -> dict:
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "method":
            value = {"name": value.name, **dataclasses.asdict(value)}
        elif field.name == "model":
            fields = dataclasses.asdict(value)
            unset = {"options"} | {k for k in ("target", "rules") if not fields[k]}  # zoo configs read as before
            value = {**{k: v for k, v in fields.items() if k not in unset}, **fields["options"]}
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[field.name] = _plain(value)
    return out
