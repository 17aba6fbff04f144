"""The cluster path end to end: a sweep through Hydra's submitit launcher plugin, run by
submitit's local executor (each job a process of its own, as on a Slurm node), with seeds
vmapped per job; then the same command again finds every run done, and `bnnx report` reads
the folder."""

from __future__ import annotations

from pathlib import Path

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
