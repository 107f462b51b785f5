"""The engine on the in-memory provider with a fake clock: every step, the resume rule, races, hooks."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.engine import Engine, Outcome
from rotator.events import Event, EventBus
from rotator.keyset import KeyVersion, State
from rotator.manifest import Manifest, parse_manifest
from rotator.testing.clock import FakeClock

HEADER = """
version: 1
defaults: {provider: mem, every: 10d, grace: 2d, notice: [3d, 1d], stale_pending_after: 1h,
           rollback_window: 1d}
providers:
  mem: {type: memory}
secrets:
"""


class Harness:
    """An engine over a fresh memory store, recording every event."""

    def __init__(self, tmp_path: Path, secrets_yaml: str) -> None:
        self.store = f"mem-{uuid.uuid4().hex}"
        text = HEADER.replace("mem:", f"{self.store}:").replace("provider: mem", f"provider: {self.store}")
        self.manifest: Manifest = parse_manifest(text + secrets_yaml, tmp_path / "rotation.yaml")
        self.clock = FakeClock()
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self.providers = self.manifest.build_providers()

    def engine(self, actor: str = "test") -> Engine:
        bus = EventBus()
        bus.subscribe(self._record, critical=True)
        return Engine(self.manifest, self.providers, bus, actor=actor, clock=self.clock)

    def _record(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def run(self, name: str, **kwargs: Any) -> Outcome:
        return self.engine().reconcile_one(self.manifest.secret(name), **kwargs)

    def keyset(self, name: str) -> Any:
        policy = self.manifest.secret(name)
        return self.providers.get(policy.provider).read(policy.ref)

    def kinds(self) -> list[str]:
        return [str(e.type) for e in self.events]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    """A harness with one HMAC secret and one API key with a passing verify hook."""
    return Harness(tmp_path, """
  - {name: hmac, kind: hmac}
  - {name: key, kind: api_key, prefix: "t_", consumers: [gateway], verify: {command: ["true"]}}
