"""Durations and schedules: parsing, formatting, cron checks and when a rotation falls due."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rotator.schedule import MAX_DURATION, Schedule, check_cron, format_duration, parse_duration

S, M, H, D, W = (timedelta(seconds=n) for n in (1, 60, 3600, 86400, 604800))
MONDAY_3AM = datetime(2025, 1, 6, 3, 0, tzinfo=UTC)  # a Monday
WEEKLY = "0 3 * * MON"


# --- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("0s", timedelta(0)), ("45s", 45 * S), ("5m", 5 * M), ("12h", 12 * H), ("90d", 90 * D), ("2w", 2 * W),
    ("1h30m", H + 30 * M), ("1w2d3h4m5s", W + 2 * D + 3 * H + 4 * M + 5 * S), ("1.5h", 90 * M),
    (" 7D ", 7 * D), ("36500d", MAX_DURATION),
])
def test_parse_duration(text: str, expected: timedelta) -> None:
    """Units s m h d w, compound and fractional forms, any case, surrounding blanks ignored."""
    assert parse_duration(text) == expected


def test_parse_duration_passes_timedeltas_through() -> None:
    """An already-parsed value is returned unchanged (pydantic may validate twice)."""
    assert parse_duration(3 * D) == 3 * D


@pytest.mark.parametrize("bad", ["", "7", "d", "7x", "-1d", "1d 2h", "1 d", "P7D", "7days", "1e3s", "h1", None, 7,
                                 7.5, [], "∞d"])
def test_parse_duration_rejects_with_a_human_message(bad: object) -> None:
    """Anything else is a ValueError that shows the expected form."""
    with pytest.raises(ValueError, match="must be a duration like 7d"):
        parse_duration(bad)


@pytest.mark.parametrize("huge", ["36501d", "99999999999999d", "9" * 400 + "s", "1000000w"])
def test_parse_duration_rejects_absurd_lengths(huge: str) -> None:
    """Over 100 years is refused with a message, never an OverflowError from timedelta."""
    with pytest.raises(ValueError, match=r"must be at most 36500d \(100 years\)"):
        parse_duration(huge)


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(0), "0s"), (7 * D, "7d"), (W, "7d"), (90 * M, "1h30m"), (H, "1h"), (59 * S, "59s"),
    (-2 * H, "-2h"), (D + 2 * H + 3 * M, "1d2h"), (timedelta(milliseconds=1500), "1s"),
])
def test_format_duration(delta: timedelta, text: str) -> None:
    """Compact form with the two largest units (days at most); sub-seconds are dropped."""
    assert format_duration(delta) == text


@settings(max_examples=100, deadline=None, database=None)
@given(st.tuples(st.integers(0, 10_000), st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)),
       st.sets(st.integers(0, 3), min_size=1, max_size=2))
def test_two_unit_durations_round_trip(parts: tuple[int, int, int, int], kept: set[int]) -> None:
    """format then parse gives the same duration back whenever it has at most two units."""
    delta = sum((n * unit for i, (n, unit) in enumerate(zip(parts, (D, H, M, S), strict=True)) if i in kept),
                timedelta(0))
    assert parse_duration(format_duration(delta)) == delta


# --- cron --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("expr", [WEEKLY, "*/15 * * * *", "0 0 1 * *", "30 2 * * 1-5", "0 3 29 2 *"])
def test_check_cron_accepts_crontabs(expr: str) -> None:
    """Five-field crontab expressions, with names, ranges and steps, are accepted."""
    check_cron(expr)


@pytest.mark.parametrize(("expr", "why"), [
    ("0 3 * *", "must be a 5-field cron expression"),
    ("0 3 * * * *", "must be a 5-field cron expression"),
    ("@daily", "must be a 5-field cron expression"),
    ("61 3 * * *", "invalid cron expression"),
    ("0 3 * * FUNDAY", "invalid cron expression"),
    ("0 0 31 2 *", "never fires"),
])
def test_check_cron_rejects(expr: str, why: str) -> None:
    """Wrong field counts, out-of-range values and dates that never occur are refused."""
    with pytest.raises(ValueError, match=why):
        check_cron(expr)


# --- Schedule ----------------------------------------------------------------------------------------------


def test_interval() -> None:
    """The nominal interval is ``every``, or the gap between two cron fire times."""
    assert Schedule(every=30 * D).interval == 30 * D
    assert Schedule(cron=WEEKLY).interval == W
    assert Schedule(cron="0 */6 * * *").interval == 6 * H
    assert Schedule().interval is None


def test_due_at_every() -> None:
    """``every`` is due that long after the last rotation, even if that moment has passed."""
    last = datetime(2025, 1, 1, tzinfo=UTC)
    schedule = Schedule(every=30 * D)
    assert schedule.due_at(last, last) == last + 30 * D
    assert schedule.due_at(last, last + 365 * D) == last + 30 * D


def test_due_at_cron_without_window() -> None:
    """Without a window, the first fire time at least half an interval after the last rotation."""
    schedule = Schedule(cron=WEEKLY)
    assert schedule.due_at(MONDAY_3AM - 4 * D, MONDAY_3AM - 4 * D) == MONDAY_3AM
    assert schedule.due_at(MONDAY_3AM, MONDAY_3AM) == MONDAY_3AM + W  # the fire it rotated at does not count
    assert schedule.due_at(MONDAY_3AM - 4 * D, MONDAY_3AM + 30 * D) == MONDAY_3AM  # overdue: due now


def test_due_at_cron_skips_a_fire_time_right_after_a_rotation() -> None:
    """A value made (or rotated by hand) a day before a weekly fire time waits for the following one."""
    schedule = Schedule(cron=WEEKLY)
    assert schedule.due_at(MONDAY_3AM - D, MONDAY_3AM - D) == MONDAY_3AM + W
    assert schedule.due_at(MONDAY_3AM - timedelta(minutes=10), MONDAY_3AM) == MONDAY_3AM + W
    assert schedule.due_at(MONDAY_3AM - 3 * D - 13 * H, MONDAY_3AM) == MONDAY_3AM  # 3.5 days: old enough


def test_due_at_cron_with_window() -> None:
    """A fire time is due while its window is open; a missed window waits for the next fire time."""
    schedule = Schedule(cron=WEEKLY, window=2 * H)
    last = MONDAY_3AM - 4 * D
    assert schedule.due_at(last, MONDAY_3AM - H) == MONDAY_3AM  # upcoming
    assert schedule.due_at(last, MONDAY_3AM + H) == MONDAY_3AM  # inside the window: due now
    assert schedule.due_at(last, MONDAY_3AM + 2 * H) == MONDAY_3AM  # the window's last instant
    assert schedule.due_at(last, MONDAY_3AM + 2 * H + S) == MONDAY_3AM + W  # missed: next Monday
    assert schedule.due_at(last, MONDAY_3AM + 20 * D) == MONDAY_3AM + 3 * W  # several missed


def test_due_at_with_window_skips_a_long_outage_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A minutely cron with a short window, last rotated a year ago, is answered from a couple of fire-time
    lookups, not a fire-by-fire walk over 525,600 minutes (timing: benchmarks/bench_worst_cases.py)."""
    from apscheduler.triggers.cron import CronTrigger

    lookups = 0
    original = CronTrigger.get_next_fire_time

    def counted(self: CronTrigger, previous: datetime | None, now: datetime) -> datetime | None:
        nonlocal lookups
        lookups += 1
        return original(self, previous, now)  # type: ignore[no-any-return]

    monkeypatch.setattr(CronTrigger, "get_next_fire_time", counted)
    schedule = Schedule(cron="* * * * *", window=10 * S)
    now = datetime(2025, 6, 1, 12, 0, 30, tzinfo=UTC)
    assert schedule.due_at(now - 365 * D, now) == datetime(2025, 6, 1, 12, 1, tzinfo=UTC)
    assert lookups <= 3


def test_describe() -> None:
    """A one-line description for tables and reports."""
    assert Schedule(every=90 * D).describe() == "every 90d"
    assert Schedule(cron=WEEKLY, window=2 * H).describe() == "cron '0 3 * * MON' (window 2h)"
    assert Schedule(cron=WEEKLY).describe() == "cron '0 3 * * MON'"
