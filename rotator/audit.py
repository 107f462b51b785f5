"""Append-only, hash-chained JSON Lines audit log (DESIGN.md section 5).

Each line is one record in canonical JSON (sorted keys, compact separators, ASCII)::

    {"hash": H, "prev": P, "seq": N, "ts": "<ISO UTC>", ...record}

``hash`` is the SHA-256 (hex) of the canonical line *without* its ``hash`` key, ``prev`` the ``hash`` of the
previous record (64 zeros for the first) and ``seq`` counts up by one. A line must be exactly the canonical
encoding of its content, so ``hash`` commits to its bytes: editing, deleting, inserting or reordering lines
breaks the chain, and a naive edit is caught on the edited line itself.

Daemons, CronJobs and the CLI append from several processes: each append holds an exclusive ``flock`` on
``<path>.lock`` while it finds the chain head, writes, fsyncs and maybe rotates, so the chain never forks.
Past ``max_bytes`` the file moves to ``<path>.1`` (older ones shift to ``.2`` ..., beyond ``keep`` deleted)
and the chain continues into the new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from rotator.errors import OperationFailed, UsageError
from rotator.events import Event
from rotator.keyset import SecretValue

__all__ = ["GENESIS", "AuditLog", "VerifyResult", "iter_records", "verify"]

GENESIS = "0" * 64
_RESERVED = frozenset({"hash", "prev", "seq", "ts"})
_TAIL_CHUNK = 4096


def _json_default(obj: object) -> Any:
    if isinstance(obj, SecretValue):
        raise TypeError("audit records must never contain a SecretValue; log the version id instead")
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"audit records must be JSON-able; got {type(obj).__name__}")


def _encode(obj: Mapping[str, Any]) -> bytes:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default)
    return text.encode("ascii")


def _digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(_encode(body)).hexdigest()


def _rotated(path: Path) -> list[tuple[int, Path]]:
    """The rotated files ``path.N`` that exist, as ``(N, path)``, oldest (largest N) first."""
    prefix = path.name + "."
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            suffix = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and suffix.isdigit():
                found.append((int(suffix), Path(entry.path)))
    return sorted(found, reverse=True)


def _lock_file(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _chain_files(path: Path) -> list[Path]:
    files = [p for _, p in _rotated(path)]
    return [*files, path] if path.exists() else files


def _last_line(where: Path) -> bytes | None:
    """The last line of ``where`` without its newline (``None`` if empty or missing), read from the end."""
    try:
        fd = os.open(where, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        tail, pos = b"", os.fstat(fd).st_size
        while pos > 0:
            step = min(_TAIL_CHUNK, pos)
            pos -= step
            tail = os.pread(fd, step, pos) + tail
            if not tail.endswith(b"\n"):
                raise OperationFailed(
                    f"audit log {where} ends with a partial line (interrupted write or tampering)",
                    hint=f"run `rotator audit verify {where}` and move the damaged file aside",
                )
            if (cut := tail.rfind(b"\n", 0, len(tail) - 1)) >= 0:
                return tail[cut + 1 : -1]
        return tail[:-1] if tail else None
    finally:
        os.close(fd)


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes when anyone appends to or rotates the active file."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class AuditLog:
    """Appends records to the hash-chained log at ``path``; usable as a (critical) EventBus subscriber.

    ``max_bytes`` turns on rotation; ``keep`` rotated files are kept (all when ``None``). Thread- and
    process-safe; :meth:`close` (or ``with``) releases the file descriptors.
    """

    def __init__(self, path: Path, *, max_bytes: int | None = None, keep: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 1:
            raise UsageError(f"audit.max_bytes must be a positive number of bytes, got {max_bytes}")
        if keep is not None and keep < 1:
            raise UsageError(
                f"audit.keep must be at least 1, got {keep}",
                hint="the newest rotated file carries the chain head into the new file",
            )
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        self._thread_lock = threading.Lock()
        self._pid = self._lock_fd = self._fd = -1
        self._fd_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the file self._fd points to
        self._seen: tuple[int, int, int, int] | None = None  # _key() after our last write, for _head/_seq
        self._head, self._seq = GENESIS, 0

    # --- public API -------------------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> str:
        """Write ``record`` as the next chained line, fsync it, and return its hash.

        Raises TypeError/ValueError for a record that is not JSON-able, contains a SecretValue or uses a
        reserved key (``seq``, ``ts``, ``prev``, ``hash``); OperationFailed when the log is damaged.
        """
        if clash := _RESERVED.intersection(record):
            raise ValueError(f"audit record keys {sorted(clash)} are reserved for the hash chain")
        with self._thread_lock:
            try:
                self._open()
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
                try:
                    return self._append_locked(record)
                finally:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            except OSError as exc:
                raise OperationFailed(
                    f"cannot write the audit log {self.path}: {exc.strerror or exc}",
                    hint="check ROTATOR_AUDIT_LOG / audit.path, free space and the folder's owner and mode",
                ) from exc

    def __call__(self, event: Event) -> None:
        """EventBus subscriber: record ``event`` with ``"type": "event"``."""
        self.append({**event.to_dict(), "type": "event"})

    def close(self) -> None:
        """Close the file descriptors; a later append reopens them."""
        with self._thread_lock:
            self._close_fds()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals (all called with the thread lock held) ---------------------------------------------------

    def _close_fds(self) -> None:
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1
        self._fd_id = self._seen = None

    def _open(self) -> None:
        """Open the lock file (and create the folder) once per process; a forked child reopens."""
        if self._pid == os.getpid() and self._lock_fd >= 0:
            return
        self._close_fds()  # a forked child must not share the parent's descriptors (and flock)
        folder = self.path.parent
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = os.open(_lock_file(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._pid = os.getpid()

    def _open_active(self) -> os.stat_result:
        """Point ``self._fd`` at the current active file (creating it) and return its stat."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is None or self._fd_id != (st.st_dev, st.st_ino):
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)
            if st is None:
                _fsync_dir(self.path.parent)
            st = os.fstat(self._fd)
            self._fd_id = (st.st_dev, st.st_ino)
        return st

    def _read_head(self) -> None:
        """Find the chain head in the tail of the active file, or of the newest rotated file."""
        for where in [self.path, *(p for _, p in reversed(_rotated(self.path)))]:
            if (line := _last_line(where)) is None:
                continue
            try:
                obj = json.loads(line)
                self._head, self._seq = str(obj["hash"]), int(obj["seq"])
                return
            except (ValueError, KeyError, TypeError) as exc:
                raise OperationFailed(
                    f"audit log {where}: the last line is not a valid audit record",
                    hint=f"run `rotator audit verify {where}` to find the damage",
                ) from exc
        self._head, self._seq = GENESIS, 0

    def _append_locked(self, record: Mapping[str, Any]) -> str:
        st = self._open_active()
        if _key(st) != self._seen:  # another process wrote or rotated since our last append
            self._read_head()
        body = {
            **record,
            "seq": self._seq + 1,
            "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
            "prev": self._head,
        }
        digest = _digest(body)
        line = _encode({**body, "hash": digest}) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):
            raise OperationFailed(f"audit log {self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        self._head, self._seq = digest, self._seq + 1
        st = os.fstat(self._fd)
        self._seen = _key(st)
        if self.max_bytes is not None and st.st_size > self.max_bytes:
            self._rotate()
        return digest

    def _rotate(self) -> None:
        """Shift ``path.N`` to ``path.N+1`` (dropping those beyond ``keep``), ``path`` to ``path.1``."""
        for n, old in _rotated(self.path):
            if self.keep is not None and n >= self.keep:
                old.unlink()
            else:
                os.replace(old, old.with_name(f"{self.path.name}.{n + 1}"))
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        _fsync_dir(self.path.parent)
        self._seen = _key(self._open_active())  # the new, empty active file; the head stays in memory


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading and verifying ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``records`` that checked out, ``head`` = hash of the last good one.

    ``file``/``line`` (1-based, within that file) name the first bad line. ``anchored`` is False when the
    oldest surviving record continues a chain whose start retention deleted (its prev can't be checked).
    """

    ok: bool
    records: int
    head: str | None
    error: str | None = None
    file: Path | None = None
    line: int | None = None
    anchored: bool = True


def _check_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """Parse and self-check one line; return the record or ``None`` and why."""
    try:
        obj = json.loads(raw)
        canonical = isinstance(obj, dict) and _encode(obj) == raw
    except ValueError:  # also NaN/Infinity, which strict JSON does not have
        return None, "not valid JSON"
    if not canonical:
        return None, "not a JSON object in canonical form (the line was edited)"
    digest, prev, seq = obj.get("hash"), obj.get("prev"), obj.get("seq")
    if not isinstance(digest, str) or not isinstance(prev, str) or type(seq) is not int:
        return None, "missing or mistyped hash/prev/seq"
    body = {k: v for k, v in obj.items() if k != "hash"}
    if _digest(body) != digest:
        return None, "content does not match its hash (the line was edited)"
    return obj, ""


@contextlib.contextmanager
def _snapshot(path: Path) -> Iterator[list[tuple[Path, BinaryIO, int]]]:
    """Open each file of the set with its size under a shared lock: a cut that later writes don't move."""
    with contextlib.ExitStack() as stack:
        lock_fd = -1
        with contextlib.suppress(OSError):
            lock_fd = os.open(_lock_file(path), os.O_RDONLY | os.O_CLOEXEC)
        if lock_fd >= 0:
            stack.callback(os.close, lock_fd)
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
        files: list[tuple[Path, BinaryIO, int]] = []
        for where in _chain_files(path):
            try:
                handle = stack.enter_context(where.open("rb"))
            except FileNotFoundError:  # rotated away while we listed (only possible unlocked)
                continue
            files.append((where, handle, os.fstat(handle.fileno()).st_size))
        if lock_fd >= 0:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        yield files


def verify(path: Path) -> VerifyResult:
    """Check the hash chain across the rotated set (oldest ``path.N`` first, then ``path``).

    Detects edited, deleted, inserted, reordered and truncated lines. A missing log is not ok: there is
    nothing to vouch for.
    """
    path = Path(path)
    try:
        with _snapshot(path) as files:
            return _verify_files(path, files)
    except OSError as exc:
        raise OperationFailed(f"cannot read the audit log {path}: {exc.strerror or exc}") from exc


def _verify_files(path: Path, files: list[tuple[Path, BinaryIO, int]]) -> VerifyResult:
    if not files:
        return VerifyResult(False, 0, None, f"no audit log at {path}", path, None)
    head: str | None = None
    seq = count = 0
    anchored = True

    def bad(where: Path, lineno: int, why: str) -> VerifyResult:
        return VerifyResult(False, count, head, f"{where}:{lineno}: {why}", where, lineno, anchored)

    for where, handle, size in files:
        lines = handle.read(size).split(b"\n")
        for lineno, raw in enumerate(lines[:-1], start=1):
            obj, why = _check_line(raw)
            if obj is None:
                return bad(where, lineno, why)
            if head is None:  # the oldest surviving record
                if obj["prev"] == GENESIS:
                    if obj["seq"] != 1:
                        return bad(where, lineno, f"the first record has seq {obj['seq']}, expected 1")
                elif where == path:
                    return bad(where, lineno, "the first record does not start the chain (lines deleted?)")
                else:
                    anchored = False  # older rotated files were deleted by retention
            else:
                if obj["prev"] != head:
                    return bad(where, lineno, "prev does not match the previous record's hash "
                               "(a record was deleted, inserted or reordered)")
                if obj["seq"] != seq + 1:
                    return bad(where, lineno, f"seq {obj['seq']} does not follow {seq}")
            head, seq = obj["hash"], obj["seq"]
            count += 1
        if lines[-1]:
            return bad(where, len(lines), "truncated last line (no newline)")
    return VerifyResult(True, count, head, None, None, None, anchored)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of the rotated set in order; a missing log is empty.

    For reports and ``rotator history``: unparseable lines are skipped; integrity is :func:`verify`'s job.
    """
    with _snapshot(Path(path)) as files:
        for _, handle, size in files:
            left = size
            for raw in handle:
                left -= len(raw)
                if left < 0 or not raw.endswith(b"\n"):
                    break
                try:
                    obj = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(obj, dict):
                    yield obj
