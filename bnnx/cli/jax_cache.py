"""JAX's persistent compilation cache for every `bnnx` command.

On by default in a user cache folder ($XDG_CACHE_HOME/bnnx/jax, else ~/.cache/bnnx/jax), so a
second run of the same shapes loads its compiled steps instead of compiling them again
(seconds per run on a CPU, most of a digits run). `--jax-cache DIR` or $BNNX_JAX_CACHE choose the
folder, `--no-jax-cache` turns it off. Only the command line sets it: library users keep JAX's
own settings, and a cache folder already configured (JAX_COMPILATION_CACHE_DIR, or a program
embedding the CLI) is kept unless a folder is given explicitly. The folder is not pruned
(JAX's size limit needs the `filelock` package); delete it to reclaim space.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV_VAR = "BNNX_JAX_CACHE"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bnnx" / "jax"


def configure(folder: Path | None, enabled: bool = True) -> Path | None:
    """Point JAX's compilation cache at `folder` (None: the default, unless one is configured
    already); returns the folder in use, or None when the cache is off."""
    import jax

    if not enabled:
        _set(jax, jax_enable_compilation_cache=False)
        return None
    configured = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue] (set at runtime)
    if folder is None and configured:
        return Path(configured)
    folder = Path(folder) if folder is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"warning: JAX compilation cache off: cannot create {folder}: {error.strerror or error}", file=sys.stderr)
        _set(jax, jax_enable_compilation_cache=False)
        return None
    # bnnx's steps compile in well under JAX's default 1 s threshold on small models, and those
    # are the runs where compilation is most of the time
    _set(jax, jax_enable_compilation_cache=True, jax_compilation_cache_dir=str(folder),
         jax_persistent_cache_min_compile_time_secs=0.0, jax_persistent_cache_min_entry_size_bytes=0)
    return folder


def _set(jax, **settings) -> None:
    """Set JAX's config here and in the environment, so that worker processes a command starts
    (a sweep's local jobs, cluster launchers) use the same cache."""
    for name, value in settings.items():
        jax.config.update(name, value)
        os.environ[name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
