"""Shared pieces of the provider contract: fixed times, a version factory and keyset builders."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.provider import Provider, SecretRef
from rotator.target import Capability
from rotator.transitions import Create, Promote, Stage

__all__ = [
    "GRACE", "JWK", "NOW", "STEPS", "WINDOW", "ContractBase", "RefMaker",
    "assert_staged", "assigns_ids", "make_version", "one", "reveal", "values",
]

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(days=7)
WINDOW = timedelta(days=30)
JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "k1"}
RefMaker = Callable[[], SecretRef]
"""The ``make_ref`` fixture: each call returns a new SecretRef at an unused path."""
STEPS = ("stage", "promote", "retire", "rollback", "discard", "purge", "update_meta")


def make_version(
    state: State = State.PENDING, *, when: datetime = NOW, attempt: str | None = None,
    public: Mapping[str, Any] | None = None,
) -> KeyVersion:
    """A fresh version with a random value; a current one counts as promoted at ``when``."""
    return KeyVersion(
        id=uuid.uuid4().hex,
        state=state,
        created_at=when,
        value=SecretValue(secrets.token_urlsafe(24)),
        promoted_at=when if state is State.CURRENT else None,
        attempt=attempt or uuid.uuid4().hex,
        actor="contract",
        public=public,
    )


def reveal(version: KeyVersion | None) -> str:
    """The plain value of ``version``; fails the test if there is none."""
    assert version is not None
    assert version.value is not None
    return version.value.reveal()


def one(keyset: Keyset, state: State) -> KeyVersion:
    """The keyset's version in ``state``; fails the test if there is none."""
    found = [v for v in keyset.versions if v.state is state]
    assert found, f"no {state} version in {keyset!r}"
    return found[0]


def values(keyset: Keyset) -> dict[str, str | None]:
    """Every version's plain value by id, to compare what a backend holds."""
    return {v.id: v.value.reveal() if v.value is not None else None for v in keyset.versions}


def assigns_ids(provider: Provider) -> bool:
    """True for a provider that stores a staged version under an id of its own (``ASSIGNS_VERSION_IDS``)."""
    return Capability.ASSIGNS_VERSION_IDS in provider.capabilities


def assert_staged(provider: Provider, pending: KeyVersion, version: KeyVersion) -> None:
    """``pending`` is ``version`` as staged: equal, or for a provider that assigns ids, the same value and
    creation time under the provider's id (attempt, actor and public key need not survive there)."""
    if not assigns_ids(provider):
        assert pending == version
        return
    assert pending.state is State.PENDING
    assert pending.created_at == version.created_at
    assert reveal(pending) == reveal(version)


class ContractBase:
    """Fixtures and builders the contract tests share."""

    @pytest.fixture
    def reopen(self, provider: Provider) -> Callable[[], Provider]:
        """Default: the same instance (override to return a new instance on the same backend)."""
        return lambda: provider

    # --- building keysets in a known state ---------------------------------------------------------------

    def created(self, provider: Provider, ref: SecretRef, meta: Mapping[str, Any] | None = None) -> Keyset:
        """A new keyset holding one current version, promoted 60 days before NOW."""
        return provider.apply(ref, None, Create(make_version(State.CURRENT, when=NOW - timedelta(days=60)), meta or {}))

    def with_pending(self, provider: Provider, ref: SecretRef) -> Keyset:
        """Current plus a pending version."""
        return provider.apply(ref, self.created(provider, ref), Stage(make_version()))

    def with_previous(self, provider: Provider, ref: SecretRef, when: datetime = NOW) -> Keyset:
        """Current plus previous (promoted at ``when`` with GRACE)."""
        staged = self.with_pending(provider, ref)
        return provider.apply(ref, staged, Promote(one(staged, State.PENDING).id, when, GRACE))

    def with_retired(self, provider: Provider, ref: SecretRef, when: datetime) -> Keyset:
        """Current plus the old current retired at ``when`` (promotion with grace 0)."""
        staged = self.with_pending(provider, ref)
        return provider.apply(ref, staged, Promote(one(staged, State.PENDING).id, when, timedelta(0), "revoked"))

    def stored(self, provider: Provider, ref: SecretRef) -> Keyset:
        """What the backend holds at ``ref`` (fails the test if nothing)."""
        keyset = provider.read(ref)
        assert keyset is not None, f"nothing stored at {ref.path}"
        return keyset

    def assert_stored(self, provider: Provider, ref: SecretRef, expected: Keyset) -> None:
        """The backend holds exactly ``expected`` (metadata, revision and values)."""
        stored = self.stored(provider, ref)
        assert stored == expected
        assert values(stored) == values(expected)

