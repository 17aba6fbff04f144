"""One writer per run folder: a second `bnnx train`/`bnnx sweep` on a folder a live process writes
exits 2 with one line; a killed writer's lock is taken over. Real processes, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnnx.errors import BnnxError
from bnnx.io import read_json, read_jsonl
from bnnx.lock import FolderBusyError, FolderLock, is_locked
from test_bad_input import assert_one_line_error, snapshot

BNNX = [sys.executable, "-m", "bnnx.cli.__main__"]
RUN = ["epochs=4", "batch_size=8", "model.hidden=[16]", "checkpoint_every=1", "--quiet"]  # a checkpoint to wait for


def start_writer(run: Path) -> subprocess.Popen:
    return subprocess.Popen(BNNX + ["train", *RUN, f"out_dir={run}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_checkpoint(run: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if len(read_jsonl(run / "metrics.jsonl")) >= 1 and (run / "checkpoints").is_dir() and \
                any(p.name.isdigit() for p in (run / "checkpoints").iterdir()):
            return
        time.sleep(0.05)
    pytest.fail(f"the writer checkpointed nothing: {process.communicate()[0] if process.poll() is not None else ''}")


def stop(process: subprocess.Popen) -> None:
    """SIGSTOP and wait until the kernel reports every thread stopped: the signal is delivered
    asynchronously, and a checkpoint thread may write a file until then."""
    process.send_signal(signal.SIGSTOP)
    deadline = time.time() + 30
    while time.time() < deadline:
        if all(thread_state(stat) == "T" for stat in Path(f"/proc/{process.pid}/task").glob("*/stat")):
            return
        time.sleep(0.01)
    pytest.fail(f"pid {process.pid} did not stop")


def thread_state(stat: Path) -> str:
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:  # the thread ended
        return "T"


def bnnx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(BNNX + list(args), capture_output=True, text=True, timeout=300)


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    run = tmp_path / "run"
    writer = start_writer(run)
    try:
        wait_for_checkpoint(run, writer)
        stop(writer)  # alive, holding its lock, while the second one tries
        before = snapshot(run)
        second = bnnx("train", "resume=true", f"out_dir={run}", "--quiet")
        assert_one_line_error(second.returncode, second.stdout + second.stderr, "being written by another bnnx process",
                              f"pid {writer.pid}")
        assert snapshot(run) == before
    finally:
        writer.send_signal(signal.SIGCONT)
    output, _ = writer.communicate(timeout=300)
    assert writer.returncode == 0, output
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["epochs_done"] == 4
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 3]
    assert not (run / ".lock").exists()  # released and removed when the run ends


def test_a_killed_writers_lock_is_taken_over_by_a_resume(tmp_path):
    run = tmp_path / "run"
    writer = start_writer(run)
    wait_for_checkpoint(run, writer)
    writer.send_signal(signal.SIGKILL)
    writer.communicate(timeout=60)
    assert (run / ".lock").exists() and not is_locked(run)  # the file stays; the kernel dropped the lock
    resumed = bnnx("train", "resume=true", f"out_dir={run}", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(run / "summary.json")["status"] == "completed"
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1, 2, 3]


def test_a_sweep_folder_or_cell_held_by_a_live_process_is_refused(tmp_path):
    from bnnx.resources import sweeps_dir
    from bnnx.sweeps import load_spec
    from bnnx.sweeps.plan import plan_runs

    sweep_out = tmp_path / "sweep"
    args = ["sweep", "stable_signs", "--preset", "smoke", "--out", str(sweep_out), "--quiet"]
    sweep_out.mkdir()
    with FolderLock(sweep_out, "sweep"):
        result = bnnx(*args)
    assert_one_line_error(result.returncode, result.stdout + result.stderr, "being written by another bnnx process")
    assert list(sweep_out.iterdir()) == []  # nothing written
    first_run = plan_runs(load_spec(sweeps_dir() / "stable_signs.yaml"), "smoke", sweep_out.absolute(),
                          None, None, {})[0]
    first_run.run_dir.mkdir(parents=True)
    with FolderLock(first_run.run_dir):  # e.g. a `bnnx train` the user started into the sweep's folder
        result = bnnx(*args)
    assert_one_line_error(result.returncode, result.stdout + result.stderr, f"{first_run.cell} seed 0",
                          "being written by another")
    assert not (sweep_out / "sweep.json").exists()


def test_the_lock_excludes_within_one_process_and_is_free_after_release(tmp_path):
    holder = FolderLock(tmp_path).acquire()
    with pytest.raises(FolderBusyError) as refused:
        FolderLock(tmp_path).acquire()
    assert isinstance(refused.value, BnnxError) and f"pid {os.getpid()}" in str(refused.value)
    assert is_locked(tmp_path)
    holder.release()
    assert not is_locked(tmp_path) and not (tmp_path / ".lock").exists()
    with FolderLock(tmp_path):
        assert is_locked(tmp_path)


def test_parallel_workers_never_train_one_cell_twice(tmp_path):
    """Two joblib workers handed the same cell: one trains it, the other is refused, whether it
    tries while the first holds the lock or after the run is there; the record is one run's."""
    from bnnx.config import config_to_dict
    from bnnx.config.compose import compose_config
    from bnnx.sweeps.launchers import JoblibLauncher

    run = tmp_path / "cell" / "seed0"
    job = {"config": config_to_dict(compose_config(["epochs=2", "model.hidden=[16]", f"out_dir={run}"])),
           "resume": False}
    outcomes = sorted((o for _, o in JoblibLauncher(2).launch([job, dict(job)])), key=lambda o: o["status"])
    assert [o["status"] for o in outcomes] == ["completed", "failed"]
    assert (
        "being written by another bnnx process" in outcomes[1]["error"] or "already holds a run" in outcomes[1]["error"]
    )
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [0, 1]
    assert read_json(run / "summary.json")["status"] == "completed"
