"""`make test` obtains what the suite needs on a fresh machine: .ci/test-data installs Debian's
dataset-fashion-mnist when it is missing (here against a stand-in apt-get that records its calls
and, like a fresh machine, knows the package only after `apt-get update`), or says in one line,
at once, why it cannot."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "test-data"

FAKE_APT = """#!/bin/sh
echo "$*" >> "{log}"
case "$*" in
  *update*) touch "{updated}" ;;
  *install*) [ -f "{updated}" ] || exit 100; mkdir -p "{target}" ;;
esac
"""


def run_script(tmp_path: Path, target: Path, path_dirs: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "FASHION_MNIST_DIR": str(target), "PATH": os.pathsep.join(map(str, path_dirs))}
    return subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def fake_bin(tmp_path: Path, target: Path) -> tuple[Path, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text(FAKE_APT.format(log=log, updated=tmp_path / "updated", target=target))
    apt.chmod(0o755)
    sudo = bin_dir / "sudo"  # passwordless: runs the command (drops -n)
    sudo.write_text('#!/bin/sh\n[ "$1" = "-n" ] && shift\nexec "$@"\n')
    sudo.chmod(0o755)
    return bin_dir, log


def test_missing_data_set_is_installed_updating_the_package_lists_first(tmp_path):
    target = tmp_path / "datasets" / "fashion-mnist"
    bin_dir, log = fake_bin(tmp_path, target)
    result = run_script(tmp_path, target, [bin_dir, Path("/usr/bin"), Path("/bin")])
    assert result.returncode == 0 and target.is_dir(), result.stderr
    calls = log.read_text().splitlines()
    assert [c.split()[-3:] for c in calls] == [["install", "-y", "dataset-fashion-mnist"],  # fails: lists empty
                                                ["-o", "Acquire::http::Timeout=20", "update"],
                                                ["install", "-y", "dataset-fashion-mnist"]]
    assert (
        result.stderr.strip() == "make test: installing Debian's dataset-fashion-mnist for tests/test_fashion_mnist.py"
    )


def test_present_data_set_needs_nothing(tmp_path):
    bin_dir, log = fake_bin(tmp_path, tmp_path / "unused")
    result = run_script(tmp_path, tmp_path, [bin_dir, Path("/usr/bin"), Path("/bin")])
    assert result.returncode == 0 and result.stderr == "" and not log.exists()


def test_a_machine_that_cannot_install_gets_one_line(tmp_path):
    target = tmp_path / "fashion-mnist"
    empty = tmp_path / "empty"  # no apt-get on PATH
    empty.mkdir()
    result = subprocess.run(["/bin/sh", str(SCRIPT)], env={"FASHION_MNIST_DIR": str(target), "PATH": str(empty)},
                            capture_output=True, text=True, timeout=10)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 0 and len(lines) == 1 and not target.exists()
    assert "is missing" in lines[0] and "no apt-get" in lines[0] and "test_fashion_mnist.py will fail" in lines[0]


def test_make_test_runs_the_data_step_before_pytest():
    plan = subprocess.run(["make", "-n", "-W", "pyproject.toml", "test"], cwd=REPO, capture_output=True, text=True,
                          timeout=60).stdout.splitlines()
    data_step = next(i for i, line in enumerate(plan) if ".ci/test-data" in line)
    assert data_step < next(i for i, line in enumerate(plan) if "pytest" in line)
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_make_test_lints_before_pytest():
    plan = subprocess.run(["make", "-n", "-W", "pyproject.toml", "test"], cwd=REPO, capture_output=True, text=True,
                          timeout=60).stdout.splitlines()
    pytest_step = next(i for i, line in enumerate(plan) if "pytest" in line)
    ruff_step = next(i for i, line in enumerate(plan) if "ruff check bnnx tests" in line)
    pyright_step = next(i for i, line in enumerate(plan) if line.endswith("pyright"))
    assert ruff_step < pytest_step and pyright_step < pytest_step
