"""Typed run configuration and its composition from overrides.

`config.py` holds the dataclasses (`TrainConfig` and its parts) and their plain-dict form,
`schema.py` the field checks every config class runs, `compose.py` the composition of Hydra
overrides into a `TrainConfig`. Names are imported on first use: `bnnx.config.schema` sits below
the methods, models and data sets whose configs `config.py` gathers, so this package must not
import `config.py` when a method imports the schema.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bnnx.config.compose import PER_RUN_KEYS, compose_config, config_yaml
    from bnnx.config.config import (
        AnalysisConfig,
        DistillConfig,
        LoggerConfig,
        TrainConfig,
        config_from_dict,
        config_to_dict,
        flat_dict,
        method_from_dict,
        model_from_dict,
    )

__all__ = ["PER_RUN_KEYS", "AnalysisConfig", "DistillConfig", "LoggerConfig", "TrainConfig", "compose_config",
           "config_from_dict", "config_to_dict", "config_yaml", "flat_dict", "method_from_dict", "model_from_dict"]
_COMPOSE = ("PER_RUN_KEYS", "compose_config", "config_yaml")


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module 'bnnx.config' has no attribute {name!r}")
    return getattr(importlib.import_module("bnnx.config.compose" if name in _COMPOSE else "bnnx.config.config"), name)
