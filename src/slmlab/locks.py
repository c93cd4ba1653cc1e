"""One writer per run directory: an exclusive OS file lock, held for as long as a process writes.

The lock is `fcntl.flock` (POSIX) or `msvcrt.locking` (Windows) on `<out_dir>/.<name>.lock`, a
file beside the run directory rather than inside it, so taking it creates nothing in the run and
`--overwrite` never deletes it. The operating system drops the lock when its process ends, however
it ends (kill -9 included), so a stale lock cannot exist; the file's content is only the holder's
PID, shown to a process that finds the lock taken.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RunInUseError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt


def _try_lock(fd: int, wait: bool) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        else:
            msvcrt.locking(fd, msvcrt.LK_LOCK if wait else msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


class DirectoryLock:
    """`with DirectoryLock(run_path, "run"):` or acquire()/release(). Raises RunInUseError (one
    line naming the holder's PID) when another process holds it, or with `wait` waits for it
    (a token cache being built by another process: wait, then use what it built)."""

    def __init__(self, directory: str | Path, what: str = "run", wait: bool = False):
        directory = Path(directory)
        self.directory, self.what, self.wait = directory, what, wait
        self.path = directory.parent / f".{directory.name}.lock"
        self.fd: int | None = None

    def acquire(self) -> DirectoryLock:
        if self.fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, writable = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644), True
        except PermissionError:  # another user's lock file in a shared folder (a lab's cache): locking needs no write
            if not self.path.is_file():
                raise
            fd, writable = os.open(self.path, os.O_RDONLY), False
        if not _try_lock(fd, self.wait):
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 32).decode("ascii", "replace").strip()
            os.close(fd)
            raise RunInUseError(
                f"the {self.what} {self.directory} is in use by process {holder or '?'} (it holds {self.path}); "
                "wait for it to finish or stop that process"
            )
        if writable:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays: deleting it could let two processes lock two files)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
