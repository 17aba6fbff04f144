"""Typed run configuration. Library code takes these; only the CLI touches Hydra."""

from __future__ import annotations

import dataclasses
from typing import Literal

from bnnx.config.schema import setting, validate
from bnnx.data import DatasetConfig, dataset_class
from bnnx.errors import ConfigError, check
from bnnx.methods.base import MethodConfig
from bnnx.models import ModelConfig


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation: α·CE + (1 − α)·T²·KL(softmax(t/T) ‖ softmax(s/T))."""

    teacher: str | None = None  # run dir of a finished full-precision run
    alpha: float = setting(0.5, ge=0, le=1)
    temperature: float = setting(4.0, gt=0)

    def __post_init__(self):
        validate(self, "distill")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    signs: bool = False  # track sign flips of binary-bound kernels per epoch

    def __post_init__(self):
        validate(self, "analysis")


LOGGERS = ("none", "wandb", "mlflow")


@dataclasses.dataclass(frozen=True)
class LoggerConfig:
    """Where a run is logged besides metrics.jsonl and its TensorBoard event files."""

    name: str = setting("none", choices=LOGGERS)
    project: str = "bnnx"  # W&B project, MLflow experiment
    entity: str | None = None  # W&B entity (null: your default)
    mode: str | None = None  # W&B mode: online | offline | disabled (null: WANDB_MODE, else online)
    tracking_uri: str | None = None  # MLflow, e.g. file:./mlruns (null: MLFLOW_TRACKING_URI, else MLflow's default)

    def __post_init__(self):
        validate(self, "logger")


@dataclasses.dataclass
class TrainConfig:
    method: MethodConfig
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    dataset: DatasetConfig = dataclasses.field(default_factory=DatasetConfig)
    seed: int = setting(0, ge=0, lt=2**32)  # NumPy's and JAX's generators take unsigned 32-bit seeds
    epochs: int = setting(40, ge=1)
    batch_size: int = setting(64, ge=1)
    eval_batch_size: int = setting(1000, ge=1)
    out_dir: str | None = None
    resume: bool = False
    # epochs; null: after the first epoch that ends 30 s or more after the last save (or the run's
    # start), so short epochs are not dominated by saves. The last epoch and an interrupt always save.
    checkpoint_every: int | None = setting(None, ge=1)
    devices: int | Literal["all"] = setting(1, ge=1)  # local devices to split each batch over, or all of them
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
    analysis: AnalysisConfig = dataclasses.field(default_factory=AnalysisConfig)
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)
    log_every_steps: int = setting(50, ge=0)  # per-step training loss and lr to the loggers; 0: epoch rows only

    def __post_init__(self):
        validate(self)

    @property
    def trained_model(self) -> ModelConfig:
        """The model as the method trains it."""
        return self.method.adapt_model(self.model)


# ---- plain dicts (Hydra's resolved config, config.yaml, sweeps) <-> typed config ---------

def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _mapping(values, where: str) -> dict:
    check(isinstance(values, dict), f"{where} must be a mapping of keys to values (got {values!r:.60})")
    return dict(values)


def _build(cls, values: dict, where: str):
    names = _field_names(cls)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown key '{where}.{unknown[0]}'; valid keys: {', '.join(names)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ConfigError(f"{where}: {error}") from None


def method_from_dict(values: dict) -> MethodConfig:
    from bnnx.methods import method_class

    values = _mapping(values, "method")
    name = values.pop("name", None)
    check(name is not None, "method.name is missing")
    return _build(method_class(name), values, "method")


def model_from_dict(values: dict) -> ModelConfig:
    from bnnx.models import model_options

    values = _mapping(values, "model")
    check("name" in values, "model.name is missing")
    common = {k: values.pop(k) for k in list(values) if k in _field_names(ModelConfig)}
    valid = model_options(common["name"], common.get("target"))
    unknown = sorted(set(values) - set(valid))
    if unknown:
        keys = sorted(set(_field_names(ModelConfig)) - {"options"} | set(valid))
        raise ConfigError(f"unknown key 'model.{unknown[0]}'; valid keys: {', '.join(keys)}")
    return _build(ModelConfig, {**common, "options": {**(common.get("options") or {}), **values}}, "model")


def dataset_from_dict(values: dict) -> DatasetConfig:
    """The data set's config, of the class its name picks (`shapes` states its own shapes)."""
    values = _mapping(values, "dataset")
    return _build(dataset_class(values.get("name", DatasetConfig.name)), values, "dataset")


def config_from_dict(values: dict) -> TrainConfig:
    values = _mapping(values, "the config")
    check("method" in values, "the config has no method")
    parts = {
        "method": method_from_dict(values.pop("method")),
        "model": model_from_dict(values.pop("model", {"name": "mlp"})),
        "dataset": dataset_from_dict(values.pop("dataset", {})),
        "distill": _build(DistillConfig, _mapping(values.pop("distill", None) or {}, "distill"), "distill"),
        "analysis": _build(AnalysisConfig, _mapping(values.pop("analysis", None) or {}, "analysis"), "analysis"),
        "logger": _build(LoggerConfig, _mapping(values.pop("logger", None) or {}, "logger"), "logger"),
    }
    return _build(TrainConfig, {**values, **parts}, "config")


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def flat_dict(values: dict, prefix: str = "") -> dict:
    """A nested dict as one level of dotted keys ({"method": {"lr": 0.1}} -> {"method.lr": 0.1});
    an empty dict stays a value."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(flat_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        out[field.name] = _plain(value)
    return out
