"""A Hypothesis state machine over decide + transitions + the memory store (and the memory target): racing
actors, crashes between steps, clock jumps, forced rotations, revokes and rollbacks, checking the keyset
invariants of docs/architecture.md after every rule."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from rotator.engine import Engine
from rotator.errors import CredentialRefused, IllegalTransition, OperationFailed
from rotator.events import EventBus
from rotator.keyset import Keyset, State
from rotator.manifest import parse_manifest
from rotator.targeting import credential_of
from rotator.testing.clock import FakeClock
from rotator.testing.memory_target import MemoryTarget
from rotator.transitions import Stage

MANIFEST = """
version: 1
defaults: {provider: STORE, every: 10d, grace: 2d, notice: 1d, stale_pending_after: 1h, rollback_window: 1d}
providers:
  STORE: {type: memory}
targets:
  TARGET: {type: memory, admin: {username: root, password: "admin-pass-123"}}
secrets:
  - {name: plain, kind: hmac, bytes: 32}
  - {name: bound, kind: password, length: 24, target: {name: TARGET, username: app, strategy: alternating}}
"""
SETTLED = {"none", "wait", "backoff", "paused", "already_rotated"}


class Rotations(RuleBasedStateMachine):
    """Two actors on one store and one target."""

    def __init__(self) -> None:
        super().__init__()
        suffix = uuid.uuid4().hex[:8]
        self.store, self.target_name = f"store{suffix}", f"target{suffix}"
        text = MANIFEST.replace("STORE", self.store).replace("TARGET", self.target_name)
        self.folder = tempfile.TemporaryDirectory()
        self.manifest = parse_manifest(text, Path(self.folder.name) / "rotation.yaml")
        self.clock = FakeClock()
        self.providers = self.manifest.build_providers()
        self.engines = [self._engine(actor) for actor in ("a", "b")]
        self.revoked: set[str] = set()
        self.created: set[str] = set()

    def _engine(self, actor: str) -> Engine:
        engine = Engine(self.manifest, self.providers, EventBus(), actor=actor, clock=self.clock)
        engine.targets = self.manifest.build_targets(lambda _: ())
        return engine

    def teardown(self) -> None:
        MemoryTarget.reset(self.target_name)
        self.folder.cleanup()

    def keyset(self, name: str) -> Keyset | None:
        policy = self.manifest.secret(name)
        return self.providers.get(policy.provider).read(policy.ref)

    # --- rules -----------------------------------------------------------------------------------------

    @rule(jump=st.sampled_from([timedelta(minutes=1), timedelta(hours=2), timedelta(days=1), timedelta(days=3),
                                timedelta(days=11)]))
    def advance(self, jump: timedelta) -> None:
        self.clock.advance(jump)

    @rule(actor=st.integers(0, 1), name=st.sampled_from(["plain", "bound"]))
    def reconcile(self, actor: int, name: str) -> None:
        self.engines[actor].reconcile_one(self.manifest.secret(name))

    @rule(actor=st.integers(0, 1), name=st.sampled_from(["plain", "bound"]), revoke=st.booleans())
    def force(self, actor: int, name: str, revoke: bool) -> None:
        self.engines[actor].reconcile([self.manifest.secret(name)], force=True, revoke_previous=revoke,
                                      reason="INC-test" if revoke else None)

    @rule(actor=st.integers(0, 1), name=st.sampled_from(["plain", "bound"]))
    def crash_after_stage(self, actor: int, name: str) -> None:
        """A process dies right after its Stage write: nothing on the target, no promote."""
        policy = self.manifest.secret(name)
        keyset = self.keyset(name)
        if keyset is None or keyset.pending is not None:
            return
        engine = self.engines[actor]
        version = engine._new_version(policy, self.clock(), State.PENDING, keyset)
        self.providers.get(policy.provider).apply(policy.ref, keyset, Stage(version))

    @rule(actor=st.integers(0, 1), name=st.sampled_from(["plain", "bound"]))
    def rollback(self, actor: int, name: str) -> None:
        # nothing stored yet, nothing to roll back to, or the value before was revoked: all fine here
        with contextlib.suppress(IllegalTransition, OperationFailed):
            self.engines[actor].rollback(self.manifest.secret(name), "test rollback")

    # --- invariants ------------------------------------------------------------------------------------

    @invariant()
    def keysets_are_well_formed(self) -> None:
        for name in ("plain", "bound"):
            keyset = self.keyset(name)
            if keyset is None:
                assert name not in self.created, f"{name}: the keyset vanished"
                continue
            self.created.add(name)
            states = [v.state for v in keyset.versions]
            assert states.count(State.CURRENT) == 1, f"{name}: {states}"
            assert states.count(State.PENDING) <= 1
            keep = self.engines[0].keep_previous(self.manifest.secret(name))
            assert states.count(State.PREVIOUS) <= keep
            self.revoked |= {v.id for v in keyset.revoked}
            current = keyset.current
            assert current is not None
            assert current.id not in self.revoked, "a revoked value became current"

    @invariant()
    def the_target_accepts_what_the_store_promises(self) -> None:
        keyset = self.keyset("bound")
        if keyset is None:
            return
        policy = self.manifest.secret("bound")
        assert policy.binding is not None
        target = MemoryTarget(name=self.target_name)
        for version in (keyset.current, *keyset.previous_versions):
            credential = credential_of(version)
            assert credential is not None
            target.login(policy.binding, credential)  # current and previous in grace log in
        for version in keyset.revoked:
            credential = credential_of(version)
            assert credential is not None
            try:
                target.login(policy.binding, credential)
            except CredentialRefused:
                continue
            raise AssertionError("a revoked credential still logs in")

    @invariant()
    def a_pass_converges(self) -> None:
        """Without time passing, at most three passes settle every secret (the resume rule first)."""
        if not self.created:
            return
        for name in self.created:
            policy = self.manifest.secret(name)
            for _ in range(3):
                outcome = self.engines[0].reconcile_one(policy)
                if outcome.action in SETTLED:
                    break
            else:
                raise AssertionError(f"{name}: no settled decision after 3 passes ({outcome.action})")


TestRotations = Rotations.TestCase
TestRotations.settings = settings(max_examples=60, stateful_step_count=25, deadline=None,
                                  suppress_health_check=[HealthCheck.too_slow])
