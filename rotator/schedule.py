"""Durations (``90d``, ``1h30m``) and when a secret is due: every N, or cron fire times in a time zone (within
a window), moved by a deterministic per-secret jitter, and held back by freeze windows.

Cron in a time zone runs on the zone's wall clock, with two documented rules for DST changes: a fire time
that does not exist (the clock jumps over it) fires when the clock jumps, and a fire time that happens twice
(the clock goes back) fires once, at its first occurrence. Durations (``window``, ``jitter``, a freeze's
``duration``) are elapsed time, so a 48h freeze lasts 48 hours across a DST change too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Freeze", "Frozen", "Schedule", "check_cron", "format_duration", "jitter_offset", "parse_duration",
           "parse_moment", "zone"]

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


_SECOND = timedelta(seconds=1)
_MAX_CHAIN = 1000  # overlapping freeze occurrences followed before giving up (a 1000-deep chain is a bug)


@lru_cache(maxsize=64)
def zone(name: str) -> tzinfo:
    """The IANA time zone ``name`` (``Europe/Berlin``; ``UTC``); ValueError with a human message if unknown."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone '{name}' (an IANA name like Europe/Berlin, or UTC)") from None


def parse_moment(value: Any, tz: str = "UTC") -> datetime:
    """An ISO date or date-time (``2026-12-20``, ``2026-12-20T18:00``, with or without an offset) as an aware
    datetime; without an offset it is a wall-clock time in ``tz``. ValueError with a human message otherwise."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"must be an ISO date or time like 2026-12-20T18:00, got '{value}'") from None
    else:
        raise ValueError("must be an ISO date or time like 2026-12-20T18:00")
    if moment.tzinfo is None:
        return _instant(moment, zone(tz))
    return moment.astimezone(UTC)


def jitter_offset(seed: str, jitter: timedelta) -> timedelta:
    """A fixed offset in ``[0, jitter)`` for the secret named ``seed``: SHA-256 of the name, whole seconds.

    Deterministic (every replica and every pass computes the same due time) and uniform over names.
    """
    seconds = int(jitter.total_seconds())
    if seconds <= 0:
        return timedelta(0)
    fraction = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return timedelta(seconds=fraction * seconds >> 64)


@lru_cache(maxsize=256)
def _cron(expr: str) -> Any:
    """The crontab as a UTC trigger; other zones use it on their wall clock (see :class:`_ZonedCron`)."""
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


def _instant(wall: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of the naive wall-clock time ``wall`` in ``tz``: its first occurrence when the clock
    went back over it, the moment the clock jumped when it skipped it."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # In a gap, fold=0 uses the offset before the jump (an instant after it), fold=1 the offset after it.
    low, high = wall.replace(tzinfo=tz, fold=1).astimezone(UTC), first
    after = high.astimezone(tz).utcoffset()
    while high - low > _SECOND:  # the jump is the first instant with the new offset
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


@lru_cache(maxsize=256)
def _zoned(expr: str, tz: str) -> _ZonedCron:
    return _ZonedCron(_cron(expr), zone(tz))


class _ZonedCron:
    """Fire times of a crontab on the wall clock of ``tz`` (DST rules in the module docstring)."""

    def __init__(self, trigger: Any, tz: tzinfo) -> None:
        self.trigger, self.tz = trigger, tz

    def first_at_or_after(self, moment: datetime) -> datetime:
        """The first fire instant at or after ``moment`` (UTC)."""
        if self.tz is UTC:
            fire: datetime = self.trigger.get_next_fire_time(None, moment)
            return fire
        wall = moment.astimezone(self.tz).replace(tzinfo=None, fold=0)
        candidate = self.trigger.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        for _ in range(_MAX_CHAIN):  # a repeated hour maps wall times before ``moment``: skip those
            real = _instant(candidate.replace(tzinfo=None), self.tz)
            if real >= moment:
                return real
            candidate = self.trigger.get_next_fire_time(candidate, candidate + _SECOND)
        raise ValueError("cron expression has no fire time ahead")  # pragma: no cover - a crontab fires again


_Span = tuple[datetime, datetime, datetime | None]
_SPANS: dict[Freeze, tuple[_Span, ...]] = {}  # Freeze.until memo, bounded
_MAX_SPANS = 1024


class Frozen(NamedTuple):
    """A freeze in force: no scheduled rotation starts before ``until``, because of ``why``."""

    until: datetime
    why: str

    def __str__(self) -> str:
        return f"frozen until {self.until.astimezone(UTC):%Y-%m-%d %H:%M}Z ({self.why})"


@dataclass(frozen=True, slots=True)
class Freeze:
    """A window in which no scheduled rotation starts: each ``cron`` fire time (in ``tz``) for ``duration``,
    or the absolute range ``start`` (inclusive) to ``end`` (exclusive)."""

    cron: str | None = None
    duration: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None
    tz: str = "UTC"
    reason: str | None = None

    def until(self, now: datetime) -> datetime | None:
        """When the window around ``now`` ends (overlapping occurrences joined), or None if ``now`` is outside."""
        if self.start is not None and self.end is not None:
            return self.end if self.start <= now < self.end else None
        known = _SPANS.get(self, ())  # one answer holds for a whole span: secrets sharing defaults share it
        for start, stop, answer in known:
            if start <= now < stop:
                return answer
        span = self._span(now)
        if len(_SPANS) >= _MAX_SPANS:
            _SPANS.clear()
        _SPANS[self] = (span, *known[:3])  # a few spans: Schedule.frozen asks at now and at each window's end
        return span[2]

    def _span(self, now: datetime) -> _Span:
        """``(from, to, answer)``: :meth:`until` is ``answer`` for every moment in ``[from, to)``, ``now`` included."""
        assert self.cron is not None
        assert self.duration is not None
        cron = _zoned(self.cron, self.tz)
        fire = cron.first_at_or_after(now - self.duration)
        while fire <= now and fire + self.duration <= now:  # that occurrence ended exactly at (or before) now
            fire = cron.first_at_or_after(fire + _SECOND)
        if fire > now:
            return now, fire, None  # thawed until the next occurrence starts
        first, end = fire, fire + self.duration
        for _ in range(_MAX_CHAIN):
            fire = cron.first_at_or_after(fire + _SECOND)
            if fire > end:
                break
            end = max(end, fire + self.duration)
        return max(first, now - self.duration), end, end

    def describe(self) -> str:
        if self.reason:
            return self.reason
        if self.cron is not None and self.duration is not None:
            return f"freeze '{self.cron}' {self.tz} for {format_duration(self.duration)}"
        assert self.start is not None
        assert self.end is not None
        return f"freeze {self.start:%Y-%m-%d %H:%M}Z to {self.end:%Y-%m-%d %H:%M}Z"


@dataclass(frozen=True, slots=True)
class Schedule:
    """When rotations fall due: ``every`` after the last one, or at ``cron`` fire times in ``tz`` (within
    ``window``); moved by a ``jitter`` offset fixed per ``seed`` (the secret name); held back by ``freezes``.

    Jitter never makes a rotation late: with ``every`` it moves the due time *earlier* (the policy deadline
    ``last + every`` holds), with ``cron`` later but inside the ``window`` (the manifest refuses a larger
    jitter), or at most ``jitter`` after the fire time when there is no window. :meth:`deadline` is that bound.
    """

    every: timedelta | None = None
    cron: str | None = None
    window: timedelta | None = None
    tz: str = "UTC"
    jitter: timedelta | None = None
    seed: str = ""
    freezes: tuple[Freeze, ...] = ()

    @property
    def interval(self) -> timedelta | None:
        """The nominal interval (for age-vs-policy): ``every``, or the gap between two cron fires."""
        if self.every is not None:
            return self.every
        if self.cron is None:
            return None
        return _cron_interval(self.cron)

    @property
    def offset(self) -> timedelta:
        """This secret's jitter offset, in ``[0, jitter)``."""
        return jitter_offset(self.seed, self.jitter) if self.jitter else timedelta(0)

    def due_at(self, last_rotation: datetime, now: datetime) -> datetime:
        """The moment the next rotation falls due (may be in the past: then it is due now), jitter applied.

        For cron, the first fire time at least half an interval after ``last_rotation`` (so a value created
        or rotated by hand just before a fire time is not rotated again minutes later) whose window is still
        open at ``now``; a missed window (daemon down) waits for the next fire time instead of rotating
        outside it.
        """
        if self.every is not None:
            return last_rotation + self.every - self.offset
        return self._fire(last_rotation, now) + self.offset

    def deadline(self, last_rotation: datetime) -> datetime:
        """The latest moment the rotation after ``last_rotation`` meets the policy (report: overdue after it).

        ``last + every``; for cron the first fire time after ``last_rotation`` plus the window (or the jitter).
        """
        if self.every is not None:
            return last_rotation + self.every
        slack = self.window or self.jitter or timedelta(0)
        return self._fire(last_rotation, last_rotation) + slack

    def frozen(self, now: datetime) -> Frozen | None:
        """The freeze in force at ``now`` (back-to-back and overlapping windows joined), or None."""
        until, why = now, list[str]()
        for _ in range(_MAX_CHAIN):
            moved = False
            for freeze in self.freezes:
                end = freeze.until(until)
                if end is not None and end > until:
                    until, moved = end, True
                    why.append(freeze.describe())
            if not moved:
                break
        return Frozen(until, "; ".join(dict.fromkeys(why))) if until > now else None

    def _fire(self, last_rotation: datetime, now: datetime) -> datetime:
        assert self.cron is not None
        cron = _zoned(self.cron, self.tz)
        start = last_rotation + max(_SECOND, _cron_interval(self.cron) / 2)
        if self.window is not None:  # fire times before now - window have closed windows: skip them at once
            start = max(start, now - self.window)
        fire = cron.first_at_or_after(start)
        while self.window is not None and fire + self.window < now:
            fire = cron.first_at_or_after(fire + _SECOND)
        return fire

    def describe(self) -> str:
        if self.every is not None:
            text = f"every {format_duration(self.every)}"
        else:
            zone_name = "" if self.tz == "UTC" else f" {self.tz}"
            window = f" (window {format_duration(self.window)})" if self.window else ""
            text = f"cron '{self.cron}'{zone_name}{window}"
        if self.jitter:
            text += f", jitter {format_duration(self.jitter)} (this secret: {format_duration(self.offset)})"
        if self.freezes:
            text += f", {len(self.freezes)} freeze window{'s' if len(self.freezes) != 1 else ''}"
        return text

