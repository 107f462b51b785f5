"""Tests for rotator.audit_key: the audit key keyset (create on first use, rotation that never loses a key, on
the memory provider and on AWS Secrets Manager via moto, which keeps only one retired version), the backend
anchors (bounded, never moving back) and how the writer uses them (another writer's rotation, a deleted key)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rotator_aws.config import AwsConfig
from rotator_aws.provider import AwsProvider

from rotator._audit_chain import checkpoint_path
from rotator.audit import AuditLog
from rotator.audit_key import AuditKeys, audit_keys_for
from rotator.audit_verify import verify
from rotator.errors import BackendUnavailable, ManifestError, OperationFailed, UsageError
from rotator.manifest import load_manifest
from rotator.provider import SecretRef
from rotator.testing.memory import MemoryProvider
from tests.moto_server import GatedMotoServer, aws_env, moto

__all__ = ["aws_env", "moto"]
REF = SecretRef(name="_rotator/audit-key", path="_rotator/audit-key")


@pytest.fixture
def store() -> Iterator[str]:
    name = f"mem{uuid.uuid4().hex[:8]}"
    yield name
    MemoryProvider.reset(name)


def _keys(store: str) -> AuditKeys:
    """A fresh AuditKeys object (another process's view) on the shared memory store."""
    return AuditKeys(MemoryProvider(name=store), REF, f"{store}:{REF.path}")


def test_created_on_first_use_only_when_allowed(store: str) -> None:
    """No key until a writer of an unkeyed log asks; a keyed log's writer never creates one."""
    keys = _keys(store)
    assert keys.known() == {}
    with pytest.raises(BackendUnavailable, match=r"missing .* although the audit log is keyed"):
        keys.signing(create=False)
    kid, key = keys.signing(create=True)
    assert len(key) == 32
    assert kid.startswith("k1-")
    assert _keys(store).signing(create=False) == (kid, key)


def test_rotation_keeps_every_key(store: str) -> None:
    """Each rotation adds a key and signs with it; every earlier key stays readable, in order."""
    keys = _keys(store)
    first, _ = keys.signing(create=True)
    kids = [first] + [keys.rotate() for _ in range(3)]
    assert list(keys.known()) == kids
    assert keys.signing(create=False)[0] == kids[-1]
    assert list(_keys(store).known()) == kids
    assert set(keys.superseded()) == set(kids[:-1])


def test_rotate_without_a_key_is_a_usage_error(store: str) -> None:
    """There is nothing to rotate before the first audit record created the key."""
    with pytest.raises(UsageError, match="no audit key"):
        _keys(store).rotate()


def test_interrupted_rotation_is_discarded(store: str) -> None:
    """A pending bundle left by a crashed rotation is discarded by the next one; its key never signed."""
    keys = _keys(store)
    keys.signing(create=True)
    provider = MemoryProvider(name=store)
    keyset = provider.read(REF)
    assert keyset is not None
    assert keyset.current is not None
    from rotator.keyset import KeyVersion, State

    provider.stage(REF, keyset, KeyVersion(id="crashed", state=State.PENDING, created_at=keyset.current.created_at,
                                           value=keyset.current.value))
    kid = keys.rotate()
    stored = provider.read(REF)
    assert stored is not None
    assert stored.pending is None
    assert "crashed" not in {v.id for v in stored.versions}
    assert list(keys.known())[-1] == kid


def test_anchors_are_bounded_and_never_move_back(store: str) -> None:
    """The 8 most recently anchored logs are kept; an older head does not replace a newer one."""
    keys = _keys(store)
    keys.signing(create=True)
    for i in range(10):
        keys.anchor(f"log{i}", i + 1, f"{i:x}" * 64)
    anchors = keys.anchors()
    assert len(anchors) == 8
    assert "log9" in anchors
    keys.anchor("log9", 3, "ab" * 32)
    assert keys.anchors()["log9"].seq == 10


def test_anchor_races_are_retried(store: str) -> None:
    """Two writers anchoring from stale reads both land (compare-and-set, re-read, retry)."""
    a, b = _keys(store), _keys(store)
    a.signing(create=True)
    b.known()  # both hold the same revision now
    a.anchor("one", 5, "aa" * 32)
    b.anchor("two", 7, "bb" * 32)
    assert {k: v.seq for k, v in _keys(store).anchors().items()} == {"one": 5, "two": 7}


def test_writer_follows_a_rotation_by_another_process(tmp_path: Path, store: str) -> None:
    """A writer whose cached key is older than the log's head re-reads the keys instead of going back."""
    path = tmp_path / "audit.jsonl"
    slow, fast = AuditLog(path, keys=_keys(store)), AuditLog(path, keys=_keys(store))
    slow.append({"type": "test", "i": 0})
    new_kid = fast.keys.rotate() if fast.keys else ""
    fast.append({"type": "test", "i": 1})
    slow.append({"type": "test", "i": 2})
    slow.close()
    fast.close()
    kids = [json.loads(line)["kid"] for line in path.read_text().splitlines()]
    assert kids[1:] == [new_kid, new_kid]
    keys = _keys(store)
    assert verify(path, keys.known(), anchors=keys.anchors(), superseded=keys.superseded()).ok


def test_deleted_key_is_not_recreated_for_a_keyed_log(tmp_path: Path, store: str) -> None:
    """If the key keyset vanishes, appending to a keyed log fails (exit 4) instead of minting a new key."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, keys=_keys(store)) as log:
        log.append({"type": "test"})
    MemoryProvider.reset(store)
    with AuditLog(path, keys=_keys(store)) as log, pytest.raises(BackendUnavailable) as info:
        log.append({"type": "test"})
    assert info.value.exit_code == 4


def test_head_signed_with_an_unknown_key_is_refused(tmp_path: Path, store: str) -> None:
    """A log whose head names a key the backend lacks (forged or another backend's) is not appended to."""
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, keys=_keys(store)) as log:
        log.append({"type": "test"})
    other = f"{store}x"
    try:
        _keys(other).signing(create=True)
        with AuditLog(path, keys=_keys(other)) as log, pytest.raises(OperationFailed, match="does not hold"):
            log.append({"type": "test"})
    finally:
        MemoryProvider.reset(other)


def test_checkpoint_follows_every_append_and_anchor_only_when_the_log_grew(tmp_path: Path, store: str) -> None:
    """The checkpoint names the newest record after each append; anchor() writes only new heads."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, keys=_keys(store))
    assert log.anchor() is False  # nothing appended by this writer
    for i in range(3):
        digest = log.append({"type": "test", "i": i})
        stored = json.loads(checkpoint_path(path).read_text())
        assert (stored["seq"], stored["hash"]) == (i + 1, digest)
    assert oct(checkpoint_path(path).stat().st_mode & 0o777) == "0o600"
    assert log.anchor() is True
    assert log.anchor() is False
    log.close()
    assert next(iter(_keys(store).anchors().values())).seq == 3


def test_manifest_reserved_path_and_unknown_provider(tmp_path: Path) -> None:
    """A secret at the audit key's path, or an unknown audit.key_provider, is a manifest error."""
    manifest = tmp_path / "rotation.yaml"
    manifest.write_text("version: 1\nproviders: {m: {type: memory}}\ndefaults: {provider: m}\n"
                        "secrets:\n  - {name: x, kind: hmac, path: _rotator/audit-key}\n")
    loaded = load_manifest(manifest)
    with pytest.raises(ManifestError, match="reserved for the audit key"):
        audit_keys_for(loaded, loaded.build_providers())
    manifest.write_text("version: 1\nproviders: {m: {type: memory}}\naudit: {key_provider: nope}\n")
    loaded = load_manifest(manifest)
    with pytest.raises(ManifestError, match=r"audit\.key_provider: unknown provider 'nope'"):
        audit_keys_for(loaded, loaded.build_providers())


def test_keys_on_aws_survive_many_rotations(moto: GatedMotoServer) -> None:
    """On AWS (one retired version kept) four rotations still leave all five keys, and anchors fit in tags."""
    provider = AwsProvider(name="aws", config=AwsConfig(endpoint_url=moto.endpoint, region="us-east-1",
                                                         max_attempts=1, connect_timeout=1, read_timeout=5))
    ref = SecretRef(name="_rotator/audit-key", path=f"audit-{uuid.uuid4().hex[:8]}/_rotator/audit-key")
    try:
        keys = AuditKeys(provider, ref, "aws:" + ref.path)
        kids = [keys.signing(create=True)[0]] + [keys.rotate() for _ in range(4)]
        for i in range(8):
            keys.anchor(uuid.uuid4().hex[:16], 1000 + i, "f" * 64)
        fresh = AuditKeys(provider, ref, "aws:" + ref.path)
        assert list(fresh.known()) == kids
        assert len(fresh.anchors()) == 8
    finally:
        provider.close()
