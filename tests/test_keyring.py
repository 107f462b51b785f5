"""The keyring: signing and verifying with every accepted key, API-key checks, the TTL cache with background
refresh and serve-stale, key-id-miss refresh, read-only provider use, and no value in reprs or logs."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from rotator.errors import BackendUnavailable, UsageError
from rotator.keyring import KeyMatch, Keyring
from rotator.keyset import Keyset, State
from rotator.provider import SecretRef
from rotator.testing import FakeClock, MemoryProvider
from rotator.testing._contract_base import make_version

GRACE = timedelta(hours=1)


class Recording:
    """Delegates to a provider, counting calls by method; ``down`` makes every read fail like an outage."""

    def __init__(self, inner: MemoryProvider) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.down = False

    def __getattr__(self, name: str) -> Any:
        if name not in ("read", "update_meta", "close"):
            raise AssertionError(f"the keyring called {name}: it must only read (and acknowledge)")
        self.calls[name] = self.calls.get(name, 0) + 1
        if name == "read" and self.down:
            def fail(ref: SecretRef) -> None:
                raise BackendUnavailable("memory: down for the test")
            return fail
        return getattr(self.inner, name)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock shared by the store's versions and the keyring."""
    return FakeClock()


@pytest.fixture
def store(clock: FakeClock) -> Iterator[tuple[MemoryProvider, SecretRef]]:
    """A memory provider holding current, previous (grace 1h) and pending versions of one secret."""
    name = f"kr-{uuid.uuid4().hex}"
    provider = MemoryProvider(name=name)
    ref = SecretRef("app/hmac", "app/hmac")
    keyset = provider.create(ref, make_version(State.CURRENT, when=clock()), {})
    keyset = provider.stage(ref, keyset, make_version(when=clock()))
    keyset = provider.promote(ref, keyset, _id(keyset, State.PENDING), clock(), GRACE)
    provider.stage(ref, keyset, make_version(when=clock()))
    yield provider, ref
    MemoryProvider.reset(name)


def _id(keyset: Keyset, state: State) -> str:
    return next(v.id for v in keyset.versions if v.state is state)


def _value(keyset: Keyset, state: State) -> str:
    version = next(v for v in keyset.versions if v.state is state)
    assert version.value is not None
    return version.value.reveal()


def _mac(value: str, message: bytes) -> str:
    return hmac.new(value.encode(), message, hashlib.sha256).hexdigest()


def _ring(store: tuple[MemoryProvider, SecretRef], clock: FakeClock, **options: Any) -> tuple[Keyring, Recording]:
    provider = Recording(store[0])
    options.setdefault("background", False)
    return Keyring(provider, store[1], clock=clock, **options), provider  # type: ignore[arg-type]


def _rotate(store: tuple[MemoryProvider, SecretRef], clock: FakeClock, grace: timedelta = GRACE) -> Keyset:
    provider, ref = store
    keyset = provider.read(ref)
    assert keyset is not None
    if keyset.pending is None:
        keyset = provider.stage(ref, keyset, make_version(when=clock()))
    return provider.promote(ref, keyset, _id(keyset, State.PENDING), clock(), grace)


def test_accepted_keys_in_order_and_signing_key_is_current(store: Any, clock: FakeClock) -> None:
    """accepted_keys() is current, previous, pending; signing_key() is the current version."""
    ring, _ = _ring(store, clock)
    assert [v.state for v in ring.accepted_keys()] == [State.CURRENT, State.PREVIOUS, State.PENDING]
    assert ring.signing_key().state is State.CURRENT


def test_sign_then_verify_round_trip(store: Any, clock: FakeClock) -> None:
    """sign() returns the current key id and a hex HMAC-SHA256 that verify() accepts, with or without key_id."""
    ring, _ = _ring(store, clock)
    key_id, signature = ring.sign(b"payload")
    keyset = store[0].read(store[1])
    assert key_id == _id(keyset, State.CURRENT)
    assert signature == _mac(_value(keyset, State.CURRENT), b"payload")
    assert ring.verify(b"payload", signature, key_id=key_id)
    assert ring.verify("payload", signature)
    assert ring.verify(b"payload", bytes.fromhex(signature), key_id=key_id)


@pytest.mark.parametrize("state", [State.CURRENT, State.PREVIOUS, State.PENDING])
def test_verify_accepts_every_accepted_key(store: Any, clock: FakeClock, state: State) -> None:
    """A signature by current, previous or pending verifies, even under a wrong key_id."""
    ring, _ = _ring(store, clock)
    keyset = store[0].read(store[1])
    signature = _mac(_value(keyset, state), b"m")
    assert ring.verify(b"m", signature, key_id=_id(keyset, state))
    assert ring.verify(b"m", signature, key_id=_id(keyset, State.CURRENT))
    assert ring.verify(b"m", signature)


