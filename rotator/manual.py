"""Reminder-only secrets (``kind: manual``): a human rotates them; rotator tracks when, reminds, and reports.

Rotator never generates, reads back or verifies such a value. What it keeps is a **record** per rotation, in
the secret's provider like any keyset (so daemons, CronJobs and laptops agree on it): a version whose stored
value is the non-secret marker ``manual-record:<version id>:<fingerprint or ->``. ``rotator mark-rotated``
adds one as ``current`` (first a ``create``, later ``stage`` + ``promote`` with grace 0, so the previous
record is retired at once and purged after ``rollback_window``); its ``promoted_at`` is the rotation time, so
ages, due times, notices, metrics and the report work as for generated secrets. A mistaken record is corrected
by recording the right time (``--at``, which may be before the last record); rollback is refused. The
optional fingerprint is an identifier *you* supply (an access-key id, a certificate serial, the first
characters of a hash), never the value; rotator does not compute it.

Decisions (:func:`remind`, applied by :func:`rotator.plan.decide`): where a generated secret would be created,
rotated or resumed, a manual one gets ``remind`` (nothing to do but wait for a human) or, once per cycle,
``overdue`` (a ``rotation.overdue`` notice); an interrupted ``mark-rotated`` (a lone pending record) is
discarded. Upcoming notices are the same as for every secret.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rotator.errors import ConflictError, OperationFailed, UsageError
from rotator.events import Event, EventType, new_correlation_id
from rotator.generators import MANUAL
from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.meta import KeysetMeta
from rotator.outcome import Outcome, OutcomeAction
from rotator.plan import Action, Decision, notices_sent
from rotator.schedule import format_duration
from rotator.transitions import Create, Discard, Promote, Stage, UpdateMeta

if TYPE_CHECKING:
    from rotator.engine import Engine
    from rotator.manifest import SecretPolicy

__all__ = ["MANUAL", "OVERDUE_KEY", "mark_rotated", "overdue_notice", "remind"]

OVERDUE_KEY = "overdue"  # recorded in the cycle's sent notices once the overdue notice went out
FINGERPRINT = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_FUTURE_SLACK = timedelta(minutes=5)  # clock skew tolerated for --at


def remind(decision: Decision, keyset: Keyset | None, now: datetime) -> Decision:
    """``decision`` for a generated secret, turned into what a reminder-only one does instead."""
    action = decision.action
    if action is Action.CREATE:
        return Decision(Action.REMIND, "no rotation on record: rotate it by hand, then `rotator mark-rotated`",
                        None, None)
    if action in (Action.RESUME, Action.DISCARD) and keyset is not None and keyset.pending is not None:
        return Decision(Action.DISCARD, f"pending record {keyset.pending.id[:8]} of an interrupted mark-rotated",
                        decision.due_at, now)
    if action in (Action.ROTATE, Action.BACKOFF, Action.RESUME):
        due = decision.due_at or now
        late = f"rotation by hand overdue by {format_duration(now - due)} (due {due:%Y-%m-%d %H:%M}Z)"
        if keyset is not None and keyset.current is not None and OVERDUE_KEY not in notices_sent(keyset):
            return Decision(Action.OVERDUE, late, due, now)
        return Decision(Action.REMIND, f"{late}; reminded", due, None)
    return decision


def overdue_notice(engine: Engine, policy: SecretPolicy, keyset: Keyset, decision: Decision, cid: str) -> Outcome:
    """Send ``rotation.overdue`` once per cycle (recorded with the notices sent, one conditional write)."""
    current = keyset.current
    assert current is not None
    due = decision.due_at or engine.clock()
    sent = KeysetMeta.noticed(current.id, notices_sent(keyset) | {OVERDUE_KEY})
    # a conflict: the engine re-decides
    engine.providers.get(policy.provider).apply(policy.ref, keyset, UpdateMeta(sent))
    _emit(engine, policy, EventType.OVERDUE, cid, reason=decision.detail, old=current.id,
          details={"due_at": due.isoformat(), "manual": True})
    return Outcome(policy.name, OutcomeAction.OVERDUE, True, f"{decision.detail}; reminder sent")


def mark_rotated(engine: Engine, policy: SecretPolicy, *, reason: str, fingerprint: str | None = None,
                 at: datetime | None = None) -> Outcome:
    """Record that ``policy``'s secret was rotated by hand at ``at`` (default now); see the module docstring."""
    name = policy.name
    if policy.spec.kind != MANUAL:
        raise UsageError(f"{name} is a {policy.spec.kind} secret that rotator rotates itself; mark-rotated is for "
                         f"kind: manual", hint=f"rotator rotate {name} --now")
    if fingerprint is not None and not FINGERPRINT.fullmatch(fingerprint):
        raise UsageError("--fingerprint wants an identifier of the new value (1-128 of A-Z a-z 0-9 . _ : / + = @ -), "
                         "such as a key id; never the value itself")
    now = engine.clock()
    when = at or now
    if when > now + _FUTURE_SLACK:
        raise UsageError(f"--at {when:%Y-%m-%d %H:%M}Z is in the future")
    provider = engine.providers.get(policy.provider)
    for _ in range(3):
        keyset = engine.read(policy, values=False)
        version = _record(engine, when, fingerprint)
        next_due = policy.schedule.due_at(when, when).isoformat()
        try:
            if keyset is None:
                provider.apply(policy.ref, None, Create(version.replace(state=State.CURRENT, promoted_at=when),
                                                        {"next_due": next_due}))
                old = None
            else:
                old = _replaced(policy, keyset)
                if keyset.pending is not None:
                    keyset = provider.apply(policy.ref, keyset, Discard(keyset.pending.id))
                staged = provider.apply(policy.ref, keyset, Stage(version, {"next_due": next_due}))
                assert staged.pending is not None
                version = staged.pending  # the provider may store it under an id of its own (AWS)
                provider.apply(policy.ref, staged, Promote(version.id, when, timedelta(0), reason))
        except ConflictError:
            continue  # another actor wrote meanwhile: re-read and record on top of what it wrote
        break
    else:
        raise ConflictError(f"{name}: kept changing while the rotation was recorded; retry")
    details = {"manual": True, "rotated_at": when.isoformat()}
    if fingerprint:
        details["fingerprint"] = fingerprint
    _emit(engine, policy, EventType.SUCCEEDED, new_correlation_id(), reason=reason, new=version.id, old=old,
          details=details)
    shown = f" (fingerprint {fingerprint})" if fingerprint else ""
    due = policy.schedule.due_at(when, now)
    return Outcome(name, OutcomeAction.MARKED, True, f"{version.id[:8]}{shown} recorded as rotated by hand at "
                                         f"{when:%Y-%m-%d %H:%M}Z; next due {due:%Y-%m-%d %H:%M}Z", version.id, old)


