"""Reading and verifying the audit log: the chain, the keys, the checkpoint, the backend anchor, a known head.

:func:`verify` walks the rotated set (oldest ``path.N`` first, then ``path``) and checks, in order:

1. every line is canonical JSON whose ``hash`` matches its content: SHA-256 for records written before audit
   keys existed, HMAC-SHA256 under the key ``kid`` names for keyed ones; ``prev`` and ``seq`` link each
   record to the one before (an edited, deleted, inserted or reordered line is named);
2. once a keyed record appears every later one is keyed, with the same ``log`` id and a key no older than
   the one before, and no key signs more than ``KEY_LAG`` after its successor was created; ``ts`` never
   goes back by more than ``TS_SLACK`` (a rewrite with plain SHA-256 or a retired, leaked key is refused);
3. the checkpoint ``<path>.head`` (HMAC'd) names a record of the chain and the log reaches it: a log cut
   off at the end, or rewritten after its checkpoint, fails; a keyed log without a checkpoint fails;
4. the backend anchor of this log (written once per run/pass) names a record of the chain and the log
   reaches it: this holds even against someone who can also replace the checkpoint file;
5. ``expect_head`` (``SEQ:HASH`` a job remembered) names a record of the chain and the log reaches it.

A missing log is not ok: there is nothing to vouch for.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from rotator._audit_chain import (
    GENESIS,
    KEY_LAG,
    TS_SLACK,
    Checkpoint,
    chain_files,
    digest,
    lock_file,
    parse_line,
    read_checkpoint,
)
from rotator.errors import OperationFailed

if TYPE_CHECKING:
    from rotator.audit_key import Anchor

__all__ = ["VerifyResult", "iter_records", "verify"]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``records`` that checked out; ``seq``/``head`` = seq and hash of the last.

    ``file``/``line`` (1-based, within that file) name the first bad line. ``anchored`` is False when the
    oldest surviving record continues a chain whose start retention deleted (its prev can't be checked).
    ``keyed`` is True when the log has keyed records; ``checked`` lists the head checks that passed.
    """

    ok: bool
    records: int
    head: str | None
    error: str | None = None
    file: Path | None = None
    line: int | None = None
    anchored: bool = True
    seq: int = 0
    keyed: bool = False
    checked: tuple[str, ...] = field(default=())


