"""``plan.decide``: the one action a reconcile pass takes for a secret, and when it next needs attention."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.keyset import Keyset, KeyVersion, State
from rotator.manifest import SecretPolicy, parse_manifest
from rotator.plan import FAILURE_BACKOFF_MAX, Action, decide, last_rotation, notice_key

M, H, D = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
MONDAY_3AM = datetime(2025, 3, 10, 3, 0, tzinfo=UTC)  # NOW is the same Monday, 09:00 later

MANIFEST = """version: 1
secrets:
  - {name: main, kind: hmac, every: 30d, grace: 3d, notice: [7d, 1d], stale_pending_after: 1h,
     rollback_window: 24h}
  - {name: paused, kind: hmac, enabled: false}
  - {name: adoptable, kind: hmac, adopt: true}
  - {name: weekly, kind: hmac, cron: "0 3 * * MON", window: 2h, grace: 1d, notice: 1d}
  - {name: odd-notices, kind: hmac, every: 30d, notice: [1d2h, 1d2h3m]}
"""


@pytest.fixture(scope="module")
def policies() -> dict[str, SecretPolicy]:
    """The test manifest's policies."""
    return parse_manifest(MANIFEST, Path("rotation.yaml"), {}).secrets


@pytest.fixture
def main(policies: dict[str, SecretPolicy]) -> SecretPolicy:
    """Every 30d, 3d grace, notices 7d and 1d ahead, stale pending after 1h, rollback window 24h."""
    return policies["main"]


def version(vid: str, state: State, age: timedelta, **times: timedelta) -> KeyVersion:
    """A version created ``age`` before NOW; ``promoted=``/``expires=``/``retired=`` are offsets from NOW."""
    fields = {f"{name}_at": NOW + offset for name, offset in times.items()}
    return KeyVersion(vid, state, NOW - age, **fields)


def keyset(*versions: KeyVersion, meta: Mapping[str, Any] | None = None, managed: bool = True) -> Keyset:
    """A keyset of ``versions``."""
    return Keyset("main", "1", versions, dict(meta or {}), managed)


def current(age: timedelta, vid: str = "cur00001") -> KeyVersion:
    """A current version promoted ``age`` ago."""
    return version(vid, State.CURRENT, age, promoted=-age)


# --- what exists -------------------------------------------------------------------------------------------


def test_paused_secret_does_nothing(policies: dict[str, SecretPolicy]) -> None:
    """``enabled: false`` is PAUSED whatever is stored, with nothing scheduled."""
    for stored in (None, keyset(current(90 * D))):
        decision = decide(policies["paused"], stored, NOW)
        assert (decision.action, decision.due_at, decision.next_at) == (Action.PAUSED, None, None)


def test_create_when_nothing_is_stored(main: SecretPolicy) -> None:
    """No keyset yet: CREATE, due and needed now."""
    decision = decide(main, None, NOW)
    assert (decision.action, decision.due_at, decision.next_at) == (Action.CREATE, NOW, NOW)


def test_unmanaged_value_is_adopted_only_when_allowed(main: SecretPolicy, policies: dict[str, SecretPolicy]) -> None:
    """A value rotator did not write is ADOPTed with ``adopt: true``, else reported UNMANAGED and left alone."""
    foreign = keyset(version("legacy", State.CURRENT, 400 * D), managed=False)
    adopt = decide(policies["adoptable"], foreign, NOW)
    assert (adopt.action, adopt.next_at) == (Action.ADOPT, NOW)
    unmanaged = decide(main, foreign, NOW)
    assert (unmanaged.action, unmanaged.next_at) == (Action.UNMANAGED, None)
    assert "adopt: true" in unmanaged.detail


# --- interrupted rotations ---------------------------------------------------------------------------------


def test_fresh_pending_is_resumed(main: SecretPolicy) -> None:
    """A pending version younger than ``stale_pending_after`` is RESUMEd (verified and promoted)."""
    stored = keyset(current(2 * D), version("pend0001", State.PENDING, 10 * M))
    decision = decide(main, stored, NOW)
    assert (decision.action, decision.next_at) == (Action.RESUME, NOW)
    assert "pend0001" in decision.detail
    assert decide(main, keyset(current(2 * D), version("p", State.PENDING, H)), NOW).action is Action.RESUME