def _record(engine: Engine, when: datetime, fingerprint: str | None) -> KeyVersion:
    token = uuid.uuid4().hex
    marker = SecretValue(f"manual-record:{token}:{fingerprint or '-'}")
    return KeyVersion(id=token, state=State.PENDING, created_at=when, value=marker, attempt=token,
                      actor=engine.actor)


def _replaced(policy: SecretPolicy, keyset: Keyset) -> str | None:
    """The id of the record a new one replaces; refuses a value rotator did not write.

    A time before the last record is allowed: that is how a mistaken record is corrected (a rollback would
    date the restored record from the rollback, so the engine refuses one for manual secrets).
    """
    if not keyset.managed:
        raise OperationFailed(f"{policy.name}: a value rotator did not write is stored at "
                              f"{policy.provider}:{policy.ref.path}", hint="give the manual secret its own 'path'")
    return keyset.current.id if keyset.current is not None else None


def _emit(engine: Engine, policy: SecretPolicy, kind: EventType, cid: str, *, reason: str | None = None,
          new: str | None = None, old: str | None = None, details: dict[str, object] | None = None) -> None:
    engine.bus.emit(Event(type=kind, secret=policy.name, provider=policy.provider, at=engine.clock(),
                          actor=engine.actor, correlation_id=cid, reason=reason, new_version=new,
                          old_version=old, details=details or {}))
