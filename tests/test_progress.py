"""What a run prints while it trains: one flushed line per epoch, also into a pipe."""

import os
import signal
import subprocess
import sys

from bnnx.train.progress import epoch_line

BNNX = [sys.executable, "-m", "bnnx.cli.__main__"]


def test_epoch_lines_reach_a_pipe_while_the_run_goes_on(tmp_path):
    """The first epoch's line is read from the pipe, then the run is interrupted: had the line
    waited in a buffer until exit, the run would have finished all its epochs first."""
    epochs = 300
    command = [*BNNX, "train", "dataset=digits", "model.hidden=[16]", f"epochs={epochs}", f"out_dir={tmp_path / 'run'}"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # block-buffered, as into a pipe
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=120)
    finally:
        process.kill()
    assert first.startswith(f"epoch 1/{epochs} train_loss "), (first, errors)
    assert process.returncode == 130, errors
    lines = rest.strip().splitlines()
    done = int(lines[-1].split("epochs=")[1].split("/")[0])
    assert lines[-1].startswith("interrupted: ") and 1 <= done < epochs, rest
    assert [line.split(" train_loss")[0] for line in lines[:-1]] == [f"epoch {e}/{epochs}" for e in range(2, done + 1)]
    assert "\r" not in first + rest and "━" not in errors  # no live bar off a terminal


def test_epoch_line_names_every_figure():
    row = {"epoch": 2, "train_loss": 0.41234, "train_accuracy": 0.881, "test_loss": 0.399, "test_accuracy": 0.89125,
           "epoch_time_s": 1.234}
    assert epoch_line(row, 10) == ("epoch 3/10 train_loss 0.4123 train_acc 0.8810 test_loss 0.3990 "
                                   "test_acc 0.8912 time 1.2s")


def test_the_sweep_bar_fits_80_columns_with_long_names_and_counts():
    import io

    from rich.console import Console
    from rich.progress import Progress as RichProgress

    from bnnx.sweeps.progress import NAME, SweepProgress, _cut, columns

    view = SweepProgress("a_very_long_sweep_name-paper", 1200, 3, quiet=True)
    view.counts.update({"failed": 12, "diverged": 3})
    view.started("a_cell_with_a_long_name/seed12")
    screen = io.StringIO()
    console = Console(file=screen, width=200, color_system=None)
    bar = RichProgress(*columns(), console=console)
    bar.add_task(_cut(view.name, NAME), total=1200, completed=345, stats=view.stats())
    console.print(bar.make_tasks_table(bar.tasks))
    (line,) = screen.getvalue().strip("\n").splitlines()
    assert len(line.rstrip()) <= 80 and "345/1200" in line and "diverged 3" in line, line

    view.counts.clear()
    assert view.stats() == "running 1 (a_cell_wi…)"


def test_preparing_a_local_copy_prints_one_line(tmp_path, run_cli):
    import numpy as np

    rng = np.random.default_rng(0)
    for stem, n in (("train", 20), ("t10k", 10)):
        for kind, shape in (("images-idx3", (n, 28, 28)), ("labels-idx1", (n,))):
            array = rng.integers(0, 10 if kind.startswith("labels") else 256, shape).astype(np.uint8)
            header = b"".join(v.to_bytes(4, "big") for v in (0x0800 + array.ndim, *array.shape))
            (tmp_path / f"{stem}-{kind}-ubyte").write_bytes(header + array.tobytes())
    code, text = run_cli("data", "prepare", "mnist", "--from", str(tmp_path), "--data-dir", str(tmp_path / "tfds"))
    assert code == 0, text
    folder = tmp_path / "tfds" / "mnist" / "3.0.1"
    assert text.strip().splitlines() == [f"mnist is ready in {folder} (20 training examples)"]
