"""KeysetMeta: a typed view that parses every stored mapping and gives it back byte-identically."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotator.keyset import Keyset, KeyVersion, SecretValue, State, with_meta
from rotator.localstore import MASTER_KEY_ENV, LocalConfig, LocalProvider
from rotator.meta import FAILURE_TEXT_MAX, KeysetMeta, Notices
from rotator.provider import SecretRef
from rotator.transitions import Create, UpdateMeta

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# what rotator writes today, plus what a hand-edited or older store may hold
STORED: dict[str, Any] = {
    "next_due": "2026-04-01T12:00:00+00:00",
    "notices": {"cycle": "v1", "sent": ["7d", "1d"]},  # not sorted: kept as stored
    "failures": 2,
    "last_failure": "verify hook exited 1",
    "last_failure_at": "2026-03-01T11:00:00Z",  # a "Z" spelling rotator never writes
    "acks": {"v1": {"api": "2026-03-01T10:00:00+00:00"}, "v0": "garbage"},
    "revoking": "not a time",  # unparseable: kept in extra
    "audit_anchors": {"log-a": [4, "abcd", "2026-03-01T11:59:00+00:00"]},
    "operator_note": {"nested": [1, 2.5, None, True]},  # a key rotator does not know
}


def dumped(meta: Any) -> str:
    return json.dumps(meta)


def test_a_stored_mapping_round_trips_byte_identically() -> None:
    assert dumped(KeysetMeta.parse(STORED).to_mapping()) == dumped(STORED)


def test_known_keys_are_typed_and_unknown_or_malformed_ones_kept_in_extra() -> None:
    meta = KeysetMeta.parse(STORED)
    assert meta.failures == 2
    assert meta.last_failure_at == datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    assert meta.next_due == datetime(2026, 4, 1, 12, 0, tzinfo=UTC)
    assert meta.notices == Notices("v1", frozenset({"7d", "1d"}))
    assert meta.acknowledged("v1") == {"api": "2026-03-01T10:00:00+00:00"}
    assert meta.acknowledged("v0") == {}
    assert meta.revoking is None
    assert dict(meta.extra) == {"revoking": "not a time", "operator_note": STORED["operator_note"]}


def test_a_changed_field_is_written_in_the_canonical_form_in_place() -> None:
    meta = KeysetMeta.parse(STORED)
    later = datetime(2026, 3, 2, tzinfo=UTC)
    out = dataclasses.replace(meta, last_failure_at=later, failures=0).to_mapping()
    assert out["last_failure_at"] == later.isoformat()
    assert "failures" not in out  # 0 failures: nothing stored, as the engine's cleared() leaves it
    assert list(out) == [k for k in STORED if k != "failures"]


def test_an_empty_or_missing_keyset_has_empty_meta() -> None:
    assert KeysetMeta.of(None) == KeysetMeta()
    assert KeysetMeta.of(None).to_mapping() == {}
    assert KeysetMeta.parse({"failures": 0}).to_mapping() == {"failures": 0}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
known = st.sampled_from(["failures", "last_failure", "last_failure_at", "notices", "acks", "next_due",
                         "revoking", "audit_anchors"])


@given(st.dictionaries(known | st.text(max_size=12), json_values | st.just("2026-03-01T11:00:00Z")
                       | st.just({"cycle": "v", "sent": ["1d"]}) | st.just({"v": {"c": "t"}}), max_size=10))
def test_any_json_mapping_round_trips_byte_identically(stored: dict[str, Any]) -> None:
    assert dumped(KeysetMeta.parse(stored).to_mapping()) == dumped(stored)


def test_keyset_meta_is_immutable_and_detached_from_the_callers_dict() -> None:
    raw = {"failures": 1}
    keyset = Keyset("main", "1", (), raw)
    raw["failures"] = 9
    assert keyset.meta["failures"] == 1
    with pytest.raises(TypeError):
        keyset.meta["failures"] = 2  # type: ignore[index]
    assert with_meta(keyset, failures=None, note="x").meta == {"note": "x"}
    assert keyset.meta == {"failures": 1}


def test_the_change_constructors_write_the_keys_the_backoff_and_notices_read() -> None:
    changes = KeysetMeta.failure(3, "x" * 500, NOW)
    assert changes == {"failures": 3, "last_failure": "x" * FAILURE_TEXT_MAX, "last_failure_at": NOW.isoformat()}
    assert KeysetMeta.noticed("v1", {"7d", "1d", "30d"}) == {"notices": {"cycle": "v1", "sent": ["1d", "30d", "7d"]}}
    assert KeysetMeta.staged(NOW) == {"next_due": NOW.isoformat()}
    assert KeysetMeta.staged(NOW, revoking=NOW)["revoking"] == NOW.isoformat()
    meta = KeysetMeta.parse({"failures": 2, "revoking": NOW.isoformat(), "next_due": NOW.isoformat()})
    assert meta.cleared() == {"failures": None, "revoking": None}
    assert KeysetMeta.parse(changes).failures == 3
    assert KeysetMeta.parse(changes).notices_sent("v1") == frozenset()
    assert KeysetMeta.parse(KeysetMeta.noticed("v1", {"1d"})).notices_sent("v1") == {"1d"}
    assert KeysetMeta.parse(KeysetMeta.noticed("v1", {"1d"})).notices_sent("v2") == frozenset()


def test_the_sqlite_store_keeps_every_stored_key_through_typed_updates(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    provider = LocalProvider(name="local", config=LocalConfig(path="store.db"), base_dir=tmp_path)
    try:
        ref = SecretRef("main", "main")
        version = KeyVersion("v1", State.CURRENT, NOW, value=SecretValue("s3cr3t-value-1"), promoted_at=NOW)
        created = provider.apply(ref, None, Create(version, STORED))
        assert dumped(dict(created.meta)) == dumped(STORED)
        failed = provider.apply(ref, created, UpdateMeta(KeysetMeta.failure(3, "boom", NOW)))
        cleared = provider.apply(ref, failed, UpdateMeta(KeysetMeta.of(failed).cleared()))
        stored = provider.read(ref)
        assert stored is not None
        assert {k: v for k, v in STORED.items() if k not in ("failures", "last_failure", "last_failure_at",
                                                              "revoking")} == dict(stored.meta)
        assert dict(cleared.meta) == dict(stored.meta)
    finally:
        provider.close()


def test_a_vault_document_encodes_identically_after_a_typed_round_trip() -> None:
    document = pytest.importorskip("rotator_vault._document")
    version = KeyVersion("v1", State.CURRENT, NOW, value=SecretValue("s3cr3t-value-2"), promoted_at=NOW)
    keyset = Keyset("main", "3", (version,), STORED)
    again = Keyset("main", "3", (version,), KeysetMeta.of(keyset).to_mapping())
    assert json.dumps(document.encode(keyset, "kv/main")) == json.dumps(document.encode(again, "kv/main"))
    decoded = document.decode("main", document.encode(keyset, "kv/main"), {"version": 3}, "kv/main")
    assert dumped(dict(decoded.meta)) == dumped(STORED)


def test_backoff_time_accepts_the_z_spelling() -> None:
    meta = KeysetMeta.parse({"failures": 1, "last_failure_at": "2026-03-01T11:00:00Z"})
    assert meta.last_failure_at is not None
    assert meta.last_failure_at + timedelta(minutes=1) == datetime(2026, 3, 1, 11, 1, tzinfo=UTC)
