"""Events the engine emits (DESIGN.md section 5) and the bus that fans them out.

Subscribers are the audit log (first: an event is reported only after its audit record is fsync'd), logs,
metrics and notifiers. The bus is the only way into the audit log: besides the contract events it carries
steps worth keeping (adoption, a discarded attempt, an audit key rotation) and notification results, which
are audited and logged but never notified (:data:`NOTIFIABLE`). An event never carries a secret value: only
names, version ids, times, the actor, a reason and a correlation id.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["NOTIFIABLE", "STEPS", "Event", "EventBus", "EventType", "Subscriber", "is_notification", "is_step",
           "new_correlation_id"]


class EventType(StrEnum):
    """Event names: the contract's six (notifier filters use them), then audit-only steps and results."""

    UPCOMING = "rotation.upcoming"
    OVERDUE = "rotation.overdue"  # a reminder-only (kind: manual) secret was not rotated by hand in time
    SUCCEEDED = "rotation.succeeded"
    FAILED = "rotation.failed"
    ROLLED_BACK = "rotation.rolled_back"
    RETIRED = "key.retired"
    REVOKED = "key.revoked"
    SINK_FAILED = "sink.failed"  # a delivery target (rotator.sinks) could not be brought up to date
    # audited (``"type": "step"``) and logged, never notified
    ADOPTED = "secret.adopted"
    DISCARDED = "pending.discarded"
    AUDIT_KEY_ROTATED = "audit.key_rotated"
    FREEZE_OVERRIDDEN = "freeze.overridden"
    DELIVERED = "sink.delivered"  # a sink (rotator.sinks) was brought up to date
    # the result of one notification delivery (``"type": "notification"`` in the audit log)
    NOTIFIED = "notification.result"


STEPS = frozenset({EventType.ADOPTED, EventType.DISCARDED, EventType.AUDIT_KEY_ROTATED, EventType.FREEZE_OVERRIDDEN,
                   EventType.DELIVERED})
NOTIFIABLE = frozenset(EventType) - STEPS - {EventType.NOTIFIED}


def is_step(event: Event) -> bool:
    """A step worth keeping that is not a contract event (audited as ``"type": "step"``)."""
    return event.type in STEPS


def is_notification(event: Event) -> bool:
    """The result of a notification delivery (``details``: notifier, event, result)."""
    return event.type is EventType.NOTIFIED


def new_correlation_id() -> str:
    """A fresh id that ties together the events and audit records of one operation."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to one secret. ``details`` holds event-specific, value-free fields."""

    type: EventType
    secret: str
    provider: str
    at: datetime
    actor: str
    correlation_id: str
    reason: str | None = None
    new_version: str | None = None
    old_version: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, used by the audit log, webhooks and ``-o json`` output."""
        out: dict[str, Any] = {
            "event": str(self.type),
            "secret": self.secret,
            "provider": self.provider,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "correlation_id": self.correlation_id,
        }
        for name in ("reason", "new_version", "old_version"):
            if (value := getattr(self, name)) is not None:
                out[name] = value
        if self.details:
            out["details"] = dict(self.details)
        return out


Subscriber = Callable[[Event], None]


class EventBus:
    """Delivers each event to every subscriber in order; a failing non-critical subscriber is isolated.

    Critical subscribers (the audit log) propagate their errors so the step is not reported done; the
    others have their failures passed to ``on_error`` (logged and counted) and never undo a rotation.
    """

    def __init__(self, on_error: Callable[[Subscriber, Event, Exception], None] | None = None) -> None:
        self._critical: list[Subscriber] = []
        self._others: list[Subscriber] = []
        self._on_error = on_error
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber, *, critical: bool = False) -> None:
        with self._lock:
            (self._critical if critical else self._others).append(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in list(self._critical):
            subscriber(event)
        for subscriber in list(self._others):
            try:
                subscriber(event)
            except Exception as exc:  # a notifier or metric must never fail a rotation
                if self._on_error is not None:
                    self._on_error(subscriber, event, exc)
