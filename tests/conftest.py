"""Shared fixtures: the embedded digits set and config composition through the real CLI path."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_configure(config):
    """Share compiled steps across tests: many build the same model and method, and XLA
    compilation dominates this suite's CPU time."""
    import jax

    cache = config.rootpath / ".pytest_cache" / "jax"
    jax.config.update("jax_compilation_cache_dir", str(cache))
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))  # and the CLI processes tests start
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(scope="session")
def digits():
    from bnnx.data.digits import load_digits_dataset

    return load_digits_dataset()


@pytest.fixture
def compose():
    """compose(*overrides) -> TrainConfig, exactly as `bnnx train OVERRIDES` builds it."""
    from bnnx.config.compose import compose_config

    return lambda *overrides: compose_config(list(overrides))


@pytest.fixture
def run_cli(tmp_path):
    """Run the CLI in-process; returns (exit_code, stdout+stderr)."""
    from typer.testing import CliRunner

    from bnnx.cli import _register_commands, app

    _register_commands()
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, list(args), catch_exceptions=False)
        return result.exit_code, result.output

    return run
