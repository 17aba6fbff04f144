"""Bad input: one line, exit code 2, no traceback, nothing already on disk changed."""

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

BNNX = [sys.executable, "-m", "bnnx.cli.__main__"]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(code, output, *fragments):
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("override, fragments", [
    ("method=nope", ["unknown method 'nope'", "ste", "fp"]),
    ("model=nope", ["unknown model 'nope'", "mlp"]),
    ("dataset=nope", ["unknown dataset 'nope'", "digits"]),
    ("foo=1", ["unknown key 'foo'", "epochs"]),
    ("method.lrr=1", ["unknown key 'method.lrr'", "lr"]),
    ("model.hiddn=[3]", ["unknown key 'model.hiddn'", "hidden"]),
    ("epochs=-1", ["epochs must be >= 1"]),
    ("batch_size=0", ["batch_size must be >= 1"]),
    ("method.lr=-0.1", ["method.lr must be > 0"]),
    ("model.scaling=sideways", ["model.scaling must be one of", "mean_abs", "'sideways'"]),
    ("model.kernel_quantizer=nope", ["model.kernel_quantizer must be one of", "sign_ste", "'nope'"]),
    ("model.kernel_quantizer=ternary", []),  # valid: composes, so no error here (checked below)
])
def test_bad_overrides(run_cli, override, fragments, tmp_path):
    if not fragments:
        code, output = run_cli("train", "--cfg", "job", override)
        assert code == 0
        return
    code, output = run_cli("train", override, f"out_dir={tmp_path / 'run'}")
    assert_one_line_error(code, output, *fragments)
    assert not (tmp_path / "run").exists()


def test_ternary_with_negative_threshold(run_cli, tmp_path):
    code, output = run_cli("train", "model.kernel_quantizer=ternary", "model.kernel_quantizer_args={delta: -0.5}",
                           f"out_dir={tmp_path / 'run'}")
    assert_one_line_error(code, output, "model.kernel_quantizer_args.delta must be >= 0 (got -0.5)")


def test_out_dir_that_is_a_file(run_cli, tmp_path):
    target = tmp_path / "file"
    target.write_text("keep me")
    code, output = run_cli("train", f"out_dir={target}")
    assert_one_line_error(code, output, "is a file")
    assert target.read_text() == "keep me"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    from bnnx.cli.compose import compose_config
    from bnnx.train.loop import train

    run = tmp_path_factory.mktemp("finished") / "run"
    train(compose_config(["epochs=2", f"out_dir={run}"]))
    return run


def test_out_dir_holding_a_run_is_never_overwritten(run_cli, finished_run):
    before = snapshot(finished_run)
    code, output = run_cli("train", f"out_dir={finished_run}")
    assert_one_line_error(code, output, "already holds a run", "resume=true")
    assert snapshot(finished_run) == before


def test_resume_with_a_different_config(run_cli, finished_run):
    before = snapshot(finished_run)
    code, output = run_cli("train", "resume=true", f"out_dir={finished_run}", "method=fp")
    assert_one_line_error(code, output, "cannot resume with a different config")
    assert snapshot(finished_run) == before


def test_resume_with_nothing_to_resume(run_cli, tmp_path):
    (tmp_path / "empty").mkdir()
    code, output = run_cli("train", "resume=true", f"out_dir={tmp_path / 'empty'}")
    assert_one_line_error(code, output, "nothing to resume")


def test_resume_with_missing_checkpoint(run_cli, finished_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(copy / "checkpoints")
    before = snapshot(copy)
    code, output = run_cli("train", "resume=true", f"out_dir={copy}")
    assert_one_line_error(code, output, "no checkpoint to resume")
    assert snapshot(copy) == before


def test_resume_with_corrupt_checkpoint(finished_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(finished_run, copy)
    for path in (copy / "checkpoints").rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"\x00garbage" * 7)
    before = snapshot(copy)
    result = subprocess.run(BNNX + ["train", "resume=true", f"out_dir={copy}"], capture_output=True, text=True, timeout=300)
    assert_one_line_error(result.returncode, result.stdout + result.stderr, "corrupt or incompatible")
    assert snapshot(copy) == before
