"""Tests for rotator.audit: the hash chain, tamper detection, concurrency, rotation and retention."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from rotator.audit import GENESIS, AuditLog, iter_records, verify
from rotator.errors import OperationFailed, UsageError
from rotator.events import Event, EventType
from rotator.keyset import SecretValue


def _fill(path: Path, n: int, **kwargs: Any) -> list[str]:
    with AuditLog(path, **kwargs) as log:
        return [log.append({"type": "test", "i": i, "note": f"record {i}"}) for i in range(n)]


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def _write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(lines))


def _canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode() + b"\n"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit.jsonl"


def test_chain_verifies(log_path: Path) -> None:
    """A freshly written log verifies, and its head is the hash append returned last."""
    hashes = _fill(log_path, 10)
    result = verify(log_path)
    assert result.ok, result.error
    assert (result.records, result.head, result.anchored) == (10, hashes[-1], True)
    assert (result.file, result.line, result.error) == (None, None, None)


def test_record_layout(log_path: Path) -> None:
    """Lines are canonical JSON with seq from 1, a UTC ts, prev chaining to the previous hash."""
    hashes = _fill(log_path, 3)
    records = [json.loads(line) for line in _lines(log_path)]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert [r["prev"] for r in records] == [GENESIS, hashes[0], hashes[1]]
    assert [r["hash"] for r in records] == hashes
    assert datetime.fromisoformat(records[0]["ts"]).utcoffset() == UTC.utcoffset(None)
    for raw, record in zip(_lines(log_path), records, strict=True):
        assert raw == _canonical(record)
        body = {k: v for k, v in record.items() if k != "hash"}
        assert record["hash"] == hashlib.sha256(_canonical(body)[:-1]).hexdigest()


@pytest.mark.parametrize("index", range(6))
def test_edited_line_is_named(log_path: Path, index: int) -> None:
    """Changing a value on any line, including the last, is reported on that very line."""
    _fill(log_path, 6)
    lines = _lines(log_path)
    lines[index] = lines[index].replace(b'"note":"record', b'"note":"RECORD')
    _write(log_path, lines)
    result = verify(log_path)
    assert not result.ok
    assert (result.file, result.line, result.records) == (log_path, index + 1, index)


def test_edit_with_recomputed_hash_breaks_next_line(log_path: Path) -> None:
    """An edit whose own hash is recomputed is still caught where the next prev no longer matches."""
    _fill(log_path, 5)
    lines = _lines(log_path)
    record = json.loads(lines[1])
    record["note"] = "forged"
    del record["hash"]
    record["hash"] = hashlib.sha256(_canonical(record)[:-1]).hexdigest()
    lines[1] = _canonical(record)
    _write(log_path, lines)
    result = verify(log_path)
    assert (result.ok, result.line) == (False, 3)
    assert "prev" in (result.error or "")


def test_whitespace_edit_is_named(log_path: Path) -> None:
    """Re-formatting a line (same content, different bytes) is caught on that line."""
    _fill(log_path, 3)
    lines = _lines(log_path)
    lines[2] = json.dumps(json.loads(lines[2]), sort_keys=True).encode() + b"\n"
    _write(log_path, lines)
    assert verify(log_path).line == 3


@pytest.mark.parametrize("index", range(5))
def test_deleted_line_is_named(log_path: Path, index: int) -> None:
    """Deleting any line but the last is reported on the line that now follows the gap."""
    _fill(log_path, 6)
    lines = _lines(log_path)
    del lines[index]
    _write(log_path, lines)
    result = verify(log_path)
    assert (result.ok, result.line) == (False, index + 1)


def test_inserted_line_is_named(log_path: Path) -> None:
    """A copied line inserted later in the log is reported where it was inserted."""
    _fill(log_path, 5)
    lines = _lines(log_path)
    lines.insert(3, lines[1])
    _write(log_path, lines)
    assert (verify(log_path).ok, verify(log_path).line) == (False, 4)


def test_swapped_lines_are_named(log_path: Path) -> None:
    """Swapping two lines is reported at the first of them."""
    _fill(log_path, 6)
    lines = _lines(log_path)
    lines[2], lines[4] = lines[4], lines[2]
    _write(log_path, lines)
    assert verify(log_path).line == 3


def test_truncated_last_line_is_named(log_path: Path) -> None:
    """Cutting the end off the last line is reported on that line."""
    _fill(log_path, 4)
    data = log_path.read_bytes()
    log_path.write_bytes(data[:-20])
    result = verify(log_path)
    assert (result.ok, result.line, result.records) == (False, 4, 3)


def test_append_refuses_partial_last_line(log_path: Path) -> None:
    """Appending after a torn last line fails with a hint instead of chaining onto garbage."""
    _fill(log_path, 2)
    log_path.write_bytes(log_path.read_bytes()[:-5])
    with pytest.raises(OperationFailed, match="partial line") as info:
        AuditLog(log_path).append({"type": "test"})
    assert info.value.hint is not None
    assert "audit verify" in info.value.hint


def test_missing_log(tmp_path: Path) -> None:
    """A missing log verifies as not ok (nothing to vouch for) and iterates as empty."""
    result = verify(tmp_path / "nope.jsonl")
    assert not result.ok
    assert "no audit log" in (result.error or "")
    assert list(iter_records(tmp_path / "nope.jsonl")) == []


def test_file_modes(log_path: Path) -> None:
    """The folder is created 0700 and the log and its lock file 0600."""
    _fill(log_path, 1)
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_path.with_name("audit.jsonl.lock").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "record",
    [
        {"value": SecretValue("hunter2-hunter2")},
        {"details": {"versions": [{"id": "v1", "value": SecretValue("x" * 12)}]}},
    ],
)
def test_secret_value_rejected(log_path: Path, record: dict[str, Any]) -> None:
    """A SecretValue anywhere in a record is refused and nothing is written."""
    with AuditLog(log_path) as log, pytest.raises(TypeError, match="SecretValue"):
        log.append(record)
    assert not log_path.exists() or log_path.stat().st_size == 0


@pytest.mark.parametrize(
    ("record", "error"),
    [({"seq": 5}, ValueError), ({"x": object()}, TypeError), ({"x": float("nan")}, ValueError)],
)
def test_bad_records_rejected(log_path: Path, record: dict[str, Any], error: type[Exception]) -> None:
    """Reserved keys, non-JSON values and NaN are refused."""
    with AuditLog(log_path) as log, pytest.raises(error):
        log.append(record)


def test_bad_retention_settings(log_path: Path) -> None:
    """keep below 1 or a non-positive max_bytes is a usage error."""
    with pytest.raises(UsageError, match="keep"):
        AuditLog(log_path, max_bytes=100, keep=0)
    with pytest.raises(UsageError, match="max_bytes"):
        AuditLog(log_path, max_bytes=0)


def test_event_subscriber(log_path: Path) -> None:
    """Calling the log with an Event records its dict form tagged with type=event."""
    event = Event(
        type=EventType.SUCCEEDED, secret="payments/webhook-hmac", provider="local",
        at=datetime(2024, 5, 1, tzinfo=UTC), actor="cli:alice", correlation_id="c1", new_version="v2",
    )
    with AuditLog(log_path) as log:
        log(event)
        log.append({"type": "notification", "notifier": "ops", "result": "ok"})
    first, second = iter_records(log_path)
    assert first["type"] == "event"
    assert first["event"] == "rotation.succeeded"
    assert first["secret"] == "payments/webhook-hmac"
    assert first["new_version"] == "v2"
    assert second["type"] == "notification"
    assert second["seq"] == 2
    assert verify(log_path).ok


def test_two_writers_in_one_process(log_path: Path) -> None:
    """Interleaved appends from two instances keep one chain (the tail is re-read when it moved)."""
    with AuditLog(log_path) as a, AuditLog(log_path) as b:
        for i in range(10):
            (a if i % 3 else b).append({"type": "test", "i": i})
    result = verify(log_path)
    assert result.ok
    assert result.records == 10


def test_tail_not_reread_when_unchanged(log_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends re-read the file tail only when another writer touched the file since."""
    calls: list[int] = []
    original = AuditLog._read_head

    def counting(self: AuditLog) -> None:
        calls.append(1)
        original(self)

    monkeypatch.setattr(AuditLog, "_read_head", counting)
    with AuditLog(log_path) as log:
        for i in range(20):
            log.append({"i": i})
        assert len(calls) == 1
        with AuditLog(log_path) as other:
            other.append({"other": True})
        log.append({"i": 20})
    assert len(calls) == 3
    assert verify(log_path).records == 22


