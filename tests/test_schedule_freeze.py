"""Freeze windows: boundaries, joined windows, time zones, the manifest, ``decide`` and ``rotate --now``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from rotator.errors import ManifestError
from rotator.keyset import Keyset, KeyVersion, State
from rotator.manifest import SecretPolicy, parse_manifest
from rotator.plan import Action, decide
from rotator.schedule import Freeze, Schedule
from tests.conftest import Workspace, memory_runtime

S, M, H, D = (timedelta(seconds=n) for n in (1, 60, 3600, 86400))
WEEKEND = Freeze(cron="0 0 * * SAT", duration=48 * H, tz="Europe/Berlin", reason="weekend")
SAT_BERLIN = datetime(2026, 12, 4, 23, 0, tzinfo=UTC)  # Saturday 2026-12-05 00:00 CET


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_an_absolute_range_includes_its_start_and_excludes_its_end() -> None:
    """``start <= now < end``: frozen from the first second to just before the end."""
    freeze = Freeze(start=utc(2026, 12, 20), end=utc(2027, 1, 4), reason="year end")
    assert freeze.until(utc(2026, 12, 20) - S) is None
    assert freeze.until(utc(2026, 12, 20)) == utc(2027, 1, 4)
    assert freeze.until(utc(2027, 1, 4) - S) == utc(2027, 1, 4)
    assert freeze.until(utc(2027, 1, 4)) is None


def test_a_cron_window_starts_at_each_fire_time_in_its_zone_and_lasts_its_duration() -> None:
    """Saturday 00:00 Berlin for 48h: frozen from 23:00Z Friday until 23:00Z Sunday, not a second more."""
    schedule = Schedule(every=90 * D, freezes=(WEEKEND,))
    assert schedule.frozen(SAT_BERLIN - S) is None
    frozen = schedule.frozen(SAT_BERLIN)
    assert frozen is not None
    assert frozen.until == SAT_BERLIN + 48 * H
    assert str(frozen) == "frozen until 2026-12-06 23:00Z (weekend)"
    assert schedule.frozen(SAT_BERLIN + 48 * H - S) == frozen._replace(until=SAT_BERLIN + 48 * H)
    assert schedule.frozen(SAT_BERLIN + 48 * H) is None


def test_a_freeze_duration_is_elapsed_time_across_a_dst_change() -> None:
    """The weekend of 2026-10-24 (CEST -> CET on Sunday): 48 hours from Saturday 00:00 CEST."""
    start = utc(2026, 10, 23, 22)  # Saturday 00:00 CEST
    assert WEEKEND.until(start) == start + 48 * H
    assert WEEKEND.until(start - S) is None


def test_overlapping_occurrences_join_into_one_freeze() -> None:
    """Saturday and Sunday 00:00, 48h each: one freeze from Saturday until Tuesday 00:00."""
    both = Freeze(cron="0 0 * * SAT,SUN", duration=48 * H)
    assert both.until(utc(2026, 12, 5, 1)) == utc(2026, 12, 8)


def test_back_to_back_windows_of_different_freezes_are_joined() -> None:
    """A range that ends where a cron window starts gives one freeze until the later end, reasons listed."""
    release = Freeze(start=utc(2026, 12, 3), end=SAT_BERLIN, reason="release")
    schedule = Schedule(every=90 * D, freezes=(WEEKEND, release))
    frozen = schedule.frozen(utc(2026, 12, 4))
    assert frozen is not None
    assert frozen.until == SAT_BERLIN + 48 * H
    assert frozen.why == "release; weekend"


def test_the_span_memo_answers_exactly_as_a_fresh_search() -> None:
    """``until`` memoises spans; sweeping minutes forwards, backwards and at random gives the fresh answer."""
    import random

    both = Freeze(cron="0 0 * * SAT,SUN", duration=36 * H, tz="Europe/Berlin")
    start = utc(2026, 10, 20)
    moments = [start + 7 * M * i for i in range(3000)]
    shuffled = random.Random(7).sample(moments, len(moments))
    for freeze in (WEEKEND, both):
        for now in [*moments, *reversed(moments), *shuffled]:
            assert freeze.until(now) == freeze._span(now)[2], now


def test_a_window_without_reason_describes_itself() -> None:
    """The detail names the cron, zone and duration (or the range) when no reason is given."""
    assert Freeze(cron="0 9 * * MON-FRI", duration=8 * H, tz="UTC").describe() == "freeze '0 9 * * MON-FRI' UTC for 8h"
    assert Freeze(start=utc(2026, 1, 1), end=utc(2026, 1, 2)).describe() == \
        "freeze 2026-01-01 00:00Z to 2026-01-02 00:00Z"


# --- the manifest --------------------------------------------------------------------------------------------

MANIFEST = """version: 1
defaults:
  every: 30d
  grace: 1d
  notice: 1d
  tz: Europe/Berlin
  freeze:
    - {cron: "0 0 * * SAT", duration: 48h, reason: weekend}
    - {start: "2026-12-20", end: "2027-01-04T00:00+01:00", reason: year end}
