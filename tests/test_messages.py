"""What the command line says when something is off: one line that names the fix."""

import json
import signal

from bnnx.train.progress import Progress


def error_line(code, text) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def test_eval_of_a_file_that_is_no_export_says_so_without_suggesting_unpickling(run_cli, tmp_path):
    safetensors = tmp_path / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    safetensors.write_bytes(len(header).to_bytes(8, "little") + header + b"\0\0\0\0")
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"status": "completed"}))
    for path in (safetensors, summary):
        line = error_line(*run_cli("eval", str(path)))
        assert f"{path} is not a bnnx export" in line and "pickle" not in line, line


def test_resume_without_out_dir_asks_for_it(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = error_line(*run_cli("train", "dataset=digits", "resume=true"))
    assert "resume=true needs out_dir=DIR" in line and "runs/" not in line, line
    assert not (tmp_path / "runs").exists()


def test_a_run_interrupted_before_its_first_epoch_shows_no_best_accuracy(run_cli, tmp_path, monkeypatch):
    def interrupt(self, epoch, step):  # Ctrl-C as the first epoch starts: checkpoint after one batch
        signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(Progress, "start_epoch", interrupt)
    code, text = run_cli("train", "dataset=digits", "model.hidden=[16]", "epochs=2", f"out_dir={tmp_path / 'run'}")
    assert code == 130, text
    assert text.strip().splitlines()[-1].startswith("interrupted: test_accuracy=n/a best=n/a epochs=0/2 "), text


def test_a_sweep_files_path_outside_a_checkout_points_to_the_bundled_name(run_cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = error_line(*run_cli("sweep", "sweeps/bnew_cifar.yaml"))
    assert "`bnnx sweep bnew_cifar`" in line, line
    line = error_line(*run_cli("sweep", "sweeps/nothing_like_it.yaml"))
    assert "nothing_like_it" in line and "bnnx sweep" not in line, line
