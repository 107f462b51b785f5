"""``Keyring.fernet()``: encrypt under the current key, decrypt under any accepted key, re-encrypt old tokens,
across real rotations by the engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken

from rotator.app import Runtime
from rotator.errors import OperationFailed, UsageError
from rotator.keyring import Keyring
from rotator.keyset import KeyVersion, SecretValue, State
from rotator.provider import SecretRef
from rotator.testing import FakeClock, MemoryProvider
from tests.conftest import memory_runtime

MANIFEST = """\
version: 1
defaults: {{provider: {store}, every: 30d, grace: 3d, notice: 1d}}
providers: {{{store}: {{type: memory}}}}
secrets:
  - {{name: app/data-key, kind: fernet}}
  - {{name: app/hmac, kind: hmac}}
"""


class Counting:
    """Delegates to a memory provider and counts reads."""

    def __init__(self, inner: MemoryProvider) -> None:
        self.inner, self.reads = inner, 0

    def read(self, ref: SecretRef) -> Any:
        self.reads += 1
        return self.inner.read(ref)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Runtime, FakeClock, str]]:
    """A runtime on a fresh memory store with the fernet secret created."""
    with memory_runtime(tmp_path, MANIFEST) as made:
        yield made


def ring(env: tuple[Runtime, FakeClock, str], **options: Any) -> Keyring:
    rt, clock, store = env
    provider = options.pop("provider", None) or MemoryProvider(name=store)
    return Keyring(provider, rt.manifest.secret("app/data-key").ref, kind="fernet", clock=clock,
                   background=False, **options)


def values(env: tuple[Runtime, FakeClock, str]) -> dict[State, Fernet]:
    rt, _, store = env
    keyset = MemoryProvider(name=store).read(rt.manifest.secret("app/data-key").ref)
    assert keyset is not None
    return {v.state: Fernet(v.value.reveal()) for v in keyset.accepted() if v.value is not None}


def rotate(env: tuple[Runtime, FakeClock, str]) -> None:
    rt, clock, _ = env
    clock.advance(60)
    outcome = rt.engine.reconcile_one(rt.manifest.secret("app/data-key"), force=True)
    assert outcome.ok, outcome.message


def test_encrypts_under_the_current_key(env: tuple[Runtime, FakeClock, str]) -> None:
    """A token from ``encrypt`` opens with the current key alone, and round-trips through ``decrypt``."""
    box = ring(env).fernet()
    token = box.encrypt(b"card 4111")
    assert values(env)[State.CURRENT].decrypt(token) == b"card 4111"
    assert box.decrypt(token) == b"card 4111"
    assert box.decrypt(token.decode()) == b"card 4111"


def test_old_tokens_decrypt_after_a_rotation_and_rotate_moves_them_to_the_new_key(
        env: tuple[Runtime, FakeClock, str]) -> None:
    """After the engine rotates the key, old tokens still open (previous, in grace); ``rotate`` re-encrypts
    them under the new current key with their timestamp kept; once the grace ends they no longer open."""
    rt, clock, _ = env
    keyring = ring(env, ttl=1)
    box = keyring.fernet()
    old = box.encrypt(b"written before the rotation")
    rotate(env)
    clock.advance(2)  # past the keyring's ttl: the next call re-reads
    keys = values(env)
    assert box.decrypt(old) == b"written before the rotation"
    new = box.encrypt(b"written after")
    assert keys[State.CURRENT].decrypt(new) == b"written after"
    with pytest.raises(InvalidToken):
        keys[State.PREVIOUS].decrypt(new)
    moved = box.rotate(old)
    assert keys[State.CURRENT].decrypt(moved) == b"written before the rotation"
    assert Fernet.extract_timestamp(keys[State.CURRENT], moved) == Fernet.extract_timestamp(keys[State.PREVIOUS], old)
    clock.advance(timedelta(days=3, seconds=1))  # the previous key's grace ends
    rt.engine.reconcile_one(rt.manifest.secret("app/data-key"))
    keyring.refresh()
    with pytest.raises(InvalidToken):
        box.decrypt(old)
    assert box.decrypt(moved) == b"written before the rotation"


def test_a_pending_key_already_decrypts(env: tuple[Runtime, FakeClock, str]) -> None:
    """A writer that switched to a staged key early is understood: pending keys are accepted."""
    rt, clock, store = env
    provider = MemoryProvider(name=store)
    ref = rt.manifest.secret("app/data-key").ref
    keyset = provider.read(ref)
    assert keyset is not None
    staged = Fernet.generate_key().decode()
    provider.stage(ref, keyset, KeyVersion(uuid.uuid4().hex, State.PENDING, clock(), value=SecretValue(staged)))
    assert ring(env).fernet().decrypt(Fernet(staged).encrypt(b"early")) == b"early"


def test_a_token_under_a_key_promoted_since_the_cache_was_filled_triggers_one_re_read(
        env: tuple[Runtime, FakeClock, str]) -> None:
    """A reader whose cache predates two rotations re-reads once and opens the fresher writer's token."""
    counting = Counting(MemoryProvider(name=env[2]))
    reader = ring(env, provider=counting, ttl=3600, miss_refresh_interval=0).fernet()
    reader.encrypt(b"fill the cache")
    rotate(env)
    rotate(env)
    token = ring(env).fernet().encrypt(b"from a fresher writer")
    before = counting.reads
    assert reader.decrypt(token) == b"from a fresher writer"
    assert counting.reads == before + 1