@dataclass
class _Walk:
    """State of one pass over the chain."""

    keys: Mapping[str, bytes] | None
    wanted: set[int]
    superseded: Mapping[str, datetime]
    head: str | None = None
    seq: int = 0
    count: int = 0
    first_seq: int = 0
    anchored: bool = True
    kid: str | None = None
    log: str | None = None
    seen: dict[int, str] = field(default_factory=dict)
    ts: datetime | None = None

    def check(self, obj: dict[str, Any], at_active_start: bool) -> str:
        """Why ``obj`` does not continue the chain ('' when it does)."""
        kid = obj.get("kid")
        key = None
        try:
            ts = datetime.fromisoformat(str(obj.get("ts")))
        except ValueError:
            return "missing or malformed ts"
        if self.ts is not None and ts < self.ts - TS_SLACK:
            return f"ts {obj.get('ts')} goes back from the record before (rewritten?)"
        if kid is None:
            if self.kid is not None:
                return "an unkeyed record after keyed ones (rewritten without the audit key?)"
        else:
            if self.keys is None:
                return (f"signed with audit key '{kid}' but no audit keys are available "
                        "(run with the manifest, -f, so rotator can read them from the backend)")
            if kid not in self.keys:
                return f"signed with audit key '{kid}', which the backend does not hold (forged?)"
            order = list(self.keys)
            if self.kid is not None and order.index(kid) < order.index(self.kid):
                return (f"signed with audit key '{kid}', older than '{self.kid}' used before "
                        "(rewritten with a retired key?)")
            if self.log is not None and obj.get("log") != self.log:
                return f"log id '{obj.get('log')}' differs from '{self.log}' of the records before (spliced logs?)"
            key = self.keys[kid]
            if kid in self.superseded and ts > self.superseded[kid] + KEY_LAG:
                return (f"signed with audit key '{kid}' at {obj.get('ts')}, more than {KEY_LAG} after the next "
                        "key replaced it (forged with a retired key?)")
        body = {k: v for k, v in obj.items() if k != "hash"}
        if not hmac.compare_digest(digest(body, key), obj["hash"]):
            return ("content does not match its hash (an HMAC under the audit key: the line was edited)"
                    if key is not None else "content does not match its hash (the line was edited)")
        if self.head is None:  # the oldest surviving record
            if obj["prev"] == GENESIS:
                if obj["seq"] != 1:
                    return f"the first record has seq {obj['seq']}, expected 1"
            elif at_active_start:
                return "the first record does not start the chain (lines deleted?)"
            else:
                self.anchored = False  # older rotated files were deleted by retention
            self.first_seq = obj["seq"]
        else:
            if obj["prev"] != self.head:
                return "prev does not match the previous record's hash (a record was deleted, inserted or reordered)"
            if obj["seq"] != self.seq + 1:
                return f"seq {obj['seq']} does not follow {self.seq}"
        self.head, self.seq, self.ts = obj["hash"], obj["seq"], ts
        if kid is not None:
            self.kid, self.log = kid, obj["log"]
        if self.seq in self.wanted:
            self.seen[self.seq] = obj["hash"]
        self.count += 1
        return ""

    def reaches(self, seq: int, matches: Any, what: str) -> str:
        """Why the head ``what`` names (record ``seq``, whose hash ``matches``) is not in the chain ('' if it is)."""
        if seq > self.seq:
            return (f"the log ends at record {self.seq} but {what} names record {seq}: "
                    f"{seq - self.seq} record(s) missing from the end (cut off?)")
        if seq < self.first_seq:
            return ""  # deleted by retention: nothing left to compare with
        if not matches(self.seen.get(seq, "")):
            return f"record {seq} does not match {what} (the log was rewritten)"
        return ""


@contextlib.contextmanager
def _snapshot(path: Path) -> Iterator[tuple[list[tuple[Path, BinaryIO, int]], Any]]:
    """Open each file of the set with its size, and read the checkpoint, under a shared lock."""
    with contextlib.ExitStack() as stack:
        lock_fd = -1
        with contextlib.suppress(OSError):
            lock_fd = os.open(lock_file(path), os.O_RDONLY | os.O_CLOEXEC)
        if lock_fd >= 0:
            stack.callback(os.close, lock_fd)
            fcntl.flock(lock_fd, fcntl.LOCK_SH)
        files: list[tuple[Path, BinaryIO, int]] = []
        for where in chain_files(path):
            try:
                handle = stack.enter_context(where.open("rb"))
            except FileNotFoundError:  # rotated away while we listed (only possible unlocked)
                continue
            files.append((where, handle, os.fstat(handle.fileno()).st_size))
        try:
            checkpoint: Any = read_checkpoint(path)
        except ValueError as exc:
            checkpoint = exc
        if lock_fd >= 0:
            fcntl.flock(lock_fd, fcntl.LOCK_UN)
        yield files, checkpoint


def verify(path: Path, keys: Mapping[str, bytes] | None = None, *, anchors: Mapping[str, Anchor] | None = None,
           expect_head: tuple[int, str] | None = None, require_keyed: bool = False,
           superseded: Mapping[str, datetime] | None = None) -> VerifyResult:
    """Check the log at ``path`` (see the module docstring).

    ``keys`` are the audit keys by id, oldest first (from :class:`rotator.audit_key.AuditKeys`); ``anchors``
    the backend anchors by log id; ``superseded`` when each replaced key's successor was created.
    ``require_keyed`` fails a log that has no keyed record (the backend holds an audit key, so every log
    written since should be keyed).
    """
    path = Path(path)
    try:
        with _snapshot(path) as (files, checkpoint):
            walk = _Walk(keys, set(), superseded or {})
            return _verify(path, files, checkpoint, walk, anchors or {}, expect_head, require_keyed)
    except OSError as exc:
        raise OperationFailed(f"cannot read the audit log {path}: {exc.strerror or exc}") from exc