secrets:
  - {name: inherits, kind: hmac}
  - name: own
    kind: hmac
    tz: America/New_York
    freeze: [{cron: "0 9 * * MON-FRI", duration: 8h, reason: business hours}]
  - {name: none, kind: hmac, freeze: []}
"""


def load(text: str = MANIFEST) -> dict[str, SecretPolicy]:
    return parse_manifest(text, Path("rotation.yaml"), {}).secrets


def test_defaults_freezes_are_inherited_in_their_zone_and_a_secret_list_replaces_them() -> None:
    """A defaults window keeps the defaults' zone; a secret's own list replaces it; ``[]`` opts out."""
    secrets = load()
    inherits = secrets["inherits"].schedule.freezes
    assert [f.reason for f in inherits] == ["weekend", "year end"]
    assert inherits[0].tz == "Europe/Berlin"
    assert inherits[1].start == utc(2026, 12, 19, 23)
    assert inherits[1].end == utc(2027, 1, 3, 23)
    own = secrets["own"].schedule.freezes
    assert [(f.reason, f.tz) for f in own] == [("business hours", "America/New_York")]
    assert secrets["none"].schedule.freezes == ()
    assert "2 freeze windows" in secrets["inherits"].schedule.describe()


@pytest.mark.parametrize(("window", "error"), [
    ('{cron: "0 0 * * SAT"}', r"secrets\[0\]\.freeze\[0\]\.duration: a cron freeze needs a duration"),
    ('{cron: "0 0 * * SAT", duration: 0s}', r"freeze\[0\]\.duration: a cron freeze needs a duration longer"),
    ('{cron: "0 0 * *", duration: 1h}', r"freeze\[0\]\.cron: must be a 5-field cron"),
    ('{start: "2026-12-20"}', r"freeze\[0\]: a freeze is either \{cron, duration\} or \{start, end\}"),
    ('{cron: "0 0 * * SAT", duration: 1h, start: "2026-12-20", end: "2026-12-21"}', r"freeze\[0\]: a freeze is"),
    ('{start: "2026-12-20", end: "2026-12-19"}', r"freeze\[0\]\.end: must be after start"),
    ('{start: "next week", end: "2026-12-19"}', r"freeze\[0\]\.start: must be an ISO date or time"),
    ('{start: "2026-12-20", end: "2026-12-21", tz: Nowhere/Land}', r"freeze\[0\]\.tz: unknown time zone"),
    ('{start: "2026-12-20", end: "2026-12-21", until: x}', r"freeze\[0\]\.until"),
])
def test_bad_freeze_windows_are_refused_with_their_position(window: str, error: str) -> None:
    """Each mistake is one ManifestError naming file:line and the field."""
    text = f"version: 1\nsecrets:\n  - name: s\n    kind: hmac\n    freeze: [{window}]\n"
    with pytest.raises(ManifestError, match=r"rotation.yaml:\d+:\d+: .*" + error):
        load(text)


# --- decide --------------------------------------------------------------------------------------------------


def keyset_promoted(at: datetime, previous_expires: datetime | None = None) -> Keyset:
    versions = [KeyVersion("cur00001", State.CURRENT, at, promoted_at=at)]
    if previous_expires is not None:
        versions.append(KeyVersion("pre00001", State.PREVIOUS, at - 30 * D, promoted_at=at - 30 * D,
                                   expires_at=previous_expires))
    return Keyset("inherits", "1", tuple(versions), {"notices": {"cycle": "cur00001", "sent": ["1d"]}})


def test_a_due_secret_inside_a_freeze_waits_and_says_until_when() -> None:
    """Due on Saturday: ``frozen`` until the weekend ends, next action then; afterwards it rotates."""
    policy = load()["inherits"]
    last = SAT_BERLIN + H - 30 * D  # due Saturday 00:00 + 1h Berlin
    decision = decide(policy, keyset_promoted(last), SAT_BERLIN + 2 * H)
    assert decision.action is Action.FROZEN
    assert decision.detail == "due, but frozen until 2026-12-06 23:00Z (weekend)"
    assert decision.due_at == last + 30 * D
    assert decision.next_at == SAT_BERLIN + 48 * H
    assert decide(policy, keyset_promoted(last), SAT_BERLIN + 48 * H).action is Action.ROTATE


def test_a_freeze_holds_back_rotations_only() -> None:
    """Inside a freeze, a previous whose grace ends is still retired, and a secret not yet due is left alone."""
    policy = load()["inherits"]
    last = SAT_BERLIN - 30 * D
    retiring = decide(policy, keyset_promoted(last, previous_expires=SAT_BERLIN + H), SAT_BERLIN + 2 * H)
    assert retiring.action is Action.RETIRE
    assert decide(policy, keyset_promoted(SAT_BERLIN - D), SAT_BERLIN + H).action is Action.NONE


def test_frozen_next_at_is_the_earlier_of_the_freeze_end_and_a_grace_end() -> None:
    """A previous whose grace ends during the freeze is retired on time: next_at is that moment."""
    policy = load()["inherits"]
    decision = decide(policy, keyset_promoted(SAT_BERLIN - 30 * D, previous_expires=SAT_BERLIN + 5 * H),
                      SAT_BERLIN + 2 * H)
    assert decision.action is Action.FROZEN
    assert decision.next_at == SAT_BERLIN + 5 * H


def test_a_freeze_over_a_whole_cron_window_waits_for_the_next_fire_time() -> None:
    """Weekly window 2h, frozen from before the fire time to after the window: the next week's fire is due."""
    text = """version: 1
secrets:
  - name: weekly
    kind: hmac
    cron: "0 3 * * MON"
    window: 2h
    grace: 1d
    notice: 1d
    freeze: [{start: "2026-12-07T02:00Z", end: "2026-12-07T06:00Z", reason: release}]
"""
    policy = load(text)["weekly"]
    keyset = keyset_promoted(utc(2026, 11, 30, 3))
    assert decide(policy, keyset, utc(2026, 12, 7, 4)).action is Action.FROZEN
    after = decide(policy, keyset, utc(2026, 12, 7, 6))
    assert after.action is Action.NONE
    assert after.due_at == utc(2026, 12, 14, 3)


