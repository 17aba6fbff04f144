"""Before a sweep runs anything: every run folder it would continue must be readable and free.

A damaged file (external damage: bnnx writes atomically) or a folder another live process
writes is refused up front with one line, so the sweep changes nothing on disk; a sweep never
silently retrains over a damaged record."""

from __future__ import annotations

from bnnx.errors import BnnxError, CorruptFileError
from bnnx.io import read_json_object, read_jsonl
from bnnx.lock import FolderBusyError, is_locked
from bnnx.train.checkpoint import Checkpoints
from bnnx.train.rundir import RunDir

FINAL = ("completed", "diverged")


def check_run_folders(runs) -> None:
    for run in runs:
        if not run.provided and run.run_dir.is_dir():
            try:
                check_run_folder(run.run_dir)
            except BnnxError as error:
                raise type(error)(f"{run.cell} seed {run.seed}: {error}") from None


def check_run_folder(run_dir) -> None:
    if is_locked(run_dir):
        raise FolderBusyError(f"{run_dir} is being written by another bnnx process; wait for it to end")
    summary = run_dir / "summary.json"
    status = read_json_object(summary).get("status") if summary.exists() else None
    if status in FINAL:
        read_jsonl(run_dir / "metrics.jsonl")
        return
    checkpoints = Checkpoints(run_dir)
    if not checkpoints.exists():
        return  # nothing to continue: the run starts over in a clean folder
    try:
        _, position = checkpoints.restore_tree()
    finally:
        checkpoints.close()
    RunDir(run_dir).rows_before(position["epoch"])


def check_yaml_file(path):
    """The parsed YAML mapping in `path`, or a one-line CorruptFileError."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path} is corrupt or cut short ({' '.join(str(error).split())[:120]})") from None
    if not isinstance(data, dict):
        raise CorruptFileError(f"{path} is corrupt (not a mapping of config keys)")
    return data
