"""What a run would do for one secret right now, and when it next needs attention (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.acks import waiting_for
from rotator.keyset import Keyset, superseded_by_promote
from rotator.manifest import SecretPolicy
from rotator.meta import KeysetMeta
from rotator.schedule import format_duration, parse_duration

__all__ = ["Action", "Decision", "decide", "due_at", "last_rotation", "notice_key", "notices_sent"]

FAILURE_BACKOFF_MAX = timedelta(hours=1)
ROLLBACK_HOLD_MAX = timedelta(hours=24)
"""A value made current again by a rollback is not rotated away sooner than min(24h, half the interval)."""


class Action(StrEnum):
    """The next thing a reconcile pass does for a secret."""

    CREATE = "create"
    ADOPT = "adopt"
    RESUME = "resume"
    DISCARD = "discard"
    RETIRE = "retire"
    ROTATE = "rotate"
    NOTICE = "notice"
    BACKOFF = "backoff"
    PAUSED = "paused"
    UNMANAGED = "unmanaged"
    PURGE = "purge"
    REVOKE = "revoke"  # an incident found the secret rotated by another actor: revoke the older values
    ALREADY = "already_rotated"  # a forced rotation found the secret rotated since the command started
    BLOCKED = "blocked"  # a forced rotation would cut another value's grace period short
    WAIT = "wait"  # due, but rotating now would cut another value's grace period short
    FROZEN = "frozen"  # due, but a freeze window holds scheduled rotations back until it ends
    REMIND = "remind"  # kind: manual, waiting for a human (rotator.manual)
    OVERDUE = "overdue"  # kind: manual, past due: send rotation.overdue once per cycle
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Decision:
    """``action`` now, why, when the next rotation is due and when anything next needs doing."""

    action: Action
    detail: str
    due_at: datetime | None
    next_at: datetime | None
    notice: timedelta | None = None  # the lead time to announce, for NOTICE
    versions: tuple[str, ...] = ()  # the versions the step acts on (RETIRE, REVOKE)


def last_rotation(keyset: Keyset) -> datetime | None:
    """When the current value was made: a value's age counts from its creation everywhere (status, plan,
    report, metrics), also after a rollback made an older value current again."""
    current = keyset.current
    return current.created_at if current is not None else None


def due_at(policy: SecretPolicy, keyset: Keyset, now: datetime) -> datetime:
    """When the current value is due for rotation: from its own age, but a value a rollback restored gets
    at least :data:`ROLLBACK_HOLD_MAX` (or half the interval, if shorter) before it is rotated away."""
    current = keyset.current
    if current is None:
        return now
    due = policy.schedule.due_at(current.created_at, now)
    promoted = current.promoted_at
    # only a rollback promotes a value long after it was made: a pending older than stale_pending_after is
    # discarded, never promoted
    if promoted is not None and promoted - current.created_at > policy.stale_pending_after:
        interval = policy.schedule.interval
        hold = min(ROLLBACK_HOLD_MAX, interval / 2) if interval is not None else ROLLBACK_HOLD_MAX
        due = max(due, promoted + hold)
    return due


def notice_key(lead: timedelta) -> str:
    """How a sent notice is recorded: ``14d``; exact, so ``1d2h3m`` and ``1d2h`` stay two notices."""
    key = format_duration(lead)  # keeps two units only
    return key if parse_duration(key) == lead else f"{int(lead.total_seconds())}s"


def decide(policy: SecretPolicy, keyset: Keyset | None, now: datetime, *, force: bool = False,
           revoke: bool = False, since: datetime | None = None, keep_previous: int = 1) -> Decision:
    """The first action a run takes for ``policy`` at ``now`` (the resume rule first).

    ``force`` is ``rotate --now`` started at ``since``; ``revoke`` is ``--revoke-previous``; ``keep_previous``
    is how many previous versions the store and target can hold at once (a rotation that would retire one
    still in grace waits, or with ``force`` is refused, unless it is a revoke)."""
    decision = _decide(policy, keyset, now, force, revoke, since, keep_previous)
    if policy.spec.kind == "manual":  # reminder-only: never create, rotate or verify (rotator.manual)
        from rotator.manual import remind

        return remind(decision, keyset, now)
    return decision


def _decide(policy: SecretPolicy, keyset: Keyset | None, now: datetime, force: bool, revoke: bool,
            since: datetime | None, keep_previous: int) -> Decision:
    if not policy.spec.enabled:
        return Decision(Action.PAUSED, "enabled: false", None, None)
    if keyset is None:
        return Decision(Action.CREATE, "no value stored yet", now, now)
    if not keyset.managed:
        if policy.spec.adopt:
            return Decision(Action.ADOPT, "existing value will be adopted as current", None, now)
        return Decision(Action.UNMANAGED, "value exists but is not managed by rotator (set adopt: true)",
                        None, None)
    if (pending := keyset.pending) is not None:
        if now - pending.created_at > policy.stale_pending_after:
            return Decision(Action.DISCARD, f"pending {pending.id[:8]} is stale", now, now)
        return Decision(Action.RESUME, f"pending {pending.id[:8]} will be verified and promoted", now, now)
    due = due_at(policy, keyset, now)
    if force:
        return _forced(policy, keyset, now, due, revoke, since, keep_previous)
    times = [due]
    for previous in reversed(keyset.previous_versions):  # oldest first
        if previous.expires_at is not None and previous.expires_at <= now:
            return Decision(Action.RETIRE, f"grace of {previous.id[:8]} ended", due, now, versions=(previous.id,))
        if policy.retire == "when_acknowledged" and not waiting_for(policy.spec.consumers, keyset):
            return Decision(Action.RETIRE, f"every consumer moved off {previous.id[:8]}", due, now,
                            versions=(previous.id,))
        if previous.expires_at is not None:
            times.append(previous.expires_at)
    if due <= now:
        if (frozen := policy.schedule.frozen(now)) is not None:
            return Decision(Action.FROZEN, f"due, but {frozen}", due, min([*times[1:], frozen.until]))
        backoff_until = _backoff_until(keyset)
        if backoff_until is not None and backoff_until > now:
            return Decision(Action.BACKOFF, f"last attempt failed; retrying after {backoff_until:%H:%M:%S}Z",
                            due, min([*times[1:], backoff_until]))
        cut = superseded_by_promote(keyset, now, policy.grace, keep_previous=keep_previous)
        if cut:
            ends = min(v.expires_at or now for v in cut)
            return Decision(Action.WAIT, f"due, but waits until the grace of {cut[0].id[:8]} ends at "
                                         f"{ends:%Y-%m-%d %H:%M}Z (no room for another previous value)", due, ends)
        return Decision(Action.ROTATE, "due" if keyset.current is not None else "no current value", due, now)
    sent = notices_sent(keyset)
    upcoming = [lead for lead in policy.notices if notice_key(lead) not in sent]
    reached = [lead for lead in upcoming if due - lead <= now]
    if reached:
        lead = min(reached)  # the most urgent lead time that has passed; older ones are marked sent too
        return Decision(Action.NOTICE, f"announce rotation due in {format_duration(due - now)}", due, now,
                        notice=lead)
    times.extend(due - lead for lead in upcoming)
    for version in (*keyset.retired, *keyset.revoked):
        if version.retired_at is not None:
            if version.retired_at + policy.rollback_window < now:
                return Decision(Action.PURGE, f"rollback window of {version.id[:8]} ended", due, now)
            times.append(version.retired_at + policy.rollback_window)
    return Decision(Action.NONE, "nothing to do", due, min(t for t in times if t > now) if times else None)


def _forced(policy: SecretPolicy, keyset: Keyset, now: datetime, due: datetime, revoke: bool,
            since: datetime | None, keep_previous: int) -> Decision:
    """``rotate --now`` (and ``--revoke-previous``) once nothing is pending."""
    current = keyset.current
    if since is not None and current is not None and current.created_at >= since:
        leaked = tuple(v.id for v in keyset.previous_versions if v.created_at < since)
        if revoke and leaked:
            return Decision(Action.REVOKE, "rotated by another actor meanwhile; revoking the older values",
                            due, now, versions=leaked)
        return Decision(Action.ALREADY, "rotated by another actor since this command started", due, None)
    if not revoke:
        cut = superseded_by_promote(keyset, now, policy.grace, keep_previous=keep_previous)
        if cut:
            ends = max(v.expires_at or now for v in cut)
            return Decision(Action.BLOCKED, f"rotating now would end the grace of {cut[0].id[:8]} early (it runs "
                                            f"until {ends:%Y-%m-%d %H:%M}Z and no further previous value fits)",
                            due, None)
    return Decision(Action.ROTATE, "forced (--now)", due, now)


def notices_sent(keyset: Keyset) -> set[str]:
    """Lead times already announced in the current value's cycle."""
    current = keyset.current
    return set(KeysetMeta.of(keyset).notices_sent(current.id if current is not None else None))


def _backoff_until(keyset: Keyset) -> datetime | None:
    meta = KeysetMeta.of(keyset)
    failures, last = meta.failures, meta.last_failure_at
    if not failures or last is None:
        return None
    exponent = min(failures - 1, 16)  # 2 ** 41 minutes overflows timedelta; 2 ** 6 already exceeds the max
    delay: timedelta = min(timedelta(minutes=1) * 2**exponent, FAILURE_BACKOFF_MAX)
    return last + delay
