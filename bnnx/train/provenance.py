"""What a run records about where it ran."""

from __future__ import annotations

import platform
import sys
from importlib import metadata


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
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
    return out
