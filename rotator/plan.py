"""What a run would do for one secret right now, and when it next needs attention (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from rotator.acks import waiting_for
from rotator.keyset import Keyset
from rotator.manifest import SecretPolicy
from rotator.schedule import format_duration, parse_duration

__all__ = ["Action", "Decision", "decide", "last_rotation", "notice_key", "notices_sent"]

FAILURE_BACKOFF_MAX = timedelta(hours=1)


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


def last_rotation(keyset: Keyset) -> datetime | None:
    """When the current value became current."""
    current = keyset.current
    if current is None:
        return None
    return current.promoted_at or current.created_at


def notice_key(lead: timedelta) -> str:
    """How a sent notice is recorded: ``14d``; exact, so ``1d2h3m`` and ``1d2h`` stay two notices."""
    key = format_duration(lead)  # keeps two units only
    return key if parse_duration(key) == lead else f"{int(lead.total_seconds())}s"


def decide(policy: SecretPolicy, keyset: Keyset | None, now: datetime) -> Decision:
    """The first action a run takes for ``policy`` at ``now`` (DESIGN.md section 1 resume rule first)."""
    decision = _decide(policy, keyset, now)
    if policy.spec.kind == "manual":  # reminder-only: never create, rotate or verify (rotator.manual)
        from rotator.manual import remind

        return remind(decision, keyset, now)
    return decision


def _decide(policy: SecretPolicy, keyset: Keyset | None, now: datetime) -> Decision:
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
    last = last_rotation(keyset)
    due = policy.schedule.due_at(last, now) if last is not None else now
    times = [due]
    previous = keyset.previous
    if previous is not None and previous.expires_at is not None:
        if previous.expires_at <= now:
            return Decision(Action.RETIRE, f"grace of {previous.id[:8]} ended", due, now)
        if policy.retire == "when_acknowledged" and not waiting_for(policy.spec.consumers, keyset):
            return Decision(Action.RETIRE, f"every consumer moved off {previous.id[:8]}", due, now)
        times.append(previous.expires_at)
    if due <= now:
        if (frozen := policy.schedule.frozen(now)) is not None:
            return Decision(Action.FROZEN, f"due, but {frozen}", due, min([*times[1:], frozen.until]))
        backoff_until = _backoff_until(keyset)
        if backoff_until is not None and backoff_until > now:
            return Decision(Action.BACKOFF, f"last attempt failed; retrying after {backoff_until:%H:%M:%S}Z",
                            due, min([*times[1:], backoff_until]))
        return Decision(Action.ROTATE, "due" if last is not None else "no current value", due, now)
    sent = notices_sent(keyset)
    upcoming = [lead for lead in policy.notices if notice_key(lead) not in sent]
    reached = [lead for lead in upcoming if due - lead <= now]
    if reached:
        lead = min(reached)  # the most urgent lead time that has passed; older ones are marked sent too
        return Decision(Action.NOTICE, f"announce rotation due in {format_duration(due - now)}", due, now,
                        notice=lead)
    times.extend(due - lead for lead in upcoming)
    for version in keyset.retired:
        if version.retired_at is not None:
            if version.retired_at + policy.rollback_window < now:
                return Decision(Action.PURGE, f"rollback window of {version.id[:8]} ended", due, now)
            times.append(version.retired_at + policy.rollback_window)
    return Decision(Action.NONE, "nothing to do", due, min(t for t in times if t > now) if times else None)


def notices_sent(keyset: Keyset) -> set[str]:
    """Lead times already announced in the current value's cycle."""
    record = keyset.meta.get("notices")
    current = keyset.current
    if not isinstance(record, dict) or current is None or record.get("cycle") != current.id:
        return set()
    return set(record.get("sent", []))


def _backoff_until(keyset: Keyset) -> datetime | None:
    failures = keyset.meta.get("failures")
    last = keyset.meta.get("last_failure_at")
    if not failures or not last:
        return None
    exponent = min(int(failures) - 1, 16)  # 2 ** 41 minutes overflows timedelta; 2 ** 6 already exceeds the max
    delay: timedelta = min(timedelta(minutes=1) * 2**exponent, FAILURE_BACKOFF_MAX)
    started: datetime = datetime.fromisoformat(str(last))
    return started + delay
