"""Hydra composition: the only place bnnx touches Hydra. Turns overrides into a typed TrainConfig.

`compose_config` (also `bnnx.compose`) is the library's one way to do it: the CLI, sweeps, benches
and notebooks call it with the overrides `bnnx train` takes, e.g.
`bnnx.compose(["method=rpr", "model=mlp", "epochs=5"])`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, cast

from bnnx.errors import ConfigError
from bnnx.resources import conf_dir

if TYPE_CHECKING:
    from bnnx.config.config import TrainConfig

CONF_DIR = conf_dir()
GROUPS = ("method", "model", "dataset", "logger")
# what the runs of a sweep's cell may differ in: they share one composition, and a vectorised
# group of seeds one program (bnnx.train.seeds)
PER_RUN_KEYS = ("seed", "out_dir", "resume")


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
    from bnnx.config.defaults import top_level_defaults

    return sorted([*top_level_defaults(), *GROUPS])


def _check_group_choices(overrides: list[str]) -> None:
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        if key in GROUPS and value and value not in group_options(key):
            raise ConfigError(f"unknown {key} '{value}'; valid options: {', '.join(group_options(key))}")


def compose_dict(overrides: list[str], composed: dict | None = None) -> dict:
    """The resolved config as a plain dict, or a one-line ConfigError. With a `composed` cache
    (see `sweep_composer`), Hydra composes each set of overrides but the per-run ones once."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _check_group_choices(overrides)
    shared, per_run = (list(overrides), []) if composed is None else _split_per_run(overrides)
    try:
        cfg = _composition(shared, composed)
        _set_values(cfg, per_run)
        return cast(dict, OmegaConf.to_container(cfg, resolve=True))  # a DictConfig gives a dict
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_one_line(str(error), overrides)) from None


def _composition(overrides: list[str], composed: dict | None):
    """Hydra's composition of `overrides`, or a copy of the one cached in `composed`."""
    import copy

    if composed is None:
        return _hydra_compose(overrides)
    if tuple(overrides) not in composed:
        composed[tuple(overrides)] = _hydra_compose(overrides)
    return copy.deepcopy(composed[tuple(overrides)])


def _hydra_compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from bnnx.config.defaults import register_defaults

    register_defaults()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def _split_per_run(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the other overrides, the plain `seed=`/`out_dir=` ones), or (all, none) when a per-run
    key is also added or deleted (`+seed=`, `~out_dir`): Hydra's order matters then."""
    keys = [override.partition("=")[0] for override in overrides]
    if any(key != key.lstrip("+~") and key.lstrip("+~") in PER_RUN_KEYS for key in keys):
        return list(overrides), []
    return ([o for o, key in zip(overrides, keys) if key not in PER_RUN_KEYS],
            [o for o, key in zip(overrides, keys) if key in PER_RUN_KEYS])


def _set_values(cfg, overrides: list[str]) -> None:
    """Apply plain `key=value` overrides to a composed config as Hydra applies them after
    composing (its parser for the value, then OmegaConf.update; interpolations resolve later)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    if not overrides:
        return
    for override in OverridesParser.create().parse_overrides(overrides):
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)


def _one_line(message: str, overrides: list[str]) -> str:
    text = " ".join(message.split())
    if "not in struct" in text or "Could not override" in text or "Could not append" in text:
        key = text.split("'")[1] if "'" in text else "?"
        group = key.split(".")[0]
        if "." in key and group in GROUPS + ("distill", "analysis"):
            others = [o for o in overrides if not o.lstrip("+~").startswith(group + ".")]
            valid = sorted(k for k in compose_dict(others)[group] if k != "name")
            return f"unknown key '{key}'; valid {group} keys: {', '.join(valid)}{_append_hint(text)}"
        return f"unknown key '{key}'; valid top-level keys: {', '.join(_top_level_keys())}{_append_hint(text)}"
    return text[:300]


def _append_hint(text: str) -> str:
    """Hydra's own hint, when a key it refused can be added with `+`."""
    hint = text.partition("To append to your config use ")[2].strip()
    return f" (to add it: {hint})" if hint else ""


def compose_config(overrides: list[str]) -> TrainConfig:
    """The typed config that `bnnx train OVERRIDES` runs, from Hydra overrides such as
    `["method=bop", "model.hidden=[512,512]", "epochs=10"]`; bad input is a one-line ConfigError."""
    from bnnx.config.config import config_from_dict

    return config_from_dict(compose_dict(overrides))


def sweep_composer() -> Callable[[list[str]], TrainConfig]:
    """`compose_config` for the runs of one sweep command: runs that differ only in seed and
    out_dir (a cell's seeds) share one Hydra composition, and each gets the config, hence the
    config.yaml, that `compose_config` gives it. The cache lives as long as the function."""
    from bnnx.config.config import config_from_dict

    composed: dict = {}
    return lambda overrides: config_from_dict(compose_dict(overrides, composed))


def config_yaml(overrides: list[str]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(compose_dict(overrides)))
