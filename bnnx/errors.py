"""User-facing errors: the CLI prints them as one line and exits with their code."""


class BnnxError(Exception):
    """Bad input from the user (config, data, checkpoint). Exit code 2."""

    exit_code = 2


class ConfigError(BnnxError):
    """An unknown option, an unknown key or an out-of-range value."""


class DataNotFoundError(BnnxError):
    """A data set that is neither prepared nor fetchable."""


class CheckpointError(BnnxError):
    """A missing, corrupt or incompatible checkpoint."""


class CorruptFileError(BnnxError, ValueError):
    """A results file (JSON, JSON lines, YAML) that does not parse: damaged or cut short."""


def check(condition: bool, message: str, error: type[BnnxError] = ConfigError) -> None:
    """Raise `error(message)` unless `condition` holds."""
    if not condition:
        raise error(message)


def unknown_choice(kind: str, name: str, valid) -> ConfigError:
    return ConfigError(f"unknown {kind} '{name}'; valid options: {', '.join(sorted(valid))}")