def test_garbage_never_waits_for_a_re_read(env: tuple[Runtime, FakeClock, str]) -> None:
    """Inside the miss-refresh interval a token nothing opens fails at once, with no backend read."""
    counting = Counting(MemoryProvider(name=env[2]))
    box = ring(env, provider=counting, miss_refresh_interval=3600).fernet()
    box.encrypt(b"fill the cache")
    before = counting.reads
    for garbage in (b"not a token", Fernet(Fernet.generate_key()).encrypt(b"other key"), "gAAAA"):
        with pytest.raises(InvalidToken):
            box.decrypt(garbage)
        with pytest.raises(InvalidToken):
            box.rotate(garbage)
    assert counting.reads == before


def test_ttl_rejects_old_tokens_like_fernet(env: tuple[Runtime, FakeClock, str]) -> None:
    """``decrypt(token, ttl=...)`` refuses a token older than ``ttl`` seconds, as ``Fernet.decrypt`` does."""
    box = ring(env).fernet()
    old = values(env)[State.CURRENT].encrypt_at_time(b"x", 1_000_000)
    with pytest.raises(InvalidToken):
        box.decrypt(old, ttl=60)
    assert box.decrypt(old) == b"x"


def test_only_fernet_secrets_get_one(env: tuple[Runtime, FakeClock, str]) -> None:
    """A keyring of another kind refuses ``fernet()``; a stored value that is no Fernet key fails without
    quoting it; nothing shows a value in a repr."""
    rt, clock, store = env
    hmac_ref = rt.manifest.secret("app/hmac").ref
    with pytest.raises(UsageError, match="app/hmac is a hmac secret; fernet\\(\\) needs kind: fernet"):
        Keyring(MemoryProvider(name=store), hmac_ref, kind="hmac", clock=clock, background=False).fernet()
    other = SecretRef("app/odd", "app/odd")
    secret = "a stored value that is no fernet key"
    MemoryProvider(name=store).create(other, KeyVersion(uuid.uuid4().hex, State.CURRENT, clock(),
                                                        value=SecretValue(secret), promoted_at=clock()), {})
    with pytest.raises(OperationFailed) as caught:
        Keyring(MemoryProvider(name=store), other, clock=clock, background=False).fernet().encrypt(b"x")
    assert secret not in str(caught.value)
    assert "not a Fernet key" in str(caught.value)
    assert repr(ring(env).fernet()) == "FernetRing(secret='app/data-key')"
