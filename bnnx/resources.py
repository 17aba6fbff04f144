"""Where bnnx's bundled files are: the config groups (conf/) and the paper tables (sweeps/).

In a checkout they are the repository's top-level folders; an installed wheel carries them
inside the package as bnnx/conf and bnnx/sweep_files (see setup.py)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _bundled(packaged: str, checkout: str) -> Path:
    installed = PACKAGE_DIR / packaged
    return installed if installed.is_dir() else PACKAGE_DIR.parent / checkout


def conf_dir() -> Path:
    return Path(os.environ["BNNX_CONF"]) if os.environ.get("BNNX_CONF") else _bundled("conf", "conf")


def sweeps_dir() -> Path:
    return _bundled("sweep_files", "sweeps")


def bundled_sweeps() -> list[str]:
    return sorted(p.stem for p in sweeps_dir().glob("*.yaml"))


def checkout_root() -> Path | None:
    """The git checkout bnnx runs from, or None for an installed package."""
    root = PACKAGE_DIR.parent
    return root if (root / ".git").exists() else None