# --- the engine and the CLI ----------------------------------------------------------------------------------

ENGINE_MANIFEST = """version: 1
providers: {{{store}: {{type: memory}}}}
defaults: {{provider: {store}, every: 30d, grace: 1d, notice: 1d}}
secrets:
  - name: app
    kind: hmac
    freeze: [{{start: "2000-01-01", end: "2100-01-01", reason: change freeze}}]
"""


def test_run_waits_out_a_freeze_and_rotate_now_overrides_it_saying_so(tmp_path: Path) -> None:
    """A due secret in a freeze is ``frozen``; ``force`` (rotate --now) rotates and logs the override."""
    with memory_runtime(tmp_path, ENGINE_MANIFEST) as (rt, clock, _):
        policy = rt.manifest.secret("app")
        clock.advance(31 * D)
        outcome = rt.engine.reconcile_one(policy)
        assert (outcome.action, outcome.ok) == ("frozen", True)
        assert outcome.message == "due, but frozen until 2100-01-01 00:00Z (change freeze)"
        assert outcome.next_at == datetime(2100, 1, 1, tzinfo=UTC)
        with capture_logs() as logs:
            forced = rt.engine.reconcile_one(policy, force=True, reason="incident 42")
        assert forced.action == "rotated"
        assert forced.ok
        assert forced.message.endswith("; frozen until 2100-01-01 00:00Z (change freeze): overridden by --now")
        overridden = [e for e in logs if e["event"] == "freeze.overridden"]
        assert overridden
        assert overridden[0]["why"] == "change freeze"
        assert overridden[0]["reason"] == "incident 42"


def test_plan_shows_the_freeze_and_rotate_now_says_it_overrode_it(workspace: Workspace) -> None:
    """Through the CLI: plan's action names the freeze, JSON has frozen_until, --now says it overrode it."""
    workspace.write_manifest("""
version: 1
defaults: {every: 30d, grace: 1d, notice: 1d}
secrets:
  - name: app
    kind: hmac
    freeze: [{start: "2000-01-01", end: "2100-01-01", reason: change freeze}]
""")
    assert workspace.cli("run").code == 0
    plan = workspace.cli("plan", "--at", "+31d")
    assert plan.code == 0, plan.err
    assert "frozen: due, but frozen until 2100-01-01 00:00Z (change freeze)" in plan.out
    item = workspace.cli("plan", "--at", "+31d", "-o", "json").json()["secrets"][0]
    assert item["action"] == "frozen"
    assert item["frozen_until"].startswith("2100-01-01T00:00:00")
    forced = workspace.cli("rotate", "app", "--now", "--reason", "incident")
    assert forced.code == 0, forced.err
    assert "overridden by --now" in forced.out
    assert "change freeze" in forced.out
    audit = (workspace.root / "audit.jsonl").read_text()
    assert '"freeze.overridden"' in audit