def test_stale_pending_is_discarded(main: SecretPolicy) -> None:
    """A pending version older than ``stale_pending_after`` is DISCARDed, even if a rotation is due."""
    stored = keyset(current(60 * D), version("pend0001", State.PENDING, H + M))
    decision = decide(main, stored, NOW)
    assert (decision.action, decision.next_at) == (Action.DISCARD, NOW)


# --- grace, rotation, purge --------------------------------------------------------------------------------


def test_expired_previous_is_retired_first(main: SecretPolicy) -> None:
    """A previous version whose grace ended is RETIREd, before a due rotation."""
    stored = keyset(current(40 * D), version("prev0001", State.PREVIOUS, 80 * D, expires=-M))
    decision = decide(main, stored, NOW)
    assert (decision.action, decision.due_at) == (Action.RETIRE, NOW - 10 * D)
    assert "prev0001" in decision.detail


def test_due_rotation(main: SecretPolicy) -> None:
    """Thirty days after the last promotion the secret ROTATEs; due_at says since when."""
    decision = decide(main, keyset(current(30 * D + M)), NOW)
    assert (decision.action, decision.due_at, decision.next_at) == (Action.ROTATE, NOW - M, NOW)
    assert decision.detail == "due"
    assert decide(main, keyset(current(30 * D)), NOW).action is Action.ROTATE  # exactly due


def test_no_current_value_rotates_now(main: SecretPolicy) -> None:
    """A managed keyset without a current version (everything retired) rotates at once."""
    stored = keyset(version("old00001", State.RETIRED, 90 * D, retired=-H))
    decision = decide(main, stored, NOW)
    assert (decision.action, decision.due_at, decision.detail) == (Action.ROTATE, NOW, "no current value")


def test_last_rotation_is_promotion_or_creation() -> None:
    """The last rotation is when the current version was promoted, or created if it never was."""
    assert last_rotation(keyset(current(5 * D))) == NOW - 5 * D
    assert last_rotation(keyset(version("c", State.CURRENT, 9 * D))) == NOW - 9 * D
    assert last_rotation(keyset()) is None


def test_purge_after_the_rollback_window(main: SecretPolicy) -> None:
    """A retired version is PURGEd once its rollback window (24h) has passed, not before."""
    old = version("ret00001", State.RETIRED, 60 * D, retired=-(D + M))
    assert decide(main, keyset(current(2 * D), old), NOW).action is Action.PURGE
    recent = version("ret00001", State.RETIRED, 60 * D, retired=-H)
    decision = decide(main, keyset(current(2 * D), recent), NOW)
    assert (decision.action, decision.next_at) == (Action.NONE, NOW + 23 * H)


# --- notices -----------------------------------------------------------------------------------------------


def test_notice_lead_times_are_each_sent_once_per_cycle(main: SecretPolicy) -> None:
    """7d ahead, then 1d ahead: each lead time once for the current cycle, recorded in meta ``notices``."""
    cur = current(25 * D)  # due in 5 days: the 7d notice is reached, the 1d one is not
    due = NOW + 5 * D
    first = decide(main, keyset(cur), NOW)
    assert (first.action, first.notice, first.due_at, first.next_at) == (Action.NOTICE, 7 * D, due, NOW)
    sent_7d = {"notices": {"cycle": cur.id, "sent": ["7d"]}}
    quiet = decide(main, keyset(cur, meta=sent_7d), NOW)
    assert (quiet.action, quiet.next_at) == (Action.NONE, due - D)
    second = decide(main, keyset(cur, meta=sent_7d), due - 12 * H)
    assert (second.action, second.notice) == (Action.NOTICE, D)
    both = {"notices": {"cycle": cur.id, "sent": ["1d", "7d"]}}
    done = decide(main, keyset(cur, meta=both), due - 12 * H)
    assert (done.action, done.next_at) == (Action.NONE, due)


def test_notices_of_an_earlier_cycle_do_not_count(main: SecretPolicy) -> None:
    """After a rotation the record of the previous cycle is ignored: the new cycle is announced again."""
    record = {"notices": {"cycle": "an-older-version", "sent": ["7d", "1d"]}}
    decision = decide(main, keyset(current(25 * D), meta=record), NOW)
    assert (decision.action, decision.notice) == (Action.NOTICE, 7 * D)


