"""Jitter: a fixed per-secret offset that spreads due times, never past the policy deadline."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rotator.errors import ManifestError
from rotator.keyset import Keyset, KeyVersion, State
from rotator.manifest import SecretPolicy, parse_manifest
from rotator.plan import Action, decide
from rotator.report import assess
from rotator.schedule import Schedule, jitter_offset

S, M, H, D = (timedelta(seconds=n) for n in (1, 60, 3600, 86400))
T0 = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)  # a Monday, 03:00
NAMES = [f"tenant-{i:05d}/api-key" for i in range(10_000)]


def test_the_offset_is_a_pure_function_of_the_name() -> None:
    """Same name, same offset (every replica and pass agree); pinned so a change of algorithm is seen."""
    assert jitter_offset("payments/webhook-hmac", 6 * H) == jitter_offset("payments/webhook-hmac", 6 * H)
    assert jitter_offset("payments/webhook-hmac", 6 * H) == timedelta(seconds=14100)
    assert jitter_offset("anything", timedelta(0)) == timedelta(0)


def test_10000_secrets_created_together_spread_evenly_over_the_jitter() -> None:
    """10,000 names over 6h: every offset in [0, 6h), no minute holds more than 2x its share, none is empty."""
    offsets = [jitter_offset(name, 6 * H) for name in NAMES]
    assert all(timedelta(0) <= o < 6 * H for o in offsets)
    per_minute = Counter(int(o.total_seconds()) // 60 for o in offsets)
    share = len(NAMES) / 360
    assert len(per_minute) == 360
    assert max(per_minute.values()) <= 2 * share
    assert min(per_minute.values()) >= share / 3
    assert len(set(offsets)) > 7_500  # 10,000 draws from 21,600 whole seconds: ~8,000 distinct expected
    due = Counter(Schedule(every=90 * D).due_at(T0, T0).replace(second=0) for _ in NAMES)
    assert max(due.values()) == 10_000  # without jitter: all in one minute


def test_every_moves_the_due_time_earlier_so_the_deadline_holds() -> None:
    """``every`` with jitter: due = last + every - offset, never after last + every (the deadline)."""
    for name in NAMES[:500]:
        schedule = Schedule(every=90 * D, jitter=6 * H, seed=name)
        due = schedule.due_at(T0, T0)
        assert T0 + 90 * D - 6 * H < due <= T0 + 90 * D
        assert due == T0 + 90 * D - jitter_offset(name, 6 * H)
        assert schedule.deadline(T0) == T0 + 90 * D


def test_cron_with_a_window_starts_inside_the_window() -> None:
    """Cron + window 2h + jitter 2h: due = fire + offset, inside the window; the window is judged by the fire."""
    for name in NAMES[:500]:
        schedule = Schedule(cron="0 3 * * MON", window=2 * H, jitter=2 * H, seed=name)
        due = schedule.due_at(T0, T0 + H)
        assert T0 + 7 * D <= due < T0 + 7 * D + 2 * H
        assert schedule.deadline(T0) == T0 + 7 * D + 2 * H
    late = Schedule(cron="0 3 * * MON", window=2 * H, jitter=2 * H, seed=NAMES[0])
    assert late.due_at(T0, T0 + 7 * D + 2 * H + S) == T0 + 14 * D + late.offset  # window missed: next week


def test_cron_without_a_window_is_late_by_at_most_the_jitter() -> None:
    """Cron with jitter and no window: due within ``jitter`` after the fire time, which is the deadline."""
    schedule = Schedule(cron="0 3 * * *", jitter=30 * M, seed="db/password")
    assert T0 + D <= schedule.due_at(T0, T0) < T0 + D + 30 * M
    assert schedule.deadline(T0) == T0 + D + 30 * M


def test_describe_names_the_jitter_and_this_secrets_offset() -> None:
    """``plan -o json`` shows the schedule with jitter and the secret's own offset."""
    schedule = Schedule(every=90 * D, jitter=6 * H, seed="payments/webhook-hmac")
    assert schedule.describe() == "every 90d, jitter 6h (this secret: 3h55m)"


# --- manifest -------------------------------------------------------------------------------------------------

def load(text: str) -> dict[str, SecretPolicy]:
    return parse_manifest(text, Path("rotation.yaml"), {}).secrets


