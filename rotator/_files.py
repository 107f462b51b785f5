"""Opening rotator's own files safely: no symlinks, regular files only, private modes whatever the umask.

Used for the local store, its key file and marker (and meant for the audit log). Every check raises
:class:`UnsafePath` with a one-line message naming the path; callers turn it into their own error type.

- :func:`check_folder`: a folder that someone else could write to (group/world-writable and not ours) would
  let them plant links or files where we create ours, so it is refused.
- :func:`inspect`: ``lstat`` of a path we own: absent (``None``), or a regular file; a symlink or a device,
  FIFO, socket or folder is refused.
- :func:`open_private`: ``os.open`` with ``O_NOFOLLOW``; a file it creates gets mode 0600 by ``fchmod``, so
  the umask cannot loosen it; an existing file must be regular.
- :func:`write_atomic`: a private temporary file, fsync'd, then renamed (or hard-linked, ``exclusive``) into
  place and the folder fsync'd: readers see the whole file or none.
- :func:`read_bounded`: reads a file others may give us (a manifest: symlinks allowed) without hanging on a
  FIFO or reading ``/dev/zero`` forever, and refuses one larger than a limit.
"""

from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path

__all__ = ["UnsafePath", "check_folder", "fsync_folder", "inspect", "open_private", "read_bounded",
           "write_atomic"]

PRIVATE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


class UnsafePath(Exception):
    """A path rotator will not use as it is (symlink, special file, foreign-writable folder, too large)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def kind(mode: int) -> str:
    """'a symbolic link', 'a FIFO', ... for a non-regular ``st_mode``."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_folder(folder: Path, what: str = "folder") -> None:
    """Refuse a folder that is group- or world-writable and not owned by us (others could plant files)."""
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise UnsafePath(f"cannot use {what} {folder}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{what} {folder} is {kind(st.st_mode)}, not a folder")
    if st.st_mode & 0o022 and st.st_uid != os.geteuid():
        raise UnsafePath(
            f"{what} {folder} is writable by others (mode {stat.S_IMODE(st.st_mode):04o}, owner uid "
            f"{st.st_uid}): someone else could plant files there",
            hint="keep rotator's files in a folder of their own (rotator creates it 0700), "
                 "e.g. a subfolder of this one",
        )


def inspect(path: Path, what: str) -> os.stat_result | None:
    """``lstat`` of ``path``: None if absent; UnsafePath unless it is a regular file (never a symlink)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UnsafePath(f"cannot use {what} {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(f"{what} {path} is {kind(st.st_mode)}; rotator only uses regular files there",
                         hint="remove it (a planted link could send rotator's data elsewhere)")
    return st


def open_private(path: Path, flags: int, what: str) -> int:
    """``os.open`` without following a symlink; a created file is 0600 (fchmod), an existing one regular."""
    creating = bool(flags & os.O_CREAT)
    try:
        fd = os.open(path, flags | _NOFOLLOW | _CLOEXEC | _NONBLOCK, PRIVATE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{what} {path} is a symbolic link; rotator only uses regular files there",
                             hint="remove it (a planted link could send rotator's data elsewhere)") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{what} {path} is {kind(st.st_mode)}; rotator only uses regular files there")
        if creating and st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) != PRIVATE and st.st_size == 0:
            os.fchmod(fd, PRIVATE)  # new (or still empty): whatever the umask said
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_folder(folder: Path) -> None:
    """Make a rename or new file in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, what: str, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` as a private file in one step. ``exclusive``: never replace an existing
    file (hard link; False if ``path`` already exists). True when written."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, f"temporary {what}")
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            try:
                os.link(temp, path, follow_symlinks=False)
            except FileExistsError:
                return False
        else:
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_folder(path.parent)
    return True


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; a FIFO, device or folder is refused before
    anything is read (opened non-blocking, so a FIFO without a writer cannot hang)."""
    fd = os.open(path, os.O_RDONLY | _NONBLOCK | _CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePath(f"{what} {path} is {kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise UnsafePath(f"{what} {path} is {st.st_size:,} bytes; the limit is {limit:,}")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:  # it grew while we read
        raise UnsafePath(f"{what} {path} is more than {limit:,} bytes; the limit is {limit:,}")
    return b"".join(chunks)
