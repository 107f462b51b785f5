"""Cron in a named time zone: wall-clock fire times, DST gaps and repeated hours, ``tz`` in the manifest."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.errors import ManifestError
from rotator.manifest import parse_manifest
from rotator.schedule import Schedule, _instant, _zoned, parse_moment, zone

BERLIN, NEW_YORK, LORD_HOWE = ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")
H, D = timedelta(hours=1), timedelta(days=1)


def fires(expr: str, tz: str, start: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants (UTC) of ``expr`` in ``tz`` from ``start``."""
    cron, out, at = _zoned(expr, tz), [], start
    for _ in range(count):
        fire = cron.first_at_or_after(at)
        out.append(fire)
        at = fire + timedelta(seconds=1)
    return out


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """An aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_cron_runs_on_the_zone_wall_clock_in_winter_and_summer() -> None:
    """03:00 in Berlin is 02:00Z in winter (CET) and 01:00Z in summer (CEST)."""
    assert fires("0 3 * * *", "Europe/Berlin", utc(2026, 1, 10), 1) == [utc(2026, 1, 10, 2)]
    assert fires("0 3 * * *", "Europe/Berlin", utc(2026, 7, 10), 1) == [utc(2026, 7, 10, 1)]


def test_a_fire_time_the_clock_skips_fires_when_the_clock_jumps() -> None:
    """02:30 does not exist in Berlin on 2026-03-29 (02:00 -> 03:00): it fires at 03:00 CEST, once."""
    got = fires("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28), 3)
    assert got == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]
    assert got[1].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"


def test_a_fire_time_the_clock_repeats_fires_once_at_its_first_occurrence() -> None:
    """02:30 happens twice in Berlin on 2026-10-25 (03:00 -> 02:00): one fire, at 02:30 CEST."""
    got = fires("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24), 3)
    assert got == [utc(2026, 10, 24, 0, 30), utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert got[1].astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CEST"


def test_half_hourly_cron_through_both_dst_changes_is_strictly_increasing() -> None:
    """No fire time goes backwards or repeats on the two change days (gap fires collapse into one)."""
    for day in (utc(2026, 3, 28, 22), utc(2026, 10, 24, 22)):
        got = fires("*/30 * * * *", "Europe/Berlin", day, 12)
        assert all(a < b for a, b in itertools.pairwise(got))
    spring = fires("*/30 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0), 4)
    assert spring == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30)]
    autumn = fires("*/30 * * * *", "Europe/Berlin", utc(2026, 10, 25, 0), 3)  # 02:00, 02:30 CEST, then 03:00 CET
    assert autumn == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2)]


def test_a_start_inside_the_second_occurrence_of_a_repeated_hour_moves_on() -> None:
    """From 02:15 CET (the second 02:15), the next 02:30 fire is the next day's, not one in the past."""
    second = datetime(2026, 10, 25, 2, 15, tzinfo=BERLIN, fold=1).astimezone(UTC)
    assert fires("30 2 * * *", "Europe/Berlin", second, 1) == [utc(2026, 10, 26, 1, 30)]


@pytest.mark.parametrize(("wall", "tz", "expected"), [
    (datetime(2026, 3, 8, 2, 30), NEW_YORK, utc(2026, 3, 8, 7, 0)),  # gap 02:00-03:00 EST->EDT
    (datetime(2026, 11, 1, 1, 30), NEW_YORK, utc(2026, 11, 1, 5, 30)),  # repeated: first (EDT)
    (datetime(2026, 10, 4, 2, 15), LORD_HOWE, utc(2026, 10, 3, 15, 30)),  # 30-minute gap 02:00-02:30
    (datetime(2026, 4, 5, 1, 45), LORD_HOWE, utc(2026, 4, 4, 14, 45)),  # repeated half hour: first (+11)
    (datetime(2026, 1, 1, 12, 0), BERLIN, utc(2026, 1, 1, 11, 0)),
])
def test_wall_clock_times_map_to_one_instant(wall: datetime, tz: ZoneInfo, expected: datetime) -> None:
    """Existing times map to themselves (first occurrence), skipped ones to the jump, 30-minute DST too."""
    assert _instant(wall, tz) == expected


@settings(max_examples=300, deadline=None, database=None)
@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 12, 31)),
       st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]),
       st.sampled_from(["30 2 * * *", "0 * * * *", "15 1-3 * * SUN", "*/20 * * * *", "0 3 1 * *"]))
