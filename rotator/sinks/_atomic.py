"""Replace a file atomically: temp file in the same directory, fsync, rename, fsync the directory.

A reader sees either the old file or the new one, never a partial write, and after a crash the directory
entry points at one complete file (the fsync of the directory makes the rename itself durable).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["atomic_replace"]


def atomic_replace(path: Path, data: bytes, *, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Write ``data`` to ``path`` with permission bits ``mode`` (and ``owner`` = (uid, gid) if given).

    Raises OSError; on failure the temp file is removed and ``path`` is untouched.
    """
    directory = path.parent
    fd, tmp_name = _mkstemp(directory, path.name)
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, mode)  # before any byte is written: the value is never readable by others
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, *owner)
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _mkstemp(directory: Path, name: str) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
