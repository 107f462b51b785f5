"""The real clock helper and the FakeClock test helper."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rotator.clock import Clock, utcnow
from rotator.testing.clock import FakeClock


def test_utcnow_is_aware_utc() -> None:
    """utcnow() returns a timezone-aware datetime in UTC."""
    now = utcnow()
    assert now.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - now) < timedelta(seconds=5)


def test_fake_clock_stands_still_until_moved() -> None:
    """FakeClock returns the same time until advanced by a timedelta or seconds."""
    clock: Clock = FakeClock(datetime(2030, 5, 1, tzinfo=UTC))
    assert clock() == clock() == datetime(2030, 5, 1, tzinfo=UTC)
    fake = FakeClock(datetime(2030, 5, 1, tzinfo=UTC))
    assert fake.advance(timedelta(days=1)) == datetime(2030, 5, 2, tzinfo=UTC)
    assert fake.advance(90) == datetime(2030, 5, 2, 0, 1, 30, tzinfo=UTC)
    assert fake() == datetime(2030, 5, 2, 0, 1, 30, tzinfo=UTC)


def test_fake_clock_set_converts_to_utc() -> None:
    """set() accepts any aware time and stores it as UTC."""
    fake = FakeClock()
    fake.set(datetime(2030, 1, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))))
    assert fake() == datetime(2030, 1, 1, tzinfo=UTC)
    assert fake().tzinfo is UTC


def test_fake_clock_rejects_naive_times_and_going_back() -> None:
    """Naive datetimes and negative steps are errors, not silent surprises."""
    with pytest.raises(ValueError, match="timezone-aware"):
        FakeClock(datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="non-negative"):
        FakeClock().advance(-1)