@pytest.mark.parametrize("signature", ["00" * 32, "", "é" * 64, b"\x00" * 32])
def test_verify_rejects_bad_signatures(store: Any, clock: FakeClock, signature: str | bytes) -> None:
    """Wrong, empty, non-ASCII and wrong-bytes signatures are rejected without raising."""
    ring, _ = _ring(store, clock)
    assert not ring.verify(b"m", signature)
    assert not ring.verify(b"m", signature, key_id=ring.signing_key().id)


def test_check_reports_state_of_presented_key(store: Any, clock: FakeClock) -> None:
    """check() tells current from previous (with its expiry) and pending, and None for anything else."""
    ring, _ = _ring(store, clock)
    keyset = store[0].read(store[1])
    current = ring.check(_value(keyset, State.CURRENT))
    assert current == KeyMatch(_id(keyset, State.CURRENT), State.CURRENT)
    assert current.is_current
    previous = ring.check(_value(keyset, State.PREVIOUS))
    assert previous is not None
    assert previous.state is State.PREVIOUS
    assert not previous.is_current
    assert previous.expires_at == clock() + GRACE
    assert ring.check(_value(keyset, State.PENDING)).state is State.PENDING  # type: ignore[union-attr]
    assert ring.check("rtr_live_not_a_key") is None
    assert ring.check("é") is None


def test_cache_serves_reads_until_ttl(store: Any, clock: FakeClock) -> None:
    """Within the TTL no call reaches the backend; after it, one re-read picks up a rotation."""
    ring, provider = _ring(store, clock, ttl=30)
    old = ring.signing_key().id
    for _ in range(100):
        ring.verify(b"m", "00")
    assert provider.calls == {"read": 1}
    new = _rotate(store, clock).current
    clock.advance(29)
    assert ring.signing_key().id == old
    clock.advance(1)
    assert ring.signing_key().id == new.id  # type: ignore[union-attr]
    assert provider.calls == {"read": 2}


def test_previous_stops_verifying_at_expiry_without_backend(store: Any, clock: FakeClock) -> None:
    """A previous key stops being accepted at its grace end even while the backend is down."""
    ring, provider = _ring(store, clock, ttl=3600 * 2)
    signature = _mac(_value(store[0].read(store[1]), State.PREVIOUS), b"m")
    assert ring.verify(b"m", signature)
    provider.down = True
    clock.advance(GRACE)
    assert not ring.verify(b"m", signature)
    assert [v.state for v in ring.accepted_keys()] == [State.CURRENT, State.PENDING]
    assert provider.calls == {"read": 1}


def test_outage_serves_cached_keyset_and_logs_once(store: Any, clock: FakeClock) -> None:
    """When the backend is down the cached keyset is served, with one log line per outage."""
    ring, provider = _ring(store, clock, ttl=10)
    key_id = ring.signing_key().id
    provider.down = True
    with capture_logs() as logs:
        for _ in range(5):
            clock.advance(10)
            assert ring.signing_key().id == key_id
        provider.down = False
        clock.advance(10)
        ring.signing_key()
        provider.down = True
        clock.advance(10)
        ring.signing_key()
    stale = [e for e in logs if e["event"] == "serving cached keyset"]
    assert len(stale) == 2  # the first outage, then the second one
    assert stale[0]["secret"] == "app/hmac"
    assert stale[0]["log_level"] == "warning"
    assert [e["event"] for e in logs].count("keyring.backend_recovered") == 1


def test_max_stale_then_fails_closed(store: Any, clock: FakeClock) -> None:
    """With max_stale, a keyset older than that raises BackendUnavailable instead of being served."""
    ring, provider = _ring(store, clock, ttl=10, max_stale=60)
    ring.signing_key()
    provider.down = True
    clock.advance(50)
    ring.signing_key()
    clock.advance(11)
    with pytest.raises(BackendUnavailable, match="max_stale"):
        ring.verify(b"m", "00")


def test_first_read_failure_raises(store: Any, clock: FakeClock) -> None:
    """With nothing cached yet, a backend error propagates."""
    ring, provider = _ring(store, clock)
    provider.down = True
    with pytest.raises(BackendUnavailable):
        ring.signing_key()


def test_background_refresh_serves_old_keyset_meanwhile(store: Any, clock: FakeClock) -> None:
    """In background mode an expired TTL returns the cached keyset at once and a thread re-reads it."""
    ring, provider = _ring(store, clock, ttl=5, background=True)
    old = ring.signing_key().id
    new = _rotate(store, clock).current
    clock.advance(5)
    gate = threading.Event()
    original = provider.inner.read

    def slow_read(ref: SecretRef) -> Keyset | None:
        gate.wait(5)
        return original(ref)

    provider.inner.read = slow_read  # type: ignore[method-assign]
    assert ring.signing_key().id == old  # not blocked by the slow read
    gate.set()
    deadline = time.monotonic() + 5
    while ring.signing_key().id != new.id and time.monotonic() < deadline:  # type: ignore[union-attr]
        time.sleep(0.01)
    assert ring.signing_key().id == new.id  # type: ignore[union-attr]


