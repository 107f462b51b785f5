"""Events the engine emits (DESIGN.md section 5) and the bus that fans them out.

Subscribers are the audit log (first: an event is reported only after its audit record is fsync'd), logs,
metrics and notifiers. An event never carries a secret value: only names, version ids, times, the actor,
a reason and a correlation id.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["Event", "EventBus", "EventType", "Subscriber", "new_correlation_id"]


class EventType(StrEnum):
    """The event names of the contract; notifier filters and the audit log use these strings."""

    UPCOMING = "rotation.upcoming"
    OVERDUE = "rotation.overdue"  # a reminder-only (kind: manual) secret was not rotated by hand in time
    SUCCEEDED = "rotation.succeeded"
    FAILED = "rotation.failed"
    ROLLED_BACK = "rotation.rolled_back"
    RETIRED = "key.retired"
    REVOKED = "key.revoked"
    SINK_FAILED = "sink.failed"  # a delivery target (rotator.sinks) could not be brought up to date


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
