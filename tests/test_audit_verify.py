"""Tests for rotator.audit_verify against the attacks of the compliance issue (item 8), each reproduced first on
an unkeyed log (where it went unnoticed) and then shown detected on a keyed one: cutting records off the end,
rewriting records with recomputed SHA-256 hashes, signing with a key of one's own or a retired (leaked) key,
replacing or deleting the checkpoint, splicing logs; plus the migration of an unkeyed log."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator._audit_chain import GENESIS, KEY_LAG, checkpoint_path, encode
from rotator.audit import AuditLog
from rotator.audit_key import AuditKeys
from rotator.audit_verify import verify
from rotator.provider import SecretRef
from rotator.testing.memory import MemoryProvider


@pytest.fixture
def keys() -> Iterator[AuditKeys]:
    """Audit keys in a fresh memory provider."""
    name = f"mem{uuid.uuid4().hex[:8]}"
    ref = SecretRef(name="_rotator/audit-key", path="_rotator/audit-key")
    yield AuditKeys(MemoryProvider(name=name), ref, f"{name}:_rotator/audit-key")
    MemoryProvider.reset(name)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def _fill(path: Path, n: int, keys: AuditKeys | None, start: int = 0, ago: timedelta = timedelta(0)) -> list[str]:
    with AuditLog(path, keys=keys, clock=lambda: datetime.now(UTC) - ago) as log:
        return [log.append({"type": "test", "i": i}) for i in range(start, start + n)]


def _check(path: Path, keys: AuditKeys, **kwargs: Any) -> Any:
    return verify(path, keys.known() or None, anchors=keys.anchors(), require_keyed=bool(keys.known()),
                  superseded=keys.superseded(), **kwargs)


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _rechain(records: list[dict[str, Any]], key: tuple[str, bytes] | None = None) -> bytes:
    """What an attacker with file access writes: the records re-hashed, plain SHA-256 or under ``key``."""
    out, prev = [], records[0]["prev"]
    for record in records:
        body = {k: v for k, v in record.items() if k not in ("hash", "kid", "log")}
        body["prev"] = prev
        if key is None:
            digest = hashlib.sha256(encode(body)).hexdigest()
        else:
            body.update(kid=key[0], log=record.get("log", "forged"))
            digest = hmac.new(key[1], encode(body), hashlib.sha256).hexdigest()
        out.append(encode({**body, "hash": digest}))
        prev = digest
    return b"\n".join(out) + b"\n"


def _cut(path: Path, keep: int) -> None:
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:keep]))


def test_attack_truncation_went_unnoticed_unkeyed(log_path: Path) -> None:
    """The reported attack: deleting the last records of an unkeyed log still verifies."""
    _fill(log_path, 6, None)
    _cut(log_path, 4)
    assert verify(log_path).ok


def test_truncation_is_detected_by_the_checkpoint(log_path: Path, keys: AuditKeys) -> None:
    """Cutting records off a keyed log fails, naming how many records are missing from the end."""
    _fill(log_path, 6, keys)
    assert _check(log_path, keys).ok
    _cut(log_path, 4)
    result = _check(log_path, keys)
    assert not result.ok
    assert "ends at record 4" in (result.error or "")
    assert "2 record(s) missing from the end" in (result.error or "")


def test_truncation_with_an_old_checkpoint_is_detected_by_the_backend_anchor(log_path: Path, keys: AuditKeys) -> None:
    """An attacker who saved an old checkpoint and puts it back with the cut log is caught by the anchor."""
    _fill(log_path, 4, keys)
    saved_log, saved_cp = log_path.read_bytes(), checkpoint_path(log_path).read_bytes()
    _fill(log_path, 3, keys, start=4)  # closing the log anchors record 7 in the backend
    assert keys.anchors()[_records(log_path)[-1]["log"]].seq == 7
    log_path.write_bytes(saved_log)
    checkpoint_path(log_path).write_bytes(saved_cp)
    result = _check(log_path, keys)
    assert not result.ok
    assert "the backend anchor" in (result.error or "")
    assert "3 record(s) missing" in (result.error or "")


def test_attack_rewrite_with_sha256_went_unnoticed_unkeyed(log_path: Path) -> None:
    """The reported attack: editing a record and recomputing every SHA-256 hash still verifies."""
    _fill(log_path, 5, None)
    records = _records(log_path)
    records[2]["i"] = 99
    log_path.write_bytes(_rechain(records))
    assert verify(log_path).ok


def test_rewrite_with_sha256_is_detected(log_path: Path, keys: AuditKeys) -> None:
    """The same rewrite of a keyed log fails, even when the attacker also deletes the checkpoint."""
    _fill(log_path, 5, keys)
    records = _records(log_path)
    records[2]["i"] = 99
    log_path.write_bytes(_rechain(records))
    result = _check(log_path, keys)
    assert not result.ok
    assert "checkpoint exists" in (result.error or "")
    checkpoint_path(log_path).unlink()
    result = _check(log_path, keys)
    assert not result.ok
    assert "no keyed record although the backend holds an audit key" in (result.error or "")


def test_rewrite_of_the_tail_with_sha256_is_named(log_path: Path, keys: AuditKeys) -> None:
    """Re-hashing only the records after an edit (keeping the keyed start) names the first unkeyed line."""
    _fill(log_path, 5, keys)
    records = _records(log_path)
    records[3]["i"] = 99
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(b"".join(lines[:3]) + _rechain(records[3:]))
    result = _check(log_path, keys)
    assert (result.ok, result.line) == (False, 4)
    assert "unkeyed record after keyed ones" in (result.error or "")


def test_edit_with_recomputed_hmac_under_another_key_is_detected(log_path: Path, keys: AuditKeys) -> None:
    """Swapping in a key of one's own (same or new key id) does not verify."""
    _fill(log_path, 4, keys)
    records = _records(log_path)
    records[1]["i"] = 99
    real_kid = records[0]["kid"]
    for kid in (real_kid, "k9-attack"):
        log_path.write_bytes(_rechain(records, (kid, b"\x01" * 32)))
        result = _check(log_path, keys)
        assert (result.ok, result.line) == (False, 1)
        assert ("HMAC" in (result.error or "")) if kid == real_kid else ("does not hold" in (result.error or ""))