def test_unknown_key_id_refreshes_once(store: Any, clock: FakeClock) -> None:
    """A signature under a key id the cache does not know yet verifies after one re-read."""
    ring, provider = _ring(store, clock, ttl=3600, miss_refresh_interval=0.05)
    ring.signing_key()
    _rotate(store, clock)  # the cached pending becomes current: still known
    rotated = _rotate(store, clock)  # a version the cache has never seen
    key_id = _id(rotated, State.CURRENT)
    signature = _mac(_value(rotated, State.CURRENT), b"m")
    assert ring.verify(b"m", signature, key_id=key_id)
    assert provider.calls == {"read": 2}
    assert not ring.verify(b"m", "00", key_id="no-such-key")
    assert provider.calls == {"read": 3}


def test_unknown_key_id_refreshes_are_rate_limited(store: Any, clock: FakeClock) -> None:
    """Many unknown key ids from many threads cause about one backend read per interval."""
    ring, provider = _ring(store, clock, ttl=3600, miss_refresh_interval=0.2)
    ring.signing_key()
    threads = [threading.Thread(target=ring.verify, args=(b"m", "00", f"bogus-{i}")) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert provider.calls["read"] <= 5  # not one per request


def test_only_read_is_used(store: Any, clock: FakeClock) -> None:
    """Every keyring operation except acknowledge() uses only Provider.read (Recording fails otherwise)."""
    ring, provider = _ring(store, clock)
    key_id, signature = ring.sign(b"m")
    ring.verify(b"m", signature, key_id)
    ring.check("x" * 40)
    ring.accepted_keys()
    ring.refresh()
    assert set(provider.calls) == {"read"}


def test_from_provider_config_mapping(tmp_path: Path) -> None:
    """Keyring({"type": "local", ...}, name) builds the provider from a manifest-style mapping."""
    from rotator.localstore import LocalConfig, LocalProvider

    writer = LocalProvider(name="local", config=LocalConfig(path="store.db"), base_dir=tmp_path)
    ref = SecretRef("svc/key", "svc/key")
    writer.create(ref, make_version(State.CURRENT), {})
    writer.close()
    with Keyring({"type": "local", "path": "store.db"}, "svc/key", base_dir=tmp_path) as ring:
        assert ring.signing_key().state is State.CURRENT
    with pytest.raises(UsageError, match="path"):
        Keyring({"type": "local", "path": ["not", "a", "path"]}, "svc/key")
    with pytest.raises(UsageError, match="type"):
        Keyring({"path": "x"}, "svc/key")


def test_from_manifest(tmp_path: Path) -> None:
    """Keyring.from_manifest reads the secret's provider and path from the manifest."""
    manifest = tmp_path / "rotation.yaml"
    manifest.write_text("version: 1\nsecrets:\n"
                        "  - {name: app/key, kind: hmac, path: custom/path}\n")
    from rotator.localstore import LocalConfig, LocalProvider

    writer = LocalProvider(name="local", config=LocalConfig(), base_dir=tmp_path)
    writer.create(SecretRef("app/key", "custom/path"), make_version(State.CURRENT), {})
    writer.close()
    with Keyring.from_manifest(manifest, "app/key") as ring:
        assert ring.kind == "hmac"
        assert ring.ref.path == "custom/path"
        assert ring.signing_key().state is State.CURRENT
    with pytest.raises(UsageError, match="unknown secret"):
        Keyring.from_manifest(manifest, "app/nope")


def test_no_value_in_repr_or_logs(store: Any, clock: FakeClock) -> None:
    """Reprs of the keyring, its keys and matches, and its log lines never contain a value."""
    ring, provider = _ring(store, clock, ttl=1)
    keyset = store[0].read(store[1])
    values = [v.value.reveal() for v in keyset.versions if v.value is not None]
    with capture_logs() as logs:
        texts = [repr(ring), repr(ring.accepted_keys()), repr(ring.check(values[0])), repr(ring._snapshot())]
        provider.down = True
        clock.advance(2)
        ring.signing_key()
    texts += [repr(entry) for entry in logs]
    assert logs
    for value in values:
        assert all(value not in text for text in texts)


def test_rejects_nonpositive_ttl(store: Any, clock: FakeClock) -> None:
    """A zero TTL is a usage error."""
    with pytest.raises(UsageError):
        Keyring(store[0], store[1], ttl=0)
