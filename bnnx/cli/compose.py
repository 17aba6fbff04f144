"""Hydra composition: the only place bnnx touches Hydra. Turns overrides into a typed TrainConfig."""

from __future__ import annotations

from pathlib import Path

from bnnx.errors import ConfigError
from bnnx.resources import conf_dir

CONF_DIR = conf_dir()
GROUPS = ("method", "model", "dataset", "logger")


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def complete_override(incomplete: str) -> list[str]:
    """Shell completion of a `bnnx train` override: a group's options after `group=`, else the
    groups and top-level keys."""
    key, equal, value = incomplete.partition("=")
    if equal and key in GROUPS:
        return [f"{key}={option}" for option in group_options(key) if option.startswith(value)]
    if equal:
        return []
    return [f"{name}=" for name in _top_level_keys() if name.startswith(incomplete)]


def _top_level_keys() -> list[str]:
    from omegaconf import OmegaConf

    keys = OmegaConf.load(CONF_DIR / "config.yaml").keys()
    return sorted([k for k in keys if k != "defaults"] + list(GROUPS))


def _check_group_choices(overrides: list[str]) -> None:
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in GROUPS and value and value not in group_options(key):
            raise ConfigError(f"unknown {key} '{value}'; valid options: {', '.join(group_options(key))}")


def compose_dict(overrides: list[str]) -> dict:
    """The resolved config as a plain dict, or a one-line ConfigError."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose(config_name="config", overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_one_line(str(error), overrides)) from None


def _one_line(message: str, overrides: list[str]) -> str:
    text = " ".join(message.split())
    if "not in struct" in text or "Could not override" in text or "Could not append" in text:
        key = text.split("'")[1] if "'" in text else "?"
        group = key.split(".")[0]
        if "." in key and group in GROUPS + ("distill", "analysis"):
            others = [o for o in overrides if not o.lstrip("+~").startswith(group + ".")]
            valid = sorted(k for k in compose_dict(others)[group] if k != "name")
            return f"unknown key '{key}'; valid {group} keys: {', '.join(valid)}"
        return f"unknown key '{key}'; valid top-level keys: {', '.join(_top_level_keys())}"
    return text[:300]


def compose_config(overrides: list[str]):
    from bnnx.config import config_from_dict

    return config_from_dict(compose_dict(overrides))


def config_yaml(overrides: list[str]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(compose_dict(overrides)))


def load_run_config(run_dir: Path):
    """The typed config a run recorded in its config.yaml (one-line error if it is not a run)."""
    from bnnx.train.restore import read_run_config

    return read_run_config(run_dir)
