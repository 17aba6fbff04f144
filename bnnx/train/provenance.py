"""What a run records about where it ran."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from typing import Any

from bnnx.resources import checkout_root


def versions() -> dict[str, str]:
    out: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for package in ("bnnx", "jax", "jaxlib", "flax", "optax", "numpy", "orbax-checkpoint", "tensorflow-datasets"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    try:
        import jax

        out["device"] = jax.devices()[0].device_kind
    except Exception:  # no backend is not a reason to fail a record
        out["device"] = "unknown"
    commit = git_commit()
    if commit is not None:
        out["git"] = commit
    return out


def git_commit() -> dict | None:
    """{"commit": sha, "dirty": bool} of the checkout bnnx runs from; None when installed (or no git)."""
    root = checkout_root()
    if root is None:
        return None
    try:
        sha = _git(root, "rev-parse", "HEAD")
        changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": sha, "dirty": bool(changes)}


def _git(root, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                          timeout=10).stdout.strip()
