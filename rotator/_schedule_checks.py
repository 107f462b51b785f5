"""Manifest checks for schedules (time zones, jitter, freeze windows) and reminder-only secrets.

Split from :mod:`rotator.manifest` to keep it small; each check raises the ``ManifestError`` that ``fail``
builds for the offending position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from rotator.errors import ManifestError
from rotator.schedule import Freeze, Schedule, check_cron, format_duration, parse_moment, zone

if TYPE_CHECKING:
    from rotator.manifest import FreezeSpec, SecretSpec

Fail = Callable[[tuple[str | int, ...], str], ManifestError]


def freezes(fail: Fail, at: tuple[str | int, ...], specs: Sequence[FreezeSpec], tz: str) -> tuple[Freeze, ...]:
    """The freeze windows written at ``at``; a window without its own ``tz`` is in ``tz`` (its level's)."""
    out = []
    for j, spec in enumerate(specs):
        loc = (*at, "freeze", j)
        where = spec.tz or tz
        if spec.tz is not None:
            zone_name(fail, (*loc, "tz"), spec.tz)
        if spec.cron is not None and spec.start is None and spec.end is None:
            if spec.duration is None or spec.duration <= timedelta(0):
                raise fail((*loc, "duration"), "a cron freeze needs a duration longer than 0s")
            try:
                check_cron(spec.cron)
            except ValueError as exc:
                raise fail((*loc, "cron"), str(exc)) from None
            out.append(Freeze(cron=spec.cron, duration=spec.duration, tz=where, reason=spec.reason))
            continue
        if spec.cron is not None or spec.duration is not None or spec.start is None or spec.end is None:
            raise fail(loc, "a freeze is either {cron, duration} or {start, end}")
        bounds = []
        for key, text in (("start", spec.start), ("end", spec.end)):
            try:
                bounds.append(parse_moment(text, where))
            except ValueError as exc:
                raise fail((*loc, key), str(exc)) from None
        if bounds[1] <= bounds[0]:
            raise fail((*loc, "end"), "must be after start")
        out.append(Freeze(start=bounds[0], end=bounds[1], tz=where, reason=spec.reason))
    return tuple(out)

def zone_name(fail: Fail, at: tuple[str | int, ...], name: str) -> None:
    """``name`` must be an IANA time zone."""
    try:
        zone(name)
    except ValueError as exc:
        raise fail(at, str(exc)) from None

def jitter(fail: Fail, at: tuple[str | int, ...], own: bool, schedule: Schedule, grace: timedelta) -> None:
    """Jitter must keep a rotation inside its policy: after the grace, and inside the cron window."""
    jitter, key = schedule.jitter, "jitter" if own else "every"
    if not jitter:
        return
    if schedule.every is not None and jitter > schedule.every - grace:
        raise fail((*at, key), f"jitter ({format_duration(jitter)}) may be at most the interval minus "
                                     f"the grace ({format_duration(schedule.every - grace)}), or a rotation "
                                     "could end the previous value's grace early")
    if schedule.cron is not None and schedule.window is not None and jitter > schedule.window:
        raise fail((*at, key), f"jitter ({format_duration(jitter)}) may be at most the window "
                                     f"({format_duration(schedule.window)}): a rotation starts inside it")
    interval = schedule.interval
    if schedule.cron is not None and schedule.window is None and interval and jitter >= interval / 2:
        raise fail((*at, key), f"jitter ({format_duration(jitter)}) must be shorter than half the "
                                     f"cron interval ({format_duration(interval / 2)})")

def manual(fail: Fail, at: tuple[str | int, ...], spec: SecretSpec) -> None:
    """A reminder-only secret has no value rotator could verify, check after promotion or adopt."""
    if spec.kind != "manual":
        return
    for key in ("verify", "post_check", "auto_rollback", "adopt"):
        if getattr(spec, key):
            raise fail((*at, key), "kind manual is reminder-only: rotator never holds its value, so "
                                        f"'{key}' cannot apply (run your checks before `rotator mark-rotated`)")
