"""Append-only, hash-chained JSON Lines audit log (DESIGN.md section 5): the writer.

Each line is one record in canonical JSON (sorted keys, compact separators, ASCII)::

    {"hash": H, "prev": P, "seq": N, "ts": "<ISO UTC>", "kid": K, "log": L, ...record}

``prev`` is the ``hash`` of the previous record (64 zeros for the first) and ``seq`` counts up by one. With
audit keys (:mod:`rotator.audit_key`, always on for a runtime) ``hash`` is the HMAC-SHA256 of the canonical
line without its ``hash`` under the key ``kid`` names, so a writer without the key cannot recompute the chain;
``log`` identifies this log for its backend anchor. Logs written before keys existed carry SHA-256 hashes and
no ``kid``; the first keyed record simply continues their chain (``prev`` = the last unkeyed hash).

After every keyed append the head (``seq`` + ``hash``) goes to a checkpoint file ``<path>.head`` (HMAC'd,
replaced atomically) and, at most once per run or daemon pass (:meth:`AuditLog.anchor`), to the audit key's
keyset in the backend, so records cut off the end are detected (:mod:`rotator.audit_verify`).

Daemons, CronJobs and the CLI append from several processes: each append holds an exclusive ``flock`` on
``<path>.lock`` while it finds the chain head, writes, fsyncs and maybe rotates, so the chain never forks.
Past ``max_bytes`` the file moves to ``<path>.1`` (older ones shift to ``.2`` ..., beyond ``keep`` deleted)
and the chain continues into the new file. A :class:`~rotator.audit_sink.Sink` gets a copy of each line.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator._audit_chain import (
    GENESIS,
    RESERVED,
    Checkpoint,
    digest,
    encode,
    lock_file,
    rotated_files,
    write_checkpoint,
)
from rotator.audit_verify import VerifyResult, iter_records, verify
from rotator.clock import Clock, utcnow
from rotator.errors import OperationFailed, RotatorError, UsageError
from rotator.events import Event, is_notification, is_step
from rotator.logs import get_logger, redact_text

if TYPE_CHECKING:
    from rotator.audit_key import AuditKeys
    from rotator.audit_sink import Sink

__all__ = ["GENESIS", "AuditLog", "VerifyResult", "iter_records", "record_of", "verify"]

_TAIL_CHUNK = 4096
log = get_logger("rotator.audit")


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
    """Appends records to the hash-chained log at ``path``; the (critical) EventBus subscriber that writes it.

    ``max_bytes`` turns on rotation; ``keep`` rotated files are kept (all when ``None``). ``keys`` makes
    the chain keyed (HMAC) with a checkpoint and backend anchors; without it records are plain SHA-256
    (library use and tests only: a runtime always passes keys). ``sink`` gets a copy of every line;
    ``clock`` gives the write time ``ts`` (the wall clock; tests pass another).
    Thread- and process-safe; :meth:`close` (or ``with``) anchors the head and releases the descriptors.
    """

    def __init__(self, path: Path, *, max_bytes: int | None = None, keep: int | None = None,
                 keys: AuditKeys | None = None, sink: Sink | None = None, clock: Clock = utcnow) -> None:
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
        self.keys, self.sink, self.clock = keys, sink, clock
        self._head_kid: str | None = None  # kid and log id of the head record (None: unkeyed or empty)
        self._log_id: str | None = None
        self._written: tuple[str, int, str] | None = None  # (log, seq, hash) of our last keyed append
        self._anchored: tuple[str, int] | None = None  # (log, seq) last written to the backend

    # --- public API -------------------------------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> str:
        """Write ``record`` as the next chained line, fsync it, and return its hash.

        Raises TypeError/ValueError for a record that is not JSON-able, contains a SecretValue or uses a
        reserved key (``seq``, ``ts``, ``prev``, ``hash``, ``kid``, ``log``); OperationFailed when the log is
        damaged; a ProviderError when the audit key cannot be read (the step is then not reported done).
        """
        if clash := RESERVED.intersection(record):
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
        """EventBus subscriber: the one writer of the log. Records ``event`` (see :func:`record_of`)."""
        self.append(record_of(event))

    def anchor(self) -> bool:
        """Write the head of our last append to the backend anchor, if it moved since the last anchor.

        One backend write (plus a read on a race); called at the end of a run (``close``) and of each daemon
        pass. A failure is logged, never raised: the checkpoint still holds the head, and the next anchor
        covers this one. Returns True when an anchor was written.
        """
        with self._thread_lock:
            written, keys = self._written, self.keys
            if keys is None or written is None or self._anchored == written[:2]:
                return False
        try:
            keys.anchor(*written)
        except RotatorError as exc:
            log.warning("audit.anchor_failed", where=keys.where, error=redact_text(str(exc)))
            return False
        with self._thread_lock:
            self._anchored = written[:2]
        return True

    def close(self) -> None:
        """Anchor the head (best effort) and close the file descriptors; a later append reopens them."""
        self.anchor()
        with self._thread_lock:
            self._close_fds()
        if self.sink is not None:
            self.sink.close()

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
        self._lock_fd = os.open(lock_file(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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
        for where in [self.path, *(p for _, p in reversed(rotated_files(self.path)))]:
            if (line := _last_line(where)) is None:
                continue
            try:
                obj = json.loads(line)
                self._head, self._seq = str(obj["hash"]), int(obj["seq"])
                kid, log_id = obj.get("kid"), obj.get("log")
                self._head_kid = kid if isinstance(kid, str) else None
                self._log_id = log_id if isinstance(log_id, str) else None
                return
            except (ValueError, KeyError, TypeError) as exc:
                raise OperationFailed(
                    f"audit log {where}: the last line is not a valid audit record",
                    hint=f"run `rotator audit verify {where}` to find the damage",
                ) from exc
        self._head, self._seq, self._head_kid, self._log_id = GENESIS, 0, None, None

    def _signing_key(self, keys: AuditKeys) -> tuple[str, bytes]:
        """The key to sign the next record with: never older than the head's (another writer rotated it)."""
        head_kid = self._head_kid
        kid, key = keys.signing(create=head_kid is None)  # a new key only for a log that has none yet
        if head_kid is None or head_kid == kid:
            return kid, key
        order = list(keys.known())
        if head_kid in order and order.index(head_kid) < order.index(kid):
            return kid, key  # we hold a newer key than the head's writer: the rotation starts here
        keys.refresh()
        kid, key = keys.signing(create=False)
        if head_kid not in keys.known():
            raise OperationFailed(
                f"audit log {self.path}: its last record is signed with audit key '{head_kid}', "
                f"which {keys.where} does not hold",
                hint=f"run `rotator audit verify {self.path}`; the log may be forged or the key keyset replaced")
        return kid, key

    def _append_locked(self, record: Mapping[str, Any]) -> str:
        st = self._open_active()
        if _key(st) != self._seen:  # another process wrote or rotated since our last append
            self._read_head()
        body = {
            **record,
            "seq": self._seq + 1,
            "ts": self.clock().astimezone(UTC).isoformat(timespec="microseconds"),
            "prev": self._head,
        }
        key: bytes | None = None
        if self.keys is not None:
            kid, key = self._signing_key(self.keys)
            log_id = self._log_id or uuid.uuid4().hex[:16]
            body.update(kid=kid, log=log_id)
        hashed = digest(body, key)
        line = encode({**body, "hash": hashed}) + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):
            raise OperationFailed(f"audit log {self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        self._head, self._seq = hashed, self._seq + 1
        if key is not None:
            self._head_kid, self._log_id = kid, log_id
            self._written = (log_id, self._seq, hashed)
            write_checkpoint(self.path, Checkpoint(log_id, self._seq, hashed, kid), key)
        st = os.fstat(self._fd)
        self._seen = _key(st)
        if self.sink is not None:
            self.sink.send(line[:-1])
        if self.max_bytes is not None and st.st_size > self.max_bytes:
            self._rotate()
        return hashed

    def _rotate(self) -> None:
        """Shift ``path.N`` to ``path.N+1`` (dropping those beyond ``keep``), ``path`` to ``path.1``."""
        for n, old in rotated_files(self.path):
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


def record_of(event: Event) -> dict[str, Any]:
    """The audit record of a bus event: a notification result, a step, or a contract event."""
    if is_notification(event):
        details = dict(event.details)
        record: dict[str, Any] = {"type": "notification", "notifier": details.get("notifier"),
                                  "event": details.get("event"), "secret": event.secret,
                                  "result": details.get("result"), "correlation_id": event.correlation_id}
        if event.reason is not None:
            record["error"] = event.reason
        return record
    if is_step(event):
        record = {**event.details, "type": "step", "step": str(event.type), "secret": event.secret,
                  "provider": event.provider, "actor": event.actor, "correlation_id": event.correlation_id}
        if event.reason is not None:
            record["reason"] = event.reason
        return record
    return {**event.to_dict(), "type": "event"}
