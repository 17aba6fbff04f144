"""The cluster path end to end: a sweep through Hydra's submitit launcher plugin, run by
submitit's local executor (each job a process of its own, as on a Slurm node), with seeds
vmapped per job; then the same command again finds every run done."""

from __future__ import annotations

from bnnx.io import read_json
from bnnx.resources import sweeps_dir


def test_a_sweep_runs_through_the_submitit_launcher(run_cli, tmp_path):
    out = tmp_path / "signs"
    args = ["sweep", str(sweeps_dir() / "stable_signs.yaml"), "--preset", "smoke", "--only", "none/cosine", "--seeds", "2",
            "--launcher", "submitit_local", "--launcher-opt", "timeout_min=10", "--out", str(out), "-q",
            "--vmap-seeds"]
    code, output = run_cli(*args)
    assert code == 0, output + (out / ".launch" / "wave1.log").read_text()
    assert "2 runs (2 completed)" in output
    index = read_json(out / "sweep.json")
    assert index["launcher"] == "submitit_local" and [r["status"] for r in index["runs"]] == ["completed"] * 2
    for seed in (0, 1):
        summary = read_json(out / "none" / "cosine" / f"seed{seed}" / "summary.json")
        assert summary["status"] == "completed" and summary["vmapped_seeds"] == [0, 1]
        assert summary["test_accuracy"] > 0.3  # 2 epochs of a 32-32 MLP on digits learn
    assert any((out / ".submitit").iterdir())  # submitit's own job folders and logs
    code, output = run_cli(*args)
    assert code == 0 and "2 already done, 0 run now" in output, output
    code, output = run_cli("report", str(out))
    assert code == 0, output