""")


def test_first_run_creates_current(h: Harness) -> None:
    """A missing secret is created with one current value and a succeeded event marked initial."""
    outcome = h.run("hmac")
    assert (outcome.ok, outcome.action) == (True, "created")
    keyset = h.keyset("hmac")
    assert [v.state for v in keyset.versions] == [State.CURRENT]
    assert h.kinds() == ["rotation.succeeded"]
    assert h.events[0].details["initial"] is True


def test_not_due_does_nothing_then_due_rotates_with_grace(h: Harness) -> None:
    """Before `every` nothing happens; after it the old value stays accepted as previous for `grace`."""
    h.run("hmac")
    first = h.keyset("hmac").current
    h.clock.advance(timedelta(days=5))
    assert h.run("hmac").action == "none"
    h.clock.advance(timedelta(days=5, seconds=1))
    outcome = h.run("hmac")
    assert outcome.action == "rotated"
    keyset = h.keyset("hmac")
    assert keyset.previous.id == first.id
    assert keyset.previous.expires_at == h.clock() + timedelta(days=2)
    assert keyset.current.id == outcome.new_version


def test_previous_retired_when_grace_ends(h: Harness) -> None:
    """Once the grace deadline passes, a run retires the previous value and emits key.retired."""
    h.run("hmac")
    h.run("hmac", force=True)
    old = h.keyset("hmac").previous
    h.clock.advance(timedelta(days=2, seconds=1))
    assert h.run("hmac").action == "retired"
    retired = h.keyset("hmac").get(old.id)
    assert retired.state is State.RETIRED
    assert h.kinds()[-1] == "key.retired"


def test_notice_sent_once_per_lead_time_per_cycle(h: Harness) -> None:
    """Each notice lead time is announced exactly once per cycle, however many runs happen."""
    h.run("hmac")
    h.clock.advance(timedelta(days=7, hours=1))  # 3d before due
    assert h.run("hmac").action == "noticed"
    assert h.run("hmac").action == "none"
    h.clock.advance(timedelta(days=2))  # 1d before due
    assert h.run("hmac").action == "noticed"
    assert h.run("hmac").action == "none"
    assert h.kinds().count("rotation.upcoming") == 2
    h.clock.advance(timedelta(days=1))
    assert h.run("hmac").action == "rotated"
    h.clock.advance(timedelta(days=7, hours=1))
    assert h.run("hmac").action == "noticed"  # a new cycle announces again


def test_missed_notices_collapse_into_one(h: Harness) -> None:
    """A run that wakes up after both lead times passed sends one notice and marks both sent."""
    h.run("hmac")
    h.clock.advance(timedelta(days=9, hours=12))
    assert h.run("hmac").action == "noticed"
    assert h.run("hmac").action == "none"
    assert h.kinds().count("rotation.upcoming") == 1


def test_verify_runs_on_the_first_value_too(tmp_path: Path) -> None:
    """The verify hook checks the first value before it is stored: a refusal stores nothing."""
    h = Harness(tmp_path, '  - {name: s, kind: hmac, verify: {command: ["false"]}}\n')
    outcome = h.run("s")
    assert not outcome.ok
    assert "verify failed" in outcome.message
    assert h.keyset("s") is None


def test_revoke_previous_retires_old_value_at_once(h: Harness) -> None:
    """Incident path: the old current is revoked (terminal) immediately and the consumers are named."""
    h.run("key")
    old = h.keyset("key").current
    outcome = h.run("key", force=True, revoke_previous=True, reason="leaked")
    assert outcome.action == "revoked"
    assert outcome.consumers == ("gateway",)
    keyset = h.keyset("key")
    assert keyset.previous is None
    assert keyset.get(old.id).state is State.REVOKED
    assert "key.revoked" in h.kinds()


def test_rollback_restores_previous(h: Harness) -> None:
    """Rollback makes the previous value current again and retires the rolled-back one."""
    h.run("hmac")
    first = h.keyset("hmac").current
    second = h.run("hmac", force=True).new_version
    outcome = h.engine().rollback(h.manifest.secret("hmac"), "broke clients")
    assert outcome.new_version == first.id
    keyset = h.keyset("hmac")
    assert keyset.current.id == first.id
    assert keyset.get(second).state is State.RETIRED
    assert h.kinds()[-1] == "rotation.rolled_back"


def test_rollback_within_window_after_retirement(h: Harness) -> None:
    """A retired value can still be rolled back to within rollback_window, not after."""
    h.run("hmac")
    h.run("hmac", force=True)
    h.clock.advance(timedelta(days=2, seconds=1))
    h.run("hmac")  # retires the previous
    assert h.engine().rollback(h.manifest.secret("hmac"), "late problem").ok
    h.run("hmac", force=True)
    h.clock.advance(timedelta(days=2, seconds=1))
    h.run("hmac")
    h.clock.advance(timedelta(days=2))
    with pytest.raises(Exception, match="nothing to roll back to"):
        h.engine().rollback(h.manifest.secret("hmac"), "too late")


def _stage_pending(h: Harness, name: str, age: timedelta) -> KeyVersion:
    """Leave a pending version as a crashed run would (staged, never promoted)."""
    from rotator.generators import generate

    policy = h.manifest.secret(name)
    provider = h.providers.get(policy.provider)
    token = uuid.uuid4().hex
    version = KeyVersion(id=token, state=State.PENDING, created_at=h.clock() - age, attempt=token,
                         value=generate(policy.params).value)
    provider.stage(policy.ref, provider.read(policy.ref), version)
    return version


def test_resume_finishes_a_crashed_attempt(h: Harness) -> None:
    """A fresh pending left by a crash is verified and promoted by the next run, not replaced."""
    h.run("key")
    pending = _stage_pending(h, "key", timedelta(minutes=5))
    outcome = h.run("key")
    assert outcome.action == "resumed"
    assert h.keyset("key").current.id == pending.id


def test_revoke_that_finds_a_pending_attempt_still_revokes(h: Harness) -> None:
    """An incident revoke that resumes a crashed attempt promotes it as a revoke: the old key is revoked."""
    h.run("key")
    old = h.keyset("key").current
    pending = _stage_pending(h, "key", timedelta(minutes=5))
    outcome = h.run("key", force=True, revoke_previous=True, reason="leaked")
    keyset = h.keyset("key")
    assert keyset.current.id == pending.id
    assert keyset.previous is None
    assert keyset.get(old.id).state is State.REVOKED
    assert (outcome.ok, outcome.action, outcome.consumers) == (True, "revoked", ("gateway",))
    assert "key.revoked" in h.kinds()


def test_stale_pending_is_discarded(h: Harness) -> None:
    """A pending older than stale_pending_after is abandoned; the secret is not rotated if not due."""
    h.run("key")
    current = h.keyset("key").current
    pending = _stage_pending(h, "key", timedelta(hours=2))
    outcome = h.run("key")
    keyset = h.keyset("key")
    assert keyset.pending is None
    assert keyset.current.id == current.id
    assert pending.id not in [v.id for v in keyset.versions]
    assert outcome.ok


def test_failed_verify_keeps_current_and_backs_off(tmp_path: Path) -> None:
    """A failing verify hook leaves current untouched, emits rotation.failed and backs off retries."""
    h = Harness(tmp_path, '  - {name: s, kind: hmac, verify: {command: ["sh", "-c", "test ! -e fail"]}}\n')
    h.run("s")
    current = h.keyset("s").current
    (tmp_path / "fail").touch()
    h.clock.advance(timedelta(days=10, seconds=1))
    outcome = h.run("s")
    assert not outcome.ok
    assert "verify failed" in outcome.message
    keyset = h.keyset("s")
    assert keyset.current.id == current.id
    assert keyset.pending is None
    assert keyset.meta["failures"] == 1
    assert h.kinds()[-1] == "rotation.failed"
    assert h.run("s").action == "backoff"
    h.clock.advance(timedelta(minutes=2))
    assert not h.run("s").ok  # retried after the backoff, fails again
    assert h.keyset("s").meta["failures"] == 2


def test_post_check_failure_rolls_back_automatically(tmp_path: Path) -> None:
    """With auto_rollback, a failing post_check makes the previous value current again."""
    h = Harness(tmp_path, '  - {name: s, kind: hmac, post_check: {command: ["false"]}, auto_rollback: true}\n')
    h.run("s")
    first = h.keyset("s").current
    outcome = h.run("s", force=True)
    assert (outcome.ok, outcome.action) == (False, "rolled_back")
    assert h.keyset("s").current.id == first.id
    assert h.kinds()[-3:] == ["rotation.succeeded", "rotation.failed", "rotation.rolled_back"]


def test_paused_secret_is_left_alone(tmp_path: Path) -> None:
    """enabled: false pauses a secret entirely."""
    h = Harness(tmp_path, "  - {name: s, kind: hmac, enabled: false}\n")
    assert h.run("s").action == "paused"
    assert h.keyset("s") is None


def test_unmanaged_value_needs_adopt(tmp_path: Path) -> None:
    """A foreign value is not overwritten unless the manifest says adopt: true."""
    h = Harness(tmp_path, "  - {name: s, kind: hmac}\n  - {name: t, kind: hmac, adopt: true}\n")
    for name in ("s", "t"):
        policy = h.manifest.secret(name)
        provider = h.providers.get(policy.provider)
        provider.put_foreign(policy.ref, "x" * 44, h.clock())  # type: ignore[attr-defined]
    refused = h.run("s")
    assert not refused.ok
    assert "adopt: true" in refused.message
    assert h.run("t").ok
    assert h.keyset("t").managed


def test_racing_actors_rotate_exactly_once(h: Harness) -> None:
    """Eight engines reconciling the same due secret at once produce exactly one rotation."""
    h.run("key")
    h.clock.advance(timedelta(days=10, seconds=1))
    outcomes: list[Outcome] = []
    barrier = threading.Barrier(8)

    def actor(i: int) -> None:
        engine = h.engine(f"actor-{i}")
        barrier.wait()
        outcomes.append(engine.reconcile_one(h.manifest.secret("key")))

    threads = [threading.Thread(target=actor, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o.ok for o in outcomes), [o.message for o in outcomes]
    assert h.kinds().count("rotation.succeeded") == 2  # the initial create + exactly one rotation
    keyset = h.keyset("key")
    assert keyset.pending is None
    assert keyset.previous is not None


def test_dry_run_changes_nothing(h: Harness) -> None:
    """--dry-run reports what would happen without writing or emitting anything."""
    outcome = h.run("hmac", dry_run=True)
    assert outcome.action == "would create"
    assert h.keyset("hmac") is None
    assert h.events == []


def test_no_value_in_outcomes_or_events(h: Harness) -> None:
    """Neither outcomes nor events carry a secret value."""
    texts = [repr(h.run("key")), repr(h.run("key", force=True)), repr(h.run("hmac"))]
    texts += [repr(e.to_dict()) for e in h.events]
    values = [v.value.reveal() for name in ("key", "hmac") for v in h.keyset(name).versions if v.value]
    assert values
    for value in values:
        assert all(value not in text for text in texts)


def test_a_settled_pass_says_when_the_secret_needs_attention_next(h: Harness) -> None:
    """The daemon schedules from ``Outcome.next_at`` instead of reading the keyset a second time."""
    from rotator.plan import decide

    h.run("hmac")
    h.clock.advance(timedelta(days=1))
    settled = h.run("hmac")
    policy = h.manifest.secret("hmac")
    assert settled.action == "none"
    assert settled.next_at is not None
    assert settled.next_at == decide(policy, h.keyset("hmac"), h.clock()).next_at
    h.clock.advance(timedelta(days=10))
    rotated = h.run("hmac")
    assert rotated.action == "rotated"
    assert rotated.next_at is None  # ended on a step: the caller decides on a fresh read
