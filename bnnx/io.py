"""Atomic file writes: results are either complete on disk or not there at all."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from bnnx.errors import ConfigError, CorruptFileError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: Path | str, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`; the file gets
    the permissions a plain open() would give it (mkstemp's are owner-only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path | str, text: str) -> None:
    write_bytes(path, text.encode())


def _default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, default=_default, sort_keys=False)


def write_json(path: Path | str, data: Any) -> None:
    write_text(path, dumps(data) + "\n")


def read_json(path: Path | str) -> Any:
    """The parsed file; a damaged one raises CorruptFileError naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path} is corrupt or cut short ({_reason(error)})") from None


def read_json_object(path: Path | str, required: tuple[str, ...] = ()) -> dict:
    """`read_json` of a file that must hold one JSON object with the `required` keys."""
    data = read_json(path)
    if not isinstance(data, dict) or any(key not in data for key in required):
        raise CorruptFileError(f"{path} is corrupt (not the JSON object bnnx wrote)")
    return data


def write_jsonl(path: Path | str, rows: Iterable[dict]) -> None:
    write_text(path, "".join(json.dumps(row, default=_default) + "\n" for row in rows))


def read_jsonl(path: Path | str) -> list[dict]:
    """Every row; a line that does not parse raises CorruptFileError naming the file and line."""
    rows, damaged = read_jsonl_rows(path)
    if damaged:
        raise CorruptFileError(f"{path} is corrupt or cut short (line {damaged[0]} is not a JSON row)")
    return rows


def read_jsonl_rows(path: Path | str) -> tuple[list[dict], list[int]]:
    """(the rows that parse, the 1-based numbers of the lines that do not); [] for no file."""
    path = Path(path)
    if not path.exists():
        return [], []
    rows, damaged = [], []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        return [], [1]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            damaged.append(number)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            damaged.append(number)
    return rows, damaged


def _reason(error: BaseException) -> str:
    return " ".join(str(error).split())[:120] or type(error).__name__


def check_writable(path: Path | str, what: str = "output") -> None:
    """Refuse, before any work, a path that cannot be created or written: the nearest existing
    ancestor must be a folder this process can write (checked by creating and removing a temp
    file there, which also catches read-only mounts and a path under a regular file)."""
    path = Path(path).absolute()
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    if existing == path and not path.is_dir():
        target = path.parent
    else:
        target = existing
    if not target.is_dir():
        raise ConfigError(f"cannot write {what} {path}: {target} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=target, prefix=".bnnx-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise ConfigError(f"cannot write {what} {path}: {target} is not writable ({error.strerror})") from None