def test_the_next_fire_is_never_before_the_start_and_matches_the_wall_clock(
        start: datetime, tz: str, expr: str) -> None:
    """For any start, zone and crontab: fire >= start, and its wall time is a cron time or a DST jump."""
    moment = start.replace(tzinfo=UTC)
    fire = _zoned(expr, tz).first_at_or_after(moment)
    assert fire >= moment
    assert fire - moment <= timedelta(days=32)
    local = fire.astimezone(zone(tz))
    minute, hour = expr.split()[:2]
    at_jump = (fire - timedelta(seconds=1)).astimezone(zone(tz)).utcoffset() != local.utcoffset()
    if not at_jump:
        assert local.minute % 20 == 0 if minute == "*/20" else local.minute == int(minute)
        if "-" in hour:
            assert 1 <= local.hour <= 3
        elif hour != "*":
            assert local.hour == int(hour)


def test_weekly_rotation_in_a_zone_follows_local_monday_3am() -> None:
    """``cron: 0 3 * * MON`` in Berlin is due at 03:00 local on the next Monday, DST or not."""
    schedule = Schedule(cron="0 3 * * MON", tz="Europe/Berlin")
    assert schedule.due_at(utc(2026, 3, 23, 2), utc(2026, 3, 24)) == utc(2026, 3, 30, 1)  # CEST since 29th
    assert schedule.due_at(utc(2026, 10, 19, 1), utc(2026, 10, 20)) == utc(2026, 10, 26, 2)  # CET since 25th
    assert Schedule(cron="0 3 * * MON").due_at(utc(2026, 3, 23, 3), utc(2026, 3, 24)) == utc(2026, 3, 30, 3)


def test_a_window_that_starts_in_a_gap_opens_when_the_clock_jumps() -> None:
    """``30 2 * * *`` with a 1h window on the spring change day: due at 03:00 CEST, open until 04:00 CEST."""
    schedule = Schedule(cron="30 2 * * *", window=H, tz="Europe/Berlin")
    last = utc(2026, 3, 28, 1, 30)
    assert schedule.due_at(last, utc(2026, 3, 29, 1, 59)) == utc(2026, 3, 29, 1)
    assert schedule.due_at(last, utc(2026, 3, 29, 2, 1)) == utc(2026, 3, 30, 0, 30)  # missed: the next one


@pytest.mark.parametrize("bad", ["Mars/Olympus", "../etc/passwd", "", "Europe/"])
def test_unknown_zones_are_refused_in_words(bad: str) -> None:
    """A name that is no IANA zone is a ValueError naming it, never a traceback from zoneinfo."""
    with pytest.raises(ValueError, match="unknown time zone"):
        zone(bad)


@pytest.mark.parametrize(("text", "tz", "expected"), [
    ("2026-12-20T18:00", "Europe/Berlin", utc(2026, 12, 20, 17)),
    ("2026-07-01", "Europe/Berlin", utc(2026, 6, 30, 22)),
    ("2026-12-20T18:00+05:00", "Europe/Berlin", utc(2026, 12, 20, 13)),
    ("2026-12-20T18:00Z", "America/New_York", utc(2026, 12, 20, 18)),
    (date(2026, 1, 2), "UTC", utc(2026, 1, 2)),
])
def test_parse_moment(text: str | date, tz: str, expected: datetime) -> None:
    """ISO dates and times; without an offset they are wall-clock times in the given zone."""
    assert parse_moment(text, tz) == expected


def test_manifest_tz_applies_to_cron_and_is_checked_with_its_position() -> None:
    """``tz`` in defaults is inherited, a secret's own wins, and an unknown zone names file:line:col."""
    text = """version: 1
defaults: {cron: "0 3 * * *", tz: Europe/Berlin, grace: 1h, notice: 1h}
secrets:
  - {name: a, kind: hmac}
  - {name: b, kind: hmac, tz: America/New_York}
"""
    secrets = parse_manifest(text, Path("rotation.yaml"), {}).secrets
    assert secrets["a"].schedule.tz == "Europe/Berlin"
    assert secrets["b"].schedule.tz == "America/New_York"
    assert secrets["a"].schedule.due_at(utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)) == utc(2026, 1, 2, 2)
    assert "America/New_York" in secrets["b"].schedule.describe()
    with pytest.raises(ManifestError, match=r"rotation.yaml:5:\d+: secrets\[1\]\.tz: unknown time zone 'Mars/X'"):
        parse_manifest(text.replace("America/New_York", "Mars/X"), Path("rotation.yaml"), {})
