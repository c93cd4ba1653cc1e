"""The one crash-safe write every file slmlab writes goes through.

    write to <dir>/.<name>.<random>  ->  flush + fsync the file  ->  rename over <name>  ->  fsync <dir>

A reader (or a process killed mid-write) sees the old file or the new one, never half of one, and
after the directory's fsync the rename survives a power cut. Files get the normal mode 0o644
(mkstemp's 0o600 would hide run files from other users). A temp file left by a kill is named
".<name>.*" so it can be recognised and cleaned up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call write(temp_path) to produce the file, then move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path`: readers never see half a file."""
    return atomic_write_bytes(path, text.encode("utf-8"))
