"""Durations (``90d``, ``1h30m``) and when a secret is due: every N, or a cron expression with a window."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

__all__ = ["Schedule", "format_duration", "parse_duration"]

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
DURATION_HELP = "must be a duration like 7d (units: s m h d w, e.g. 90d, 12h, 1h30m)"
MAX_DURATION = timedelta(days=36500)  # keeps `last rotation + interval` far inside datetime's range


def parse_duration(text: Any) -> timedelta:
    """``"1h30m"`` -> ``timedelta(hours=1, minutes=30)``; raises ValueError with a human message."""
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str) or not _WHOLE.fullmatch(text.strip().lower()):
        raise ValueError(DURATION_HELP)
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text.strip().lower()))
    if seconds > MAX_DURATION.total_seconds():  # also inf: timedelta() would raise OverflowError
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)} (100 years)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Compact human form: ``timedelta(days=7)`` -> ``"7d"``, negative values get a ``-``."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0s"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return sign + "".join(parts[:2])


@lru_cache(maxsize=256)
def _cron(expr: str) -> Any:
    from apscheduler.triggers.cron import CronTrigger  # lazy: only manifests with cron pay for it

    return CronTrigger.from_crontab(expr, timezone=UTC)


@lru_cache(maxsize=256)
def _cron_interval(expr: str) -> timedelta:
    """The gap between two consecutive fire times (from a fixed epoch, so it is stable)."""
    epoch = datetime(2024, 1, 1, tzinfo=UTC)
    first = _cron(expr).get_next_fire_time(None, epoch)
    second = _cron(expr).get_next_fire_time(first, first + timedelta(seconds=1))
    gap: timedelta = second - first
    return gap


def check_cron(expr: str) -> None:
    """Raise ValueError with a human message if ``expr`` is not a 5-field crontab expression."""
    if len(expr.split()) != 5:
        raise ValueError("must be a 5-field cron expression like '0 3 * * MON'")
    try:
        trigger = _cron(expr)
    except ValueError as exc:
        raise ValueError(f"invalid cron expression: {exc}") from None
    if trigger.get_next_fire_time(None, datetime(2024, 1, 1, tzinfo=UTC)) is None:  # e.g. "0 0 31 2 *"
        raise ValueError(f"cron expression '{expr}' never fires")


@dataclass(frozen=True, slots=True)
class Schedule:
    """When rotations fall due: ``every`` after the last one, or at ``cron`` fire times (within ``window``)."""

    every: timedelta | None = None
    cron: str | None = None
    window: timedelta | None = None

    @property
    def interval(self) -> timedelta | None:
        """The nominal interval (for age-vs-policy): ``every``, or the gap between two cron fires."""
        if self.every is not None:
            return self.every
        if self.cron is None:
            return None
        return _cron_interval(self.cron)

    def due_at(self, last_rotation: datetime, now: datetime) -> datetime:
        """The moment the next rotation falls due (may be in the past: then it is due now).

        For cron, the first fire time at least half an interval after ``last_rotation`` (so a value created
        or rotated by hand just before a fire time is not rotated again minutes later) whose window is still
        open at ``now``; a missed window (daemon down) waits for the next fire time instead of rotating
        outside it.
        """
        if self.every is not None:
            return last_rotation + self.every
        assert self.cron is not None
        trigger = _cron(self.cron)
        start = last_rotation + max(timedelta(seconds=1), _cron_interval(self.cron) / 2)
        if self.window is not None:  # fire times before now - window have closed windows: skip them at once
            start = max(start, now - self.window)
        fire = trigger.get_next_fire_time(None, start)
        while fire is not None and self.window is not None and fire + self.window < now:
            fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        if fire is None:  # pragma: no cover - a crontab always fires again
            raise ValueError(f"cron expression {self.cron!r} never fires")
        return fire  # type: ignore[no-any-return]

    def describe(self) -> str:
        if self.every is not None:
            return f"every {format_duration(self.every)}"
        window = f" (window {format_duration(self.window)})" if self.window else ""
        return f"cron '{self.cron}'{window}"
