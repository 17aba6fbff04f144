"""The cluster paths end to end, each on this machine: a sweep through Hydra's submitit launcher
plugin, run by submitit's local executor (each job a process of its own, as on a Slurm node),
and through the ray launcher plugin, against a Ray instance that the sweep starts itself; then
the same command again finds every run done, and `bnnx report` reads the folder."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from bnnx.io import read_json
from bnnx.resources import sweeps_dir


def smoke_sweep(out: Path, *launcher_args: str) -> list[str]:
    """One cell of the stable-signs table, 2 seeds of its smoke preset."""
    return ["sweep", str(sweeps_dir() / "stable_signs.yaml"), "--preset", "smoke", "--only", "none/cosine",
            "--seeds", "2", *launcher_args, "--out", str(out), "-q"]


def run_resume_and_report(run_cli, args: list[str], out: Path, launcher: str) -> list[dict]:
    """Run the sweep, run it again (nothing left to do), write its report; the runs' summaries."""
    code, output = run_cli(*args)
    assert code == 0, output + (out / ".launch" / "wave1.log").read_text()
    assert "2 runs (2 completed)" in output
    index = read_json(out / "sweep.json")
    assert index["launcher"] == launcher and [r["status"] for r in index["runs"]] == ["completed"] * 2
    summaries = [read_json(out / "none" / "cosine" / f"seed{seed}" / "summary.json") for seed in (0, 1)]
    for summary in summaries:
        assert summary["status"] == "completed"
        assert summary["test_accuracy"] > 0.3  # 2 epochs of a 32-32 MLP on digits learn
    code, output = run_cli(*args)
    assert code == 0 and "2 already done, 0 run now" in output, output
    code, output = run_cli("report", str(out))
    assert code == 0, output
    return summaries


def test_a_sweep_runs_through_the_submitit_launcher(run_cli, tmp_path):
    out = tmp_path / "signs"
    args = smoke_sweep(out, "--launcher", "submitit_local", "--launcher-opt", "timeout_min=10", "--vmap-seeds")
    for summary in run_resume_and_report(run_cli, args, out, "submitit_local"):
        assert summary["vmapped_seeds"] == [0, 1]
    assert any((out / ".submitit").iterdir())  # submitit's own job folders and logs


# ---- Ray -----------------------------------------------------------------------------------

# Ray's sockets are <temp dir>/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store, and
# a unix socket's path has at most 107 bytes: that leaves 44 for the temp dir, less than tmp_path.
RAY_TEMP_DIR_MAX = 44


@pytest.fixture
def ray_temp_dir(tmp_path_factory, monkeypatch):
    """A temp dir for a local Ray instance, in pytest's own when its path is short enough, and an
    environment that keeps Ray offline and out of ~/.ray; what the instance leaves running is
    ended when the test does."""
    folder = tmp_path_factory.mktemp("ray")
    if len(str(folder)) > RAY_TEMP_DIR_MAX:
        folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    # with no token at hand, a new instance generates one and saves it to ~/.ray/auth_token
    monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # it would win over `address=local`: join a running cluster
    yield folder
    for pid in processes_using(folder):
        os.kill(pid, signal.SIGKILL)
    if not folder.is_relative_to(tmp_path_factory.getbasetemp()):
        shutil.rmtree(folder, ignore_errors=True)


def processes_using(folder: Path) -> list[int]:
    """Processes naming `folder` on their command line or holding a file in it: every process of a
    Ray instance whose temp dir it is (its workers only through their log files)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int(proc.name) != os.getpid() and uses(proc, str(folder)):
                pids.append(int(proc.name))
        except OSError:  # the process ended while we looked
            continue
    return pids


def uses(proc: Path, folder: str) -> bool:
    command_line = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return folder in command_line or any(path.startswith(folder + "/") for path in open_files(proc))


def open_files(proc: Path) -> Iterator[str]:
    for fd in (proc / "fd").iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            yield os.readlink(fd)


def ray_processes_left(folder: Path, patience_s: float = 10.0) -> list[int]:
    """The instance's processes still running `patience_s` after its driver ended (a process may
    take a moment to exit once the driver has asked it to)."""
    deadline = time.monotonic() + patience_s
    while (pids := processes_using(folder)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return pids


def test_a_sweep_runs_through_the_ray_launcher(run_cli, tmp_path, ray_temp_dir):
    out = tmp_path / "signs"
    ray_init = {"address": "local", "num_cpus": 2, "include_dashboard": "false",
                "object_store_memory": 75 * 2**20,  # Ray's minimum: its default takes 30% of the RAM
                "_temp_dir": ray_temp_dir}
    args = smoke_sweep(out, "--launcher", "ray", *(f"--launcher-opt=ray.init.{k}={v}" for k, v in ray_init.items()))
    for summary in run_resume_and_report(run_cli, args, out, "ray"):
        assert "vmapped_seeds" not in summary  # one Ray task per seed
    assert (ray_temp_dir / "session_latest" / "logs").is_dir()  # the instance kept its files where it was told
    assert ray_processes_left(ray_temp_dir) == []
