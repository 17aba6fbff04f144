"""One source of defaults: every config node's defaults are its dataclass's, handed to Hydra.

`register_defaults()` stores, in Hydra's ConfigStore, a `base_<option>` node per option of each
group (`method/base_ste`, `model/base_mlp`, ...) and `base_config` for the top-level keys, each
built from the dataclass fields (`STE`, `ModelConfig` plus the flax module's attributes,
`DatasetConfig`, `LoggerConfig`, `TrainConfig`). A YAML option lists its base first in its
defaults list and states only what differs, so no default is written twice.

The nodes are plain dicts, not the dataclasses: OmegaConf cannot type several fields
(`int | Literal["all"]`, `dict | None`, tuples of dicts, a model's options, which come from its
flax module), and the dataclasses' `__post_init__` checks every value once the config is built.
"""

from __future__ import annotations

import dataclasses
from typing import Any

GROUPS = ("method", "model", "dataset", "logger")
# TrainConfig's fields that are config groups, not top-level keys
_GROUP_FIELDS = frozenset(GROUPS)


def _plain(value: Any) -> Any:
    """A default as OmegaConf holds it: tuples become lists, recursively."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def field_defaults(cls, skip=()) -> dict:
    """{field name: its default} of a dataclass, in declaration order (fields without a default
    are left out: a method's config has none)."""
    out = {}
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        if field.default is not dataclasses.MISSING:
            out[field.name] = _plain(field.default)
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
            out[field.name] = field_defaults(type(default)) if dataclasses.is_dataclass(default) else _plain(default)
    return out


def _named(name: str, defaults: dict) -> dict:
    return {"name": name, **{k: v for k, v in defaults.items() if k != "name"}}


def method_defaults(name: str) -> dict:
    from bnnx.methods import method_class

    return _named(name, field_defaults(method_class(name)))


def model_defaults(name: str) -> dict:
    """The quantization policy's defaults (ModelConfig) and the module's own attributes; a zoo
    model's config has no `target`/`rules` (only plain flax models take them)."""
    from bnnx.models import EXTERNAL, ModelConfig, model_options

    if name == EXTERNAL:
        return _named(name, field_defaults(ModelConfig))
    common = field_defaults(ModelConfig, skip=("options", "target", "rules"))
    return _named(name, {**common, **_plain(model_options(name))})


def dataset_defaults(name: str) -> dict:
    from bnnx.data import dataset_class

    return _named(name, field_defaults(dataset_class(name)))


def logger_defaults(name: str) -> dict:
    from bnnx.config.config import LoggerConfig

    return _named(name, field_defaults(LoggerConfig))


def top_level_defaults() -> dict:
    """TrainConfig's keys that are not config groups, with their defaults."""
    from bnnx.config.config import TrainConfig

    return field_defaults(TrainConfig, skip=_GROUP_FIELDS)


def group_defaults() -> dict[str, dict[str, dict]]:
    """{group: {option: its defaults}} for every option bnnx defines."""
    from bnnx.config.config import LOGGERS
    from bnnx.data import DATASETS
    from bnnx.methods import METHODS
    from bnnx.models import EXTERNAL, MODELS

    return {
        "method": {name: method_defaults(name) for name in METHODS},
        "model": {name: model_defaults(name) for name in (*MODELS, EXTERNAL)},
        "dataset": {name: dataset_defaults(name) for name in DATASETS},
        "logger": {name: logger_defaults(name) for name in LOGGERS},
    }


_registered = False


def register_defaults() -> None:
    """Store every default in Hydra's ConfigStore (once per process)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="base_config", node=top_level_defaults())
    for group, options in group_defaults().items():
        for option, node in options.items():
            store.store(group=group, name=f"base_{option}", node=node)
    _registered = True