def test_jitter_is_inherited_from_defaults_and_a_secret_overrides_it() -> None:
    """``defaults: {jitter: 6h}`` applies to every secret; ``jitter: 0s`` turns it off for one."""
    secrets = load("""version: 1
defaults: {every: 90d, grace: 7d, jitter: 6h}
secrets:
  - {name: a, kind: hmac}
  - {name: b, kind: hmac, jitter: 1h}
  - {name: c, kind: hmac, jitter: 0s}
""")
    assert secrets["a"].schedule.jitter == 6 * H
    assert secrets["a"].schedule.seed == "a"
    assert secrets["b"].schedule.jitter == H
    assert secrets["c"].schedule.offset == timedelta(0)


@pytest.mark.parametrize(("secret", "error"), [
    ("{name: s, kind: hmac, every: 10d, grace: 7d, notice: 1d, jitter: 4d}",
     r"secrets\[0\]\.jitter: jitter \(4d\) may be at most the interval minus the grace \(3d\)"),
    ('{name: s, kind: hmac, cron: "0 3 * * MON", window: 1h, grace: 1d, notice: 1d, jitter: 2h}',
     r"secrets\[0\]\.jitter: jitter \(2h\) may be at most the window \(1h\)"),
    ('{name: s, kind: hmac, cron: "0 3 * * *", grace: 1h, notice: 1h, jitter: 12h}',
     r"secrets\[0\]\.jitter: jitter \(12h\) must be shorter than half the cron interval \(12h\)"),
    ("{name: s, kind: hmac, jitter: soon}", r"secrets\[0\]\.jitter: must be a duration"),
])
def test_a_jitter_that_could_break_the_policy_is_refused(secret: str, error: str) -> None:
    """Jitter that could end a grace early, start outside the window, or reach the next fire is an error."""
    with pytest.raises(ManifestError, match=r"rotation.yaml:3:\d+: " + error):
        load(f"version: 1\nsecrets:\n  - {secret}\n")


def test_an_inherited_jitter_that_does_not_fit_points_at_the_secrets_interval() -> None:
    """The defaults' jitter is fine in general but too long for one secret: the error names that secret."""
    with pytest.raises(ManifestError, match=r"secrets\[0\]\.every: jitter \(2d\)"):
        load("version: 1\ndefaults: {jitter: 2d}\n"
             "secrets:\n  - {name: s, kind: hmac, every: 8d, grace: 7d, notice: 1d}\n")


# --- decide and report ----------------------------------------------------------------------------------------

MANIFEST = """version: 1
defaults: {every: 90d, grace: 7d, notice: 14d, jitter: 6h}
secrets:
  - {name: tenant-00001/api-key, kind: hmac}
  - {name: tenant-00002/api-key, kind: hmac}
"""


def promoted(at: datetime, name: str) -> Keyset:
    return Keyset(name, "1", (KeyVersion("cur00001", State.CURRENT, at, promoted_at=at),))


def test_decide_and_plan_use_the_jittered_due_time() -> None:
    """Two secrets rotated at the same instant are due at different times; notices follow the jitter."""
    secrets = load(MANIFEST)
    dues = {}
    for name, policy in secrets.items():
        decision = decide(policy, promoted(T0, name), T0 + D)
        assert decision.action is Action.NONE
        assert decision.due_at == T0 + 90 * D - policy.schedule.offset
        dues[name] = decision.due_at
        assert decision.next_at == decision.due_at - 14 * D  # the notice, jittered too
        assert decide(policy, promoted(T0, name), dues[name]).action is Action.ROTATE
        assert decide(policy, promoted(T0, name), dues[name] - S).action is Action.NOTICE
    assert len(set(dues.values())) == 2


def test_report_counts_an_early_jittered_secret_compliant_until_the_deadline() -> None:
    """A jittered secret is ``due_soon`` from its (earlier) due time and overdue only after last + every."""
    policy = load(MANIFEST)["tenant-00001/api-key"]
    keyset = promoted(T0, policy.name)
    due = T0 + 90 * D - policy.schedule.offset
    assert assess(policy, keyset, due).status == "due_soon"
    assert assess(policy, keyset, due).due_at == due
    assert assess(policy, keyset, T0 + 90 * D - S).overdue is False
    assert assess(policy, keyset, T0 + 90 * D).status == "overdue"