def test_late_start_sends_only_the_most_urgent_notice(main: SecretPolicy) -> None:
    """When several lead times have passed unsent, one NOTICE with the shortest lead is sent."""
    decision = decide(main, keyset(current(29 * D + 12 * H)), NOW)
    assert (decision.action, decision.notice) == (Action.NOTICE, D)


def test_notice_keys_are_exact(policies: dict[str, SecretPolicy]) -> None:
    """Lead times that print alike (``1d2h`` / ``1d2h3m``) are recorded apart, so neither is skipped."""
    assert notice_key(14 * D) == "14d"
    assert notice_key(D + 2 * H) == "1d2h"
    assert notice_key(D + 2 * H + 3 * M) != notice_key(D + 2 * H)
    policy = policies["odd-notices"]
    cur = current(28 * D + 21 * H)  # due in 1d3h: the 1d2h3m lead is reached at NOW+57m, 1d2h at NOW+1h
    first = decide(policy, keyset(cur), NOW + 58 * M)
    assert (first.action, first.notice) == (Action.NOTICE, D + 2 * H + 3 * M)
    record = {"notices": {"cycle": cur.id, "sent": [notice_key(first.notice)]}}
    second = decide(policy, keyset(cur, meta=record), NOW + H)
    assert (second.action, second.notice) == (Action.NOTICE, D + 2 * H)


# --- failures ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "delay"), [(1, M), (2, 2 * M), (3, 4 * M), (7, FAILURE_BACKOFF_MAX),
                                                 (60, FAILURE_BACKOFF_MAX), (10_000, FAILURE_BACKOFF_MAX)])
def test_backoff_after_failures(main: SecretPolicy, failures: int, delay: timedelta) -> None:
    """After N failed attempts a due rotation waits 2**(N-1) minutes (at most an hour), then rotates."""
    last_failure = NOW - 10 * timedelta(seconds=1)
    meta = {"failures": failures, "last_failure_at": last_failure.isoformat()}
    stored = keyset(current(31 * D), meta=meta)
    waiting = decide(main, stored, NOW)
    assert (waiting.action, waiting.next_at) == (Action.BACKOFF, last_failure + delay)
    assert decide(main, stored, last_failure + delay).action is Action.ROTATE


def test_backoff_does_not_delay_retirement(main: SecretPolicy) -> None:
    """While backing off, an expiring previous version is still the next thing to wake up for."""
    meta = {"failures": 7, "last_failure_at": NOW.isoformat()}
    stored = keyset(current(31 * D), version("prev0001", State.PREVIOUS, 60 * D, expires=10 * M), meta=meta)
    decision = decide(main, stored, NOW)
    assert (decision.action, decision.next_at) == (Action.BACKOFF, NOW + 10 * M)


# --- nothing to do -----------------------------------------------------------------------------------------


def test_none_reports_the_earliest_upcoming_time(main: SecretPolicy) -> None:
    """NONE's next_at is the earliest of: due time, notice times, grace end, end of a rollback window."""
    cur = current(2 * D)
    prev = version("prev0001", State.PREVIOUS, 40 * D, expires=D)
    retired = version("ret00001", State.RETIRED, 80 * D, retired=-2 * H)
    decision = decide(main, keyset(cur, prev, retired), NOW)
    assert (decision.action, decision.due_at, decision.next_at) == (Action.NONE, NOW + 28 * D, NOW + 22 * H)
    decision = decide(main, keyset(cur, prev), NOW)
    assert decision.next_at == NOW + D  # the grace end
    decision = decide(main, keyset(cur), NOW)
    assert decision.next_at == NOW + 21 * D  # the 7d notice


def test_cron_window_missed_waits_for_next_fire(policies: dict[str, SecretPolicy]) -> None:
    """A weekly cron with a 2h window rotates inside the window; once it is missed, next week."""
    weekly = policies["weekly"]
    cur = version("cur00001", State.CURRENT, 8 * D, promoted=MONDAY_3AM - 7 * D - NOW)
    inside = decide(weekly, keyset(cur), MONDAY_3AM + H)
    assert (inside.action, inside.due_at) == (Action.ROTATE, MONDAY_3AM)
    missed = decide(weekly, keyset(cur, meta={"notices": {"cycle": cur.id, "sent": ["1d"]}}), NOW)
    assert (missed.action, missed.due_at, missed.next_at) == (Action.NONE, MONDAY_3AM + 7 * D, MONDAY_3AM + 7 * D)
