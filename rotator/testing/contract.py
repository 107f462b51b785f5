"""The provider contract: behaviour every backend must show, as tests a provider's test module inherits.

Like fsspec's abstract tests or SQLAlchemy's dialect suite, a provider proves itself with a few lines::

    from rotator.testing.contract import ProviderContract

    class TestMyProvider(ProviderContract):
        @pytest.fixture
        def provider(self) -> Iterator[Provider]:
            backend = MyProvider(name="mine", config=MyConfig(...), base_dir=Path("."))
            yield backend
            backend.close()

        @pytest.fixture
        def make_ref(self) -> Callable[[], SecretRef]:
            return lambda: SecretRef(name=f"t-{uuid4().hex}", path=f"contract/{uuid4().hex}")

        @pytest.fixture  # optional: a NEW instance on the same backend (crash-resume); close it yourself
        def reopen(self, ...) -> Callable[[], Provider]: ...

Covered: create/read round trips, every state transition, compare-and-set conflicts for every step (nothing
written on conflict), idempotent staging, racing writers, resuming a half-finished rotation from a fresh
instance, and that no value leaks into a repr or an error message. The class name does not start with
``Test``, so pytest collects these tests only from subclasses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from rotator.errors import ConflictError, IllegalTransition, RotatorError
from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.provider import Provider, SecretRef
from rotator.testing._contract_base import (
    GRACE,
    JWK,
    NOW,
    STEPS,
    WINDOW,
    ContractBase,
    RefMaker,
    assert_staged,
    assigns_ids,
    make_version,
    one,
    reveal,
    values,
)
from rotator.transitions import Create, Discard, Promote, Purge, Retire, Rollback, Stage, UpdateMeta

__all__ = ["GRACE", "NOW", "WINDOW", "ProviderContract", "RefMaker", "make_version"]


class ProviderContract(ContractBase):
    """Subclass in a ``test_*.py`` module and provide the ``provider`` and ``make_ref`` fixtures."""

    # --- create and read ---------------------------------------------------------------------------------

    def test_create_then_read_returns_current(self, provider: Provider, make_ref: RefMaker) -> None:
        """A created keyset reads back with its one version as current, at the returned revision."""
        ref = make_ref()
        created = self.created(provider, ref)
        read = self.stored(provider, ref)
        assert one(read, State.CURRENT).id == one(created, State.CURRENT).id
        assert read.revision == created.revision != ""
        assert (read.name, read.managed, len(read.versions)) == (ref.name, True, 1)

    def test_values_round_trip(self, provider: Provider, make_ref: RefMaker) -> None:
        """The value read back equals the value written, wrapped in a SecretValue."""
        ref = make_ref()
        version = make_version(State.CURRENT)
        provider.apply(ref, None, Create(version, {}))
        current = one(self.stored(provider, ref), State.CURRENT)
        assert isinstance(current.value, SecretValue)
        assert reveal(current) == reveal(version)

    def test_metadata_round_trips(self, provider: Provider, make_ref: RefMaker) -> None:
        """Aware times, attempt token, actor and a public JWK survive the backend unchanged."""
        ref = make_ref()
        version = make_version(State.CURRENT, attempt="attempt-meta", public=JWK)
        provider.apply(ref, None, Create(version, {}))
        current = one(self.stored(provider, ref), State.CURRENT)
        assert current == version
        assert current.created_at.utcoffset() == timedelta(0)
        assert (current.public, current.attempt, current.actor) == (JWK, "attempt-meta", "contract")

    def test_create_preserves_meta(self, provider: Provider, make_ref: RefMaker) -> None:
        """JSON bookkeeping given to create is stored with the keyset."""
        ref = make_ref()
        meta = {"notice_sent_for": "2025-01-01", "failures": 2, "nested": {"list": [1, "two"]}}
        self.created(provider, ref, meta)
        assert dict(self.stored(provider, ref).meta) == meta

    def test_create_twice_conflicts(self, provider: Provider, make_ref: RefMaker) -> None:
        """Creating where a keyset exists raises ConflictError and keeps the first value."""
        ref = make_ref()
        first = self.created(provider, ref)
        with pytest.raises(ConflictError):
            provider.apply(ref, None, Create(make_version(State.CURRENT), {}))
        self.assert_stored(provider, ref, first)

    def test_read_missing_returns_none(self, provider: Provider, make_ref: RefMaker) -> None:
        """Reading a path that holds nothing returns None."""
        assert provider.read(make_ref()) is None

    def test_list_includes_created_paths(self, provider: Provider, make_ref: RefMaker) -> None:
        """list() names the paths of created keysets."""
        refs = [make_ref() for _ in range(3)]
        for ref in refs:
            self.created(provider, ref)
        assert {ref.path for ref in refs} <= set(provider.list())

    def test_every_write_changes_revision(self, provider: Provider, make_ref: RefMaker) -> None:
        """Each successful step returns a keyset with a new revision, equal to what a read returns."""
        ref = make_ref()
        seen = [self.created(provider, ref)]
        seen.append(provider.apply(ref, seen[-1], UpdateMeta({"k": 1})))
        seen.append(provider.apply(ref, seen[-1], Stage(make_version())))
        self.assert_stored(provider, ref, seen[-1])
        assert len({k.revision for k in seen}) == len(seen)

    # --- transitions -------------------------------------------------------------------------------------

    def test_stage_adds_pending_and_keeps_current(self, provider: Provider, make_ref: RefMaker) -> None:
        """Staging stores the new value as pending; current is unchanged."""
        ref = make_ref()
        base = self.created(provider, ref)
        version = make_version()
        staged = provider.apply(ref, base, Stage(version))
        self.assert_stored(provider, ref, staged)
        assert_staged(provider, one(staged, State.PENDING), version)
        assert reveal(one(staged, State.PENDING)) == reveal(version)
        assert one(staged, State.CURRENT) == one(base, State.CURRENT)

    def test_read_value_reads_one_version_back(self, provider: Provider, make_ref: RefMaker) -> None:
        """read_value returns the stored value of a version (the verify read-back) and None for no such id."""
        ref = make_ref()
        version = make_version()
        staged = provider.apply(ref, self.created(provider, ref), Stage(version))
        value = provider.read_value(ref, one(staged, State.PENDING).id)
        assert value is not None
        assert value.reveal() == reveal(version)
        assert provider.read_value(ref, "f" * 32) is None

    def test_stage_same_attempt_is_idempotent(self, provider: Provider, make_ref: RefMaker) -> None:
        """Staging the same attempt again (after a re-read) leaves one pending version and writes nothing."""
        ref = make_ref()
        version = make_version(attempt="attempt-retry")
        staged = provider.apply(ref, self.created(provider, ref), Stage(version))
        again = provider.apply(ref, self.stored(provider, ref), Stage(version))
        assert again.revision == staged.revision
        self.assert_stored(provider, ref, staged)
        assert [v.state for v in again.versions].count(State.PENDING) == 1

    def test_second_stage_while_pending_is_refused(self, provider: Provider, make_ref: RefMaker) -> None:
        """A different attempt cannot stage while a pending version exists; the first one stays."""
        ref = make_ref()
        staged = self.with_pending(provider, ref)
        with pytest.raises((IllegalTransition, ConflictError)):
            provider.apply(ref, staged, Stage(make_version(attempt="another-attempt")))
        self.assert_stored(provider, ref, staged)

    def test_promote_with_grace_keeps_previous(self, provider: Provider, make_ref: RefMaker) -> None:
        """Promotion makes pending current and the old current previous until now + grace."""
        ref = make_ref()
        staged = self.with_pending(provider, ref)
        pending, old = one(staged, State.PENDING), one(staged, State.CURRENT)
        done = provider.apply(ref, staged, Promote(pending.id, NOW, GRACE))
        self.assert_stored(provider, ref, done)
        current, previous = one(done, State.CURRENT), one(done, State.PREVIOUS)
        assert (current.id, current.promoted_at) == (pending.id, NOW)
        assert (previous.id, previous.expires_at) == (old.id, NOW + GRACE)
        assert reveal(previous) == reveal(old)

    def test_promote_without_grace_retires_old_current(self, provider: Provider, make_ref: RefMaker) -> None:
        """Promotion with grace 0 (incident revocation) retires the old current at once."""
        ref = make_ref()
        staged = self.with_pending(provider, ref)
        pending, old = one(staged, State.PENDING), one(staged, State.CURRENT)
        done = provider.apply(ref, staged, Promote(pending.id, NOW, timedelta(0), "revoked in test"))
        self.assert_stored(provider, ref, done)
        assert one(done, State.CURRENT).id == pending.id
        assert done.previous is None
        revoked = done.get(old.id)
        assert (revoked.state, revoked.retired_at, revoked.reason) == (State.RETIRED, NOW, "revoked in test")

    def test_promote_again_retires_older_previous(self, provider: Provider, make_ref: RefMaker) -> None:
        """A second promotion retires the older previous ("superseded"); only one previous remains."""
        ref = make_ref()
        first = self.with_previous(provider, ref, NOW - timedelta(days=1))
        staged = provider.apply(ref, first, Stage(make_version()))
        done = provider.apply(ref, staged, Promote(one(staged, State.PENDING).id, NOW, GRACE))
        self.assert_stored(provider, ref, done)
        assert one(done, State.PREVIOUS).id == one(first, State.CURRENT).id
        old = done.get(one(first, State.PREVIOUS).id)
        assert (old.state, old.reason, old.retired_at) == (State.RETIRED, "superseded", NOW)

    def test_retire_previous(self, provider: Provider, make_ref: RefMaker) -> None:
        """Retiring the previous version ends its grace period."""
        ref = make_ref()
        done = self.with_previous(provider, ref)
        previous = one(done, State.PREVIOUS)
        retired = provider.apply(ref, done, Retire(previous.id, NOW + GRACE, "ended"))
        self.assert_stored(provider, ref, retired)
        assert retired.previous is None
        gone = retired.get(previous.id)
        assert (gone.state, gone.retired_at, gone.reason) == (State.RETIRED, NOW + GRACE, "ended")

    def test_rollback_from_previous(self, provider: Provider, make_ref: RefMaker) -> None:
        """Rollback makes previous current again and retires the rolled-back value with the reason."""
        ref = make_ref()
        done = self.with_previous(provider, ref)
        back = provider.apply(ref, done, Rollback(NOW + timedelta(hours=1), "post-check failed", WINDOW))
        self.assert_stored(provider, ref, back)
        assert one(back, State.CURRENT).id == one(done, State.PREVIOUS).id
        bad = back.get(one(done, State.CURRENT).id)
        assert bad.state is State.RETIRED
        assert "post-check failed" in (bad.reason or "")

    def test_rollback_from_retired_within_window(self, provider: Provider, make_ref: RefMaker) -> None:
        """With no previous, rollback restores the newest retired value inside the rollback window."""
        ref = make_ref()
        done = self.with_retired(provider, ref, NOW - timedelta(days=1))
        old = done.retired[0]
        back = provider.apply(ref, done, Rollback(NOW, "bad key", WINDOW))
        self.assert_stored(provider, ref, back)
        assert one(back, State.CURRENT).id == old.id
        assert reveal(one(back, State.CURRENT)) == reveal(old)

    def test_rollback_outside_window_is_illegal(self, provider: Provider, make_ref: RefMaker) -> None:
        """Rollback to a value retired before the window raises IllegalTransition and changes nothing."""
        ref = make_ref()
        done = self.with_retired(provider, ref, NOW - timedelta(days=1))
        with pytest.raises(IllegalTransition):
            provider.apply(ref, done, Rollback(NOW, "too late", timedelta(hours=12)))
        self.assert_stored(provider, ref, done)

    def test_discard_pending(self, provider: Provider, make_ref: RefMaker) -> None:
        """Discarding removes the pending version and keeps current."""
        ref = make_ref()
        staged = self.with_pending(provider, ref)
        kept = provider.apply(ref, staged, Discard(one(staged, State.PENDING).id))
        self.assert_stored(provider, ref, kept)
        assert kept.pending is None
        assert kept.current == staged.current

    def test_purge_drops_retired_beyond_window(self, provider: Provider, make_ref: RefMaker) -> None:
        """Purge forgets retired values older than the window; with nothing due it writes nothing."""
        ref = make_ref()
        done = self.with_retired(provider, ref, NOW - timedelta(days=40))
        assert provider.apply(ref, done, Purge(NOW, timedelta(days=60))).revision == done.revision
        purged = provider.apply(ref, done, Purge(NOW, WINDOW))
        self.assert_stored(provider, ref, purged)
        assert purged.retired == ()
        assert purged.current == done.current

    def test_update_meta_merges_and_deletes(self, provider: Provider, make_ref: RefMaker) -> None:
        """update_meta merges keys, and a None value removes a key."""
        ref = make_ref()
        base = self.created(provider, ref, {"a": 1, "b": {"x": [1, 2]}})
        updated = provider.apply(ref, base, UpdateMeta({"b": None, "c": "new"}))
        self.assert_stored(provider, ref, updated)
        assert dict(updated.meta) == {"a": 1, "c": "new"}

    # --- compare-and-set ---------------------------------------------------------------------------------

    def _ready_for(self, step: str, provider: Provider, ref: SecretRef) -> Keyset:
        if step in ("promote", "discard"):
            return self.with_pending(provider, ref)
        if step in ("retire", "rollback"):
            return self.with_previous(provider, ref)
        if step == "purge":
            return self.with_retired(provider, ref, NOW - timedelta(days=40))
        return self.created(provider, ref)

    def _apply(self, step: str, provider: Provider, ref: SecretRef, keyset: Keyset) -> Keyset:
        if step == "stage":
            return provider.apply(ref, keyset, Stage(make_version()))
        if step == "promote":
            return provider.apply(ref, keyset, Promote(one(keyset, State.PENDING).id, NOW, GRACE))
        if step == "retire":
            return provider.apply(ref, keyset, Retire(one(keyset, State.PREVIOUS).id, NOW, "ended"))
        if step == "rollback":
            return provider.apply(ref, keyset, Rollback(NOW, "test", WINDOW))
        if step == "discard":
            return provider.apply(ref, keyset, Discard(one(keyset, State.PENDING).id))
        if step == "purge":
            return provider.apply(ref, keyset, Purge(NOW, WINDOW))
        return provider.apply(ref, keyset, UpdateMeta({"step": step}))

    @pytest.mark.parametrize("step", STEPS)
    def test_stale_expected_conflicts(self, provider: Provider, make_ref: RefMaker, step: str) -> None:
        """Every mutating step against an outdated revision raises ConflictError and writes nothing."""
        ref = make_ref()
        stale = self._ready_for(step, provider, ref)
        fresh = provider.apply(ref, stale, UpdateMeta({"bumped": True}))
        with pytest.raises(ConflictError):
            self._apply(step, provider, ref, stale)
        self.assert_stored(provider, ref, fresh)

    @pytest.mark.parametrize("step", STEPS)
    def test_step_on_fresh_revision(self, provider: Provider, make_ref: RefMaker, step: str) -> None:
        """The same steps succeed against the current revision and return exactly what is stored."""
        ref = make_ref()
        ready = self._ready_for(step, provider, ref)
        done = self._apply(step, provider, ref, ready)
        assert done.revision != ready.revision
        self.assert_stored(provider, ref, done)

    def test_racing_stages_one_wins(self, provider: Provider, make_ref: RefMaker) -> None:
        """Two threads staging on the same revision: exactly one wins, the other gets ConflictError."""
        ref = make_ref()
        base = self.created(provider, ref)
        for _ in range(5):
            gate = threading.Barrier(2)

            def attempt(version: KeyVersion, expected: Keyset = base, gate: threading.Barrier = gate) -> str:
                gate.wait()
                try:
                    provider.apply(ref, expected, Stage(version))
                except ConflictError:
                    return "lost"
                return reveal(version)

            with ThreadPoolExecutor(2) as pool:
                winners = [o for o in pool.map(attempt, [make_version(), make_version()]) if o != "lost"]
            assert len(winners) == 1
            stored = self.stored(provider, ref)
            assert reveal(one(stored, State.PENDING)) == winners[0]
            base = provider.apply(ref, stored, Discard(one(stored, State.PENDING).id))

    def test_concurrent_increments_lose_no_update(self, provider: Provider, make_ref: RefMaker) -> None:
        """Threads doing read-modify-write with retry on conflict never lose an update."""
        ref = make_ref()
        self.created(provider, ref, {"count": 0})

        def bump(times: int) -> None:
            done = 0
            while done < times:
                current = self.stored(provider, ref)
                try:
                    provider.apply(ref, current, UpdateMeta({"count": current.meta["count"] + 1}))
                except ConflictError:
                    continue
                done += 1

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(bump, [8] * 4))
        assert self.stored(provider, ref).meta["count"] == 32

    # --- crash resume and secrecy ------------------------------------------------------------------------

    def test_crash_resume_promote(
        self, provider: Provider, make_ref: RefMaker, reopen: Callable[[], Provider]
    ) -> None:
        """A pending version left by a dead process is readable with its attempt and promotable later."""
        ref = make_ref()
        version = make_version(attempt="attempt-crashed")
        provider.apply(ref, self.created(provider, ref), Stage(version))
        later = reopen()
        found = self.stored(later, ref)
        pending = one(found, State.PENDING)
        if not assigns_ids(provider):  # a provider that assigns ids keeps no attempt token for a pending version
            assert pending.attempt == "attempt-crashed"
        assert reveal(pending) == reveal(version)
        done = later.apply(ref, found, Promote(pending.id, NOW, GRACE))
        self.assert_stored(later, ref, done)
        self.assert_stored(provider, ref, done)
        assert one(done, State.CURRENT).id == pending.id
        assert reveal(one(done, State.CURRENT)) == reveal(version)

    def test_crash_resume_discard(
        self, provider: Provider, make_ref: RefMaker, reopen: Callable[[], Provider]
    ) -> None:
        """A stale pending version left by a dead process can be discarded by a fresh instance."""
        ref = make_ref()
        staged = self.with_pending(provider, ref)
        later = reopen()
        found = self.stored(later, ref)
        kept = later.apply(ref, found, Discard(one(found, State.PENDING).id))
        self.assert_stored(provider, ref, kept)
        assert kept.pending is None
        assert kept.current == staged.current

    def test_no_value_in_repr_or_errors(self, provider: Provider, make_ref: RefMaker) -> None:
        """No secret value appears in a keyset's repr/str or in any error the provider raises."""
        ref = make_ref()
        done = self.with_previous(provider, ref)
        staged = provider.apply(ref, done, Stage(make_version()))
        texts = [repr(staged), str(staged), repr(staged.versions), repr(provider), repr(provider.read(ref))]
        failures: list[Callable[[], object]] = [
            lambda: provider.apply(ref, None, Create(make_version(State.CURRENT), {})),
            lambda: provider.apply(ref, done, Stage(make_version())),
            lambda: provider.apply(ref, staged, Discard(one(staged, State.CURRENT).id)),
            lambda: provider.apply(ref, staged, Promote("no-such-version", NOW, GRACE)),
        ]
        for fail in failures:
            with pytest.raises(RotatorError) as caught:
                fail()
            texts += [str(caught.value), repr(caught.value), str(caught.value.hint)]
        for value in filter(None, values(staged).values()):
            assert not [text for text in texts if value in text]
