"""A controllable clock for tests: pass it wherever rotator takes a ``Clock``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]

_DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)


class FakeClock:
    """Returns a fixed aware UTC time that moves only when told to (``advance`` / ``set``); thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._now = _as_utc(start) if start is not None else _DEFAULT_START

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by ``delta`` (a timedelta or seconds) and return the new time."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        if step < timedelta(0):
            raise ValueError(f"FakeClock.advance needs a non-negative step, got {step}; use set() to go back")
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (must be timezone-aware; converted to UTC)."""
        moved = _as_utc(when)
        with self._lock:
            self._now = moved

    def __repr__(self) -> str:
        return f"FakeClock({self().isoformat()})"


def _as_utc(when: datetime) -> datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"FakeClock needs a timezone-aware datetime, got naive {when.isoformat()}")
    return when.astimezone(UTC)