def _worker(path: str, n: int, max_bytes: int | None) -> None:
    with AuditLog(Path(path), max_bytes=max_bytes) as log:
        for i in range(n):
            log.append({"type": "test", "pid": os.getpid(), "i": i})


@pytest.mark.parametrize("max_bytes", [None, 3000])
def test_concurrent_processes(log_path: Path, max_bytes: int | None) -> None:
    """Four processes appending 50 records each (with or without rotation) leave one valid chain of 200."""
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(str(log_path), 50, max_bytes)) for _ in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    result = verify(log_path)
    assert result.ok, result.error
    assert result.records == 200
    assert [r["seq"] for r in iter_records(log_path)] == list(range(1, 201))


def _inherited(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.append({"type": "test", "pid": os.getpid(), "i": i})


def test_forked_children_reopen(log_path: Path) -> None:
    """Children forked from a process with an open log get their own descriptors and lock."""
    log = AuditLog(log_path)
    log.append({"type": "parent"})
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_inherited, args=(log, 20)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    log.append({"type": "parent"})
    log.close()
    result = verify(log_path)
    assert result.ok
    assert result.records == 42


def test_rotation_keeps_chain(log_path: Path) -> None:
    """Rotating by size spreads the records over .N files and the chain verifies across them."""
    hashes = _fill(log_path, 40, max_bytes=1500)
    rotated = sorted(log_path.parent.glob("audit.jsonl.[0-9]*"))
    assert len(rotated) >= 3
    result = verify(log_path)
    assert result.ok
    assert result.anchored
    assert result.records == 40
    assert result.head == hashes[-1]
    assert [r["i"] for r in iter_records(log_path)] == list(range(40))
    newest = json.loads(_lines(log_path.with_name("audit.jsonl.1"))[-1])
    first_active = json.loads(_lines(log_path)[0]) if log_path.stat().st_size else None
    if first_active is not None:
        assert first_active["prev"] == newest["hash"]


def test_rotation_starts_empty_file(log_path: Path) -> None:
    """Crossing max_bytes moves the active file to .1 and leaves an empty active file."""
    _fill(log_path, 1, max_bytes=10)
    assert log_path.stat().st_size == 0
    assert len(_lines(log_path.with_name("audit.jsonl.1"))) == 1
    _fill(log_path, 1, max_bytes=10)
    assert json.loads(_lines(log_path.with_name("audit.jsonl.1"))[0])["seq"] == 2
    assert verify(log_path).records == 2


def test_tamper_in_rotated_file_is_located(log_path: Path) -> None:
    """An edit inside a rotated file is reported with that file and its own line number."""
    _fill(log_path, 40, max_bytes=1500)
    target = log_path.with_name("audit.jsonl.2")
    lines = _lines(target)
    lines[1] = lines[1].replace(b'"note":"record', b'"note":"RECORD')
    _write(target, lines)
    result = verify(log_path)
    assert (result.ok, result.file, result.line) == (False, target, 2)


def test_deleted_rotated_file_is_detected(log_path: Path) -> None:
    """Removing a middle rotated file breaks the chain at the first line of the next file."""
    _fill(log_path, 40, max_bytes=1500)
    log_path.with_name("audit.jsonl.2").unlink()
    result = verify(log_path)
    assert (result.ok, result.file, result.line) == (False, log_path.with_name("audit.jsonl.1"), 1)


def test_keep_deletes_oldest(log_path: Path) -> None:
    """With keep=2 only .1 and .2 survive; the chain verifies from the oldest survivor, unanchored."""
    hashes = _fill(log_path, 40, max_bytes=1500, keep=2)
    names = sorted(p.name for p in log_path.parent.iterdir())
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.lock"]
    result = verify(log_path)
    assert result.ok
    assert not result.anchored
    assert result.head == hashes[-1]
    seqs = [r["seq"] for r in iter_records(log_path)]
    assert seqs == list(range(seqs[0], 41))
    assert seqs[0] > 1


def test_active_file_must_start_chain(log_path: Path) -> None:
    """Without rotated files, a first record that is not the chain start is reported (head deleted)."""
    _fill(log_path, 3)
    _write(log_path, _lines(log_path)[1:])
    result = verify(log_path)
    assert (result.ok, result.line) == (False, 1)


def test_iter_records_skips_torn_line(log_path: Path) -> None:
    """iter_records yields the complete records and skips a torn last line."""
    _fill(log_path, 3)
    log_path.write_bytes(log_path.read_bytes()[:-5])
    assert [r["i"] for r in iter_records(log_path)] == [0, 1]


def test_threads_share_one_instance(log_path: Path) -> None:
    """Threads appending through one instance are serialized into one valid chain."""
    with AuditLog(log_path) as log, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: log.append({"type": "test", "i": i}), range(100)))
    result = verify(log_path)
    assert result.ok
    assert result.records == 100


