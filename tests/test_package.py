"""bnnx as an installed package: a wheel built from this checkout, installed into a fresh venv
(offline: the dependencies come from the interpreter running the suite), lists its config
groups, trains and runs a bundled sweep from a folder that is not the checkout. Also --version,
shell completion of `bnnx train` overrides, bundled sweep names and the git commit in provenance."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from bnnx.io import read_json

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "bnnx", "conf", "sweeps")


def run(command: list[str], cwd: Path, env: dict, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bnnx executable of a fresh venv holding only the wheel, an environment without this checkout)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BNNX_CONF")}
    env.update(JAX_COMPILATION_CACHE_DIR=str(REPO / ".pytest_cache" / "jax"),  # the suite's (conftest.py)
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(root / "dist"), str(source)], root, env)
    wheel = next((root / "dist").glob("bnnx-*.whl"))
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], root, env)
    python = venv / "bin" / "python"
    purelib = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root, env
    ).stdout.strip()
    # the dependencies already installed for this interpreter, appended after the venv's own packages
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q", str(wheel)],
        root,
        env,
    )
    return venv / "bin" / "bnnx", env, root


def test_the_wheel_carries_the_configs_and_sweeps(installed):
    bnnx, env, root = installed
    workdir = root / "elsewhere"
    workdir.mkdir(exist_ok=True)
    where = run([str(bnnx.parent / "python"), "-c", "import bnnx; print(bnnx.__file__)"], workdir, env).stdout
    assert where.startswith(str(root / "venv"))  # the installed copy, not this checkout
    listing = run([str(bnnx), "list"], workdir, env).stdout.splitlines()
    groups = dict(line.split(": ", 1) for line in listing)
    assert {"ste", "fp", "bop"} <= set(groups["method"].split(", ")) and "mlp" in groups["model"]
    assert "digits" in groups["dataset"]


def test_the_installed_bnnx_trains_and_sweeps_from_another_folder(installed):
    bnnx, env, root = installed
    workdir = root / "elsewhere"
    workdir.mkdir(exist_ok=True)
    out = run([str(bnnx), "train", "epochs=1", "out_dir=run", "--quiet"], workdir, env).stdout
    summary = read_json(workdir / "run" / "summary.json")
    assert summary["status"] == "completed" and summary["test_accuracy"] > 0.5, out
    assert "git" not in summary["versions"]  # installed, not a checkout
    cells = ["none/cosine", "mean_abs/cosine", "learned/cosine"]
    run([str(bnnx), "sweep", "stable_signs", "--preset", "smoke", "--out", "signs", "--quiet",
         *[arg for cell in cells for arg in ("--only", cell)]], workdir, env)
    statuses = [r["status"] for r in read_json(workdir / "signs" / "sweep.json")["runs"]]
    assert statuses == ["completed"] * 3
    run([str(bnnx), "report", "signs"], workdir, env)
    assert (workdir / "signs" / "report.md").read_text().startswith("#")


def test_version_and_completion_of_train_overrides(run_cli):
    from importlib import metadata

    from bnnx.config.compose import complete_override, group_options

    code, output = run_cli("--version")
    assert code == 0 and output.strip() == f"bnnx {metadata.version('bnnx')}"
    assert complete_override("method=b") == [f"method={m}" for m in group_options("method") if m.startswith("b")]
    assert complete_override("method=b") == ["method=bmd", "method=bnew", "method=bop"]
    assert {"method=", "model=", "dataset=", "epochs="} <= set(complete_override(""))
    assert complete_override("ep") == ["epochs="] and complete_override("epochs=3") == []


def test_shell_completion_through_the_cli():
    env = {**os.environ, "_BNNX_COMPLETE": "complete_bash", "COMP_WORDS": "bnnx train model=res", "COMP_CWORD": "2"}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv = ['bnnx']; from bnnx.cli import main; main()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.split() == ["model=resnet18", "model=resnet20", "model=resnet50"], result.stderr


def test_a_bundled_sweep_by_name_and_an_unknown_name(run_cli, tmp_path):
    from bnnx.cli.sweep import resolve_sweep_file
    from bnnx.resources import bundled_sweeps, sweeps_dir

    assert resolve_sweep_file(Path("bnew_cifar")) == sweeps_dir() / "bnew_cifar.yaml"
    assert {"bnew_cifar", "stable_signs"} <= set(bundled_sweeps())
    code, output = run_cli("sweep", "no_such_table", "--preset", "smoke", "--dry-run")
    assert code == 2 and "bundled: " in output and "bnew_cifar" in output


def test_provenance_records_the_checkout_commit():
    from bnnx.train.provenance import git_commit, versions

    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    assert git_commit() == {"commit": head, "dirty": dirty} and len(head) == 40
    assert versions()["git"] == git_commit()
