"""One writer per folder: an exclusive `fcntl.flock` on `<folder>/.lock`.

The kernel drops a flock when its process dies, however it dies (SIGKILL included), so a lock
left by a killed writer is simply taken by the next one. The file is removed on release while
still locked; a waiter that opened the removed file notices (its inode no longer is the path's)
and opens the new one, so two processes never both hold a lock on one folder.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bnnx.errors import BnnxError

LOCK_FILE = ".lock"


class FolderBusyError(BnnxError):
    """Another live process writes this folder."""


class FolderLock:
    """`with FolderLock(folder):` holds the folder's lock, or raises FolderBusyError at once."""

    def __init__(self, folder: Path | str, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "FolderLock":
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise FolderBusyError(f"{self.folder} is being written by another bnnx process{holder}; "
                                      f"wait for it to end or choose another {self.what} folder") from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
            else:  # the holder released and removed it between our open and flock
                os.close(fd)
        return self

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(folder: Path | str) -> bool:
    """Whether a live process holds `folder`'s lock (creates nothing)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