def test_unwritable_location_is_operation_failed(tmp_path: Path) -> None:
    """A path that cannot be created fails with OperationFailed naming the file and a hint."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OperationFailed, match="cannot write the audit log") as info:
        AuditLog(blocker / "audit.jsonl").append({"type": "test"})
    assert info.value.hint is not None


# --- one writer: the bus subscriber -----------------------------------------------------------------------


def _event(kind: EventType, **extra: Any) -> Event:
    return Event(type=kind, secret="api", provider="local", at=datetime(2026, 1, 1, tzinfo=UTC), actor="test",
                 correlation_id="c1", **extra)


def test_record_of_keeps_the_record_shapes() -> None:
    """Contract events, steps and notification results become the records history and report read."""
    from rotator.audit import record_of

    assert record_of(_event(EventType.SUCCEEDED, new_version="v2"))["type"] == "event"
    step = record_of(_event(EventType.DISCARDED, reason="stale", details={"version": "v3"}))
    assert step == {"type": "step", "step": "pending.discarded", "secret": "api", "provider": "local",
                    "actor": "test", "correlation_id": "c1", "version": "v3", "reason": "stale"}
    note = record_of(_event(EventType.NOTIFIED, reason="refused",
                            details={"notifier": "ops", "event": "rotation.succeeded", "result": "failed"}))
    assert note == {"type": "notification", "notifier": "ops", "event": "rotation.succeeded", "secret": "api",
                    "result": "failed", "correlation_id": "c1", "error": "refused"}


def test_notification_results_reach_the_log_through_the_bus(log_path: Path) -> None:
    """The dispatcher puts each delivery result on the bus; the audit subscriber writes it; results and steps
    are never delivered to notifiers themselves."""
    import socket

    from rotator.events import EventBus
    from rotator.notify.config import WebhookConfig
    from rotator.notify.dispatch import Dispatcher

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = WebhookConfig.model_validate({"type": "webhook", "url": f"http://127.0.0.1:{port}/h",
                                           "signing_secret": "not-a-real-secret-1", "retry": {"attempts": 1}})
    bus = EventBus()
    log = AuditLog(log_path)
    bus.subscribe(log, critical=True)
    with Dispatcher({"hook": config}, lambda _: ["hook"], bus=bus) as dispatcher:
        bus.subscribe(dispatcher)
        bus.emit(_event(EventType.SUCCEEDED))
        bus.emit(_event(EventType.ADOPTED, details={"version": "v1"}))
        assert dispatcher.flush(30)
    log.close()
    kinds = [(r["type"], r.get("event") or r.get("step")) for r in iter_records(log_path)]
    assert sorted(kinds) == [("event", "rotation.succeeded"), ("notification", "rotation.succeeded"),
                             ("step", "secret.adopted")]  # the delivery runs in the background: any order
    assert kinds[0] == ("event", "rotation.succeeded")
    assert verify(log_path).ok


def test_only_the_audit_module_appends() -> None:
    """No module but rotator/audit.py calls AuditLog.append: the bus subscriber is the log's one writer."""
    import re

    root = Path(__file__).resolve().parent.parent / "rotator"
    writers = [str(p.relative_to(root)) for p in root.rglob("*.py")
               if re.search(r"audit\w*\.append\(|\.audit\(", p.read_text()) and p.name != "audit.py"]
    assert writers == []