def test_a_retired_key_cannot_sign_records_after_a_rotation(log_path: Path, keys: AuditKeys) -> None:
    """After `rotate-key`, a leaked old key cannot forge the newer records: not after the new key, and not in
    place of it once the new key is older than KEY_LAG; the old records still verify with the old key."""
    keys.clock = lambda: datetime.now(UTC) - 3 * KEY_LAG
    _fill(log_path, 3, keys, ago=3 * KEY_LAG)
    old_kid = _records(log_path)[0]["kid"]
    keys.clock = lambda: datetime.now(UTC) - 2 * KEY_LAG  # the rotation happened a while ago
    new_kid = keys.rotate()
    _fill(log_path, 3, keys, start=3)
    records = _records(log_path)
    assert [r["kid"] for r in records] == [old_kid] * 3 + [new_kid] * 3
    assert _check(log_path, keys).ok
    leaked = (old_kid, keys.known()[old_kid])
    records[4]["i"] = 99
    lines = log_path.read_bytes().splitlines(keepends=True)
    for start, needle in ((4, "older than"), (3, "after the next key replaced it")):
        log_path.write_bytes(b"".join(lines[:start]) + _rechain(records[start:], leaked))
        result = _check(log_path, keys)
        assert (result.ok, result.line) == (False, start + 1), result.error
        assert needle in (result.error or "")


def test_deleted_checkpoint_is_detected(log_path: Path, keys: AuditKeys) -> None:
    """A keyed log without its checkpoint fails: every keyed append writes it."""
    _fill(log_path, 3, keys)
    checkpoint_path(log_path).unlink()
    result = _check(log_path, keys)
    assert not result.ok
    assert "checkpoint" in (result.error or "")
    assert "missing" in (result.error or "")


def test_edited_checkpoint_is_detected(log_path: Path, keys: AuditKeys) -> None:
    """A checkpoint edited to match a cut log carries no valid HMAC."""
    _fill(log_path, 5, keys)
    records = _records(log_path)
    _cut(log_path, 3)
    stored = json.loads(checkpoint_path(log_path).read_text())
    stored.update(seq=3, hash=records[2]["hash"])
    checkpoint_path(log_path).write_text(json.dumps(stored))
    result = _check(log_path, keys)
    assert not result.ok
    assert "valid HMAC" in (result.error or "")


def test_spliced_log_is_detected(tmp_path: Path, keys: AuditKeys) -> None:
    """Another log's checkpoint (same key, other log id) does not vouch for this one."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _fill(first, 3, keys)
    _fill(second, 3, keys)
    shutil.copy(checkpoint_path(second), checkpoint_path(first))
    result = _check(first, keys)
    assert not result.ok
    assert "belongs to log" in (result.error or "")


def test_expect_head(log_path: Path, keys: AuditKeys) -> None:
    """A remembered head passes while the log still contains it; a cut or a rewrite below it fails."""
    hashes = _fill(log_path, 5, keys)
    assert _check(log_path, keys, expect_head=(5, hashes[-1])).checked == ("checkpoint", "backend anchor",
                                                                            "expected head")
    assert _check(log_path, keys, expect_head=(3, hashes[2])).ok
    wrong = _check(log_path, keys, expect_head=(3, "ab" * 32))
    assert not wrong.ok
    assert "does not match the expected head" in (wrong.error or "")
    ahead = _check(log_path, keys, expect_head=(7, "ab" * 32))
    assert not ahead.ok
    assert "2 record(s) missing from the end" in (ahead.error or "")


def test_unkeyed_log_migrates(log_path: Path, keys: AuditKeys) -> None:
    """An existing unkeyed log keeps verifying; the first keyed record links to its last SHA-256 hash."""
    legacy = _fill(log_path, 3, None)
    assert verify(log_path).ok
    _fill(log_path, 2, keys)
    records = _records(log_path)
    assert ["kid" in r for r in records] == [False, False, False, True, True]
    assert records[3]["prev"] == legacy[-1]
    assert records[3]["seq"] == 4
    result = _check(log_path, keys)
    assert result.ok, result.error
    assert (result.keyed, result.seq) == (True, 5)
    records[1]["i"] = 99  # the unkeyed prefix is covered too: the keyed record after it chains its hash
    lines = log_path.read_bytes().splitlines(keepends=True)
    log_path.write_bytes(_rechain(records[:3]) + b"".join(lines[3:]))
    assert not _check(log_path, keys).ok


def test_keyed_record_without_keys_is_refused(log_path: Path, keys: AuditKeys) -> None:
    """Verifying a keyed log without the audit keys says how to get them."""
    _fill(log_path, 2, keys)
    result = verify(log_path)
    assert not result.ok
    assert "-f" in (result.error or "")


def test_first_record_starts_at_genesis(log_path: Path, keys: AuditKeys) -> None:
    """The keyed log starts the chain like an unkeyed one."""
    _fill(log_path, 1, keys)
    assert _records(log_path)[0]["prev"] == GENESIS
