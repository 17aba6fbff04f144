"""The CLI's persistent compilation cache: a second process of the same shapes compiles nothing new."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax

from bnnx.cli.jax_cache import configure, default_cache_dir

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("train", "model.hidden=[16]", "epochs=1", "-q")


def bnnx(*args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-m", "bnnx.cli.__main__", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def test_a_second_run_of_the_same_shapes_loads_every_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    bnnx(*TRAIN, f"out_dir={tmp_path / 'first'}", env_extra={"BNNX_JAX_CACHE": str(cache)})
    written = entries(cache)
    assert written, "the first run wrote nothing to the cache"
    bnnx("--jax-cache", str(cache), *TRAIN, f"out_dir={tmp_path / 'second'}")
    assert entries(cache) == written  # every compiled program of the second run was found there


def test_no_jax_cache_writes_nothing(tmp_path):
    cache = tmp_path / "cache"
    bnnx("--no-jax-cache", *TRAIN, f"out_dir={tmp_path / 'run'}", env_extra={"BNNX_JAX_CACHE": str(cache)})
    assert not entries(cache)


def test_default_folder_and_an_already_configured_one(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "bnnx" / "jax"
    configured = jax.config.jax_compilation_cache_dir  # the test session's own (conftest.py)
    assert configured and configure(None) == Path(configured)
    assert jax.config.jax_compilation_cache_dir == configured


def test_worker_processes_inherit_the_cache_settings(tmp_path, monkeypatch):
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_ENABLE_COMPILATION_CACHE",
                 "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"):
        monkeypatch.setenv(name, "")  # so that monkeypatch puts back what was there, or nothing
        monkeypatch.delenv(name)
    before = {name: getattr(jax.config, name) for name in ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
                                                           "jax_persistent_cache_min_compile_time_secs")}
    try:
        assert configure(tmp_path / "c") == tmp_path / "c"
        assert os.environ["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "c")
        assert os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0.0"
        child = subprocess.run([sys.executable, "-c", "import jax; print(jax.config.jax_compilation_cache_dir)"],
                               capture_output=True, text=True, timeout=120)
        assert child.stdout.strip() == str(tmp_path / "c")
        assert configure(None, enabled=False) is None and os.environ["JAX_ENABLE_COMPILATION_CACHE"] == "false"
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