def _verify(path: Path, files: list[tuple[Path, BinaryIO, int]], checkpoint: Any, walk: _Walk,
            anchors: Mapping[str, Anchor], expect_head: tuple[int, str] | None, require_keyed: bool) -> VerifyResult:
    if not files:
        return VerifyResult(False, 0, None, f"no audit log at {path}", path, None)
    walk.wanted.update(a.seq for a in anchors.values())
    if isinstance(checkpoint, tuple) and checkpoint[0] is not None:
        walk.wanted.add(checkpoint[0].seq)
    if expect_head is not None:
        walk.wanted.add(expect_head[0])

    def result(error: str | None = None, where: Path | None = None, lineno: int | None = None,
               checked: tuple[str, ...] = ()) -> VerifyResult:
        return VerifyResult(error is None, walk.count, walk.head, error, where, lineno, walk.anchored, walk.seq,
                            walk.kid is not None, checked)

    for where, handle, size in files:
        lines = handle.read(size).split(b"\n")
        for lineno, raw in enumerate(lines[:-1], start=1):
            obj, why = parse_line(raw)
            if obj is not None:
                why = walk.check(obj, where == path and walk.head is None)
            if why:
                return result(f"{where}:{lineno}: {why}", where, lineno)
        if lines[-1]:
            return result(f"{where}:{len(lines)}: truncated last line (no newline)", where, len(lines))
    checked: list[str] = []
    why = _heads(path, walk, checkpoint, walk.keys, anchors, expect_head, require_keyed, checked)
    return result(why or None, path if why else None, None, tuple(checked))


def _heads(path: Path, walk: _Walk, checkpoint: Any, keys: Mapping[str, bytes] | None, anchors: Mapping[str, Anchor],
           expect_head: tuple[int, str] | None, require_keyed: bool, checked: list[str]) -> str:
    """Check the checkpoint, the backend anchor and the expected head against the walked chain."""
    if isinstance(checkpoint, ValueError):
        return str(checkpoint)
    stored, mac = checkpoint
    if walk.log is None:  # no keyed record
        if stored is not None:
            return (f"{path}: a checkpoint exists ({path.name}.head) but the log has no keyed record "
                    "(rewritten without the audit key?)")
        if require_keyed:
            return (f"{path}: no keyed record although the backend holds an audit key (rewritten without the "
                    "key, or a log from before audit keys: pass --allow-unkeyed for those)")
    else:
        why = _checkpoint(path, walk, stored, mac, keys or {})
        if why:
            return why
        checked.append("checkpoint")
        anchor = anchors.get(walk.log)
        if anchor is not None:
            if why := walk.reaches(anchor.seq, anchor.matches, f"the backend anchor (written {anchor.at})"):
                return f"{path}: {why}"
            checked.append("backend anchor")
    if expect_head is not None:
        seq, want = expect_head
        if why := walk.reaches(seq, lambda h: hmac.compare_digest(h, want), f"the expected head {seq}:{want[:12]}"):
            return f"{path}: {why}"
        checked.append("expected head")
    return ""


def _checkpoint(path: Path, walk: _Walk, stored: Checkpoint | None, mac: str | None, keys: Mapping[str, bytes]) -> str:
    if stored is None or mac is None:
        return f"{path}: the checkpoint {path.name}.head is missing (every keyed append writes it: deleted?)"
    key = keys.get(stored.kid)
    if key is None or not hmac.compare_digest(stored.mac(key), mac):
        return f"{path}: the checkpoint {path.name}.head does not carry a valid HMAC (forged or edited)"
    if stored.log != walk.log:
        return f"{path}: the checkpoint belongs to log '{stored.log}', not '{walk.log}' (copied from another log?)"
    why = walk.reaches(stored.seq, lambda h: hmac.compare_digest(h, stored.hash), "the checkpoint")
    return f"{path}: {why}" if why else ""


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of the rotated set in order; a missing log is empty.

    For reports and ``rotator history``: unparseable lines are skipped; integrity is :func:`verify`'s job.
    """
    with _snapshot(Path(path)) as (files, _):
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
