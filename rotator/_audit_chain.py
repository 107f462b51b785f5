"""The audit log's line format: canonical JSON, record hashes (SHA-256 or keyed HMAC) and the checkpoint.

A record is one canonical JSON line (sorted keys, compact separators, ASCII). Unkeyed records (written before
audit keys existed) carry ``hash = SHA-256(canonical body)``; keyed ones also carry ``kid`` (the audit key id)
and ``log`` (the id of this log, for its backend anchor) and ``hash = HMAC-SHA256(key, canonical body)``, so
only a writer holding the key can recompute the chain. The checkpoint file ``<log>.head`` holds the head
(``seq``, ``hash``) of the log with an HMAC over it under a separate domain (``_CHECKPOINT_CONTEXT``), so a
checkpoint MAC can never be passed off as a record hash or the other way round.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from rotator.keyset import SecretValue

__all__ = ["GENESIS", "KEY_LAG", "RESERVED", "TS_SLACK", "Checkpoint", "chain_files", "checkpoint_path", "digest",
           "encode", "lock_file", "parse_line", "read_checkpoint", "rotated_files", "write_checkpoint"]

GENESIS = "0" * 64
KEY_LAG = timedelta(days=1)  # a key may still sign this long after its successor was created, no longer
TS_SLACK = timedelta(minutes=5)  # how far a record's ts may go back (clock steps between processes)
RESERVED = frozenset({"hash", "prev", "seq", "ts", "kid", "log"})
_CHECKPOINT_CONTEXT = b"rotator-audit-checkpoint-v1\n"


def _json_default(obj: object) -> Any:
    if isinstance(obj, SecretValue):
        raise TypeError("audit records must never contain a SecretValue; log the version id instead")
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"audit records must be JSON-able; got {type(obj).__name__}")


def encode(obj: Mapping[str, Any]) -> bytes:
    """The canonical encoding every line must be exactly equal to."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=_json_default)
    return text.encode("ascii")


def digest(body: Mapping[str, Any], key: bytes | None) -> str:
    """The record hash of ``body`` (without ``hash``): HMAC-SHA256 under ``key``, or SHA-256 when unkeyed."""
    data = encode(body)
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """Parse one line and check its form (not its hash); return the record or ``None`` and why."""
    try:
        obj = json.loads(raw)
        canonical = isinstance(obj, dict) and encode(obj) == raw
    except ValueError:  # also NaN/Infinity, which strict JSON does not have
        return None, "not valid JSON"
    if not canonical:
        return None, "not a JSON object in canonical form (the line was edited)"
    if not isinstance(obj.get("hash"), str) or not isinstance(obj.get("prev"), str) or type(obj.get("seq")) is not int:
        return None, "missing or mistyped hash/prev/seq"
    kid, log = obj.get("kid"), obj.get("log")
    if (kid is None) != (log is None) or (kid is not None and not (isinstance(kid, str) and isinstance(log, str))):
        return None, "mistyped kid/log"
    return obj, ""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The head of a keyed log as its last writer saw it: ``seq`` and ``hash`` of the newest record."""

    log: str
    seq: int
    hash: str
    kid: str

    def _body(self) -> bytes:
        return _CHECKPOINT_CONTEXT + encode({"hash": self.hash, "kid": self.kid, "log": self.log, "seq": self.seq})

    def mac(self, key: bytes) -> str:
        """HMAC-SHA256 of the checkpoint under ``key`` (the key ``kid`` names)."""
        return hmac.new(key, self._body(), hashlib.sha256).hexdigest()


def checkpoint_path(log_path: Path) -> Path:
    """Where the checkpoint of the log at ``log_path`` lives."""
    return log_path.with_name(log_path.name + ".head")


def write_checkpoint(log_path: Path, checkpoint: Checkpoint, key: bytes) -> None:
    """Replace the checkpoint atomically (write a temp file, fsync, rename). Call with the log's lock held."""
    final = checkpoint_path(log_path)
    temp = final.with_name(final.name + ".tmp")
    line = encode({"hash": checkpoint.hash, "kid": checkpoint.kid, "log": checkpoint.log,
                   "mac": checkpoint.mac(key), "seq": checkpoint.seq}) + b"\n"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)


def read_checkpoint(log_path: Path) -> tuple[Checkpoint | None, str | None]:
    """The checkpoint and its MAC as stored (not yet checked), or ``(None, None)`` when there is none.

    Raises ValueError naming the problem when the file exists but is not a checkpoint.
    """
    with contextlib.suppress(FileNotFoundError):
        raw = checkpoint_path(log_path).read_bytes()
        try:
            obj = json.loads(raw)
            return Checkpoint(str(obj["log"]), int(obj["seq"]), str(obj["hash"]), str(obj["kid"])), str(obj["mac"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{checkpoint_path(log_path)}: not an audit checkpoint") from exc
    return None, None


def rotated_files(path: Path) -> list[tuple[int, Path]]:
    """The rotated files ``path.N`` that exist, as ``(N, path)``, oldest (largest N) first."""
    prefix = path.name + "."
    found: list[tuple[int, Path]] = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(path.parent):
            suffix = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and suffix.isdigit():
                found.append((int(suffix), Path(entry.path)))
    return sorted(found, reverse=True)


def lock_file(path: Path) -> Path:
    """The file every writer of the log at ``path`` flocks."""
    return path.with_name(path.name + ".lock")


def chain_files(path: Path) -> list[Path]:
    """The files of the rotated set in chain order: oldest ``path.N`` first, then ``path``."""
    files = [p for _, p in rotated_files(path)]
    return [*files, path] if path.exists() else files
