"""What every notifier is: ``send(event)`` that raises :class:`DeliveryError`, plus shared message content.

Error contract: a notifier raises only :class:`DeliveryError`, whose message is already scrubbed of the
notifier's own secrets (hook URL, SMTP password, signing secret) and never chains the vendor exception
(its attributes may hold the URL). ``retryable`` says whether another attempt can help.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from rotator.errors import RotatorError
from rotator.events import Event, EventType, new_correlation_id
from rotator.keyset import SecretValue
from rotator.logs import REDACTED, redact_text

__all__ = [
    "TEST_EVENT",
    "DeliveryError",
    "Notifier",
    "event_id",
    "event_name",
    "event_payload",
    "failure",
    "make_test_event",
    "message_fields",
    "scrub",
    "title",
]

TEST_EVENT = "notification.test"  # the name ``rotator notify test`` messages carry instead of their type


class DeliveryError(RotatorError):
    """One delivery attempt failed; the message names the notifier and never holds a secret."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Notifier(Protocol):
    """One configured destination. ``send`` raises DeliveryError; ``secrets`` lists strings to scrub."""

    name: str

    def send(self, event: Event) -> None: ...

    def secrets(self) -> tuple[str, ...]: ...


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (longest first) and anything secret-shaped replaced."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_text(text)


def failure(notifier: str, exc: BaseException | str, secrets: Iterable[str], *,
            retryable: bool = True) -> DeliveryError:
    """A DeliveryError for ``exc`` (type, first line) scrubbed of ``secrets``; raise it ``from None``."""
    if isinstance(exc, str):
        text = f"{notifier}: {exc}"
    else:
        lines = str(exc).strip().splitlines()
        text = f"{notifier}: {type(exc).__name__}" + (f": {lines[0]}" if lines else "")
    return DeliveryError(scrub(text, secrets)[:300], retryable=retryable)  # scrub first: never cut a secret


def make_test_event(actor: str = "cli") -> Event:
    """The event ``rotator notify test`` sends: typed UPCOMING, named ``notification.test`` on the wire."""
    return Event(
        type=EventType.UPCOMING,
        secret="rotator/notify-test",  # noqa: S106  (a secret *name*, not a value)
        provider="-",
        at=datetime.now(UTC),
        actor=actor,
        correlation_id=new_correlation_id(),
        reason="test message from `rotator notify test`: this notifier is configured correctly",
        details={"test": True},
    )


def event_name(event: Event) -> str:
    """The wire name of ``event``: its type, or ``notification.test`` for a test message."""
    return TEST_EVENT if event.details.get("test") is True else str(event.type)


def _safe(value: Any) -> Any:
    if isinstance(value, SecretValue):
        return REDACTED
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def event_payload(event: Event) -> dict[str, Any]:
    """``event.to_dict()`` made JSON-safe (a stray SecretValue becomes ``**redacted**``) plus ``id``."""
    payload: dict[str, Any] = _safe(event.to_dict())
    payload["event"] = event_name(event)
    payload["id"] = event_id(event)
    return payload


def event_id(event: Event) -> str:
    """A stable id for ``event`` (same across retries, different per event): receivers dedupe on it."""
    canonical = json.dumps(_safe(event.to_dict()), sort_keys=True, separators=(",", ":"))
    return "evt_" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


_TITLES = {
    EventType.UPCOMING: (":hourglass_flowing_sand:", "⏳", "Rotation coming up", "#e8a317"),
    EventType.OVERDUE: (":alarm_clock:", "⏰", "Rotation by hand overdue", "#e01e5a"),
    EventType.SUCCEEDED: (":white_check_mark:", "✅", "Rotation succeeded", "#2eb67d"),
    EventType.FAILED: (":x:", "❌", "Rotation failed", "#e01e5a"),
    EventType.ROLLED_BACK: (":leftwards_arrow_with_hook:", "↩️", "Rotation rolled back", "#e8a317"),
    EventType.RETIRED: (":wastebasket:", "🗑️", "Old key retired", "#6b7280"),
    EventType.REVOKED: (":rotating_light:", "🚨", "Key revoked", "#e01e5a"),
    EventType.SINK_FAILED: (":warning:", "⚠️", "Delivery to a sink failed", "#e01e5a"),
}
_TEST_TITLE = (":test_tube:", "🧪", "Test notification", "#1d9bd1")


def title(event: Event) -> tuple[str, str, str, str]:
    """``(slack emoji, unicode emoji, headline, hex color)`` for the event."""
    return _TEST_TITLE if event_name(event) == TEST_EVENT else _TITLES[event.type]


_FIRST_DETAILS = ("due_at", "notice", "lead_time", "expires_at", "grace_until", "grace")


def message_fields(event: Event) -> list[tuple[str, str]]:
    """``(label, text)`` pairs shown by Slack and email: secret, provider, event, versions, times, actor..."""
    fields = [("Secret", event.secret), ("Provider", event.provider), ("Event", event_name(event))]
    if event.new_version:
        fields.append(("New version", event.new_version))
    if event.old_version:
        fields.append(("Old version", event.old_version))
    fields.append(("At", _when(event.at)))
    details = {k: v for k, v in event.details.items() if k != "test"}
    for key in sorted(details, key=lambda k: (k not in _FIRST_DETAILS, _FIRST_DETAILS.index(k)
                                              if k in _FIRST_DETAILS else 0, k)):
        value = _safe(details[key])
        text = value if isinstance(value, str) else json.dumps(value)
        fields.append((key.replace("_", " ").capitalize(), _when_text(text)))
    fields += [("Actor", event.actor), ("Correlation id", event.correlation_id)]
    if event.reason:
        fields.append(("Reason", event.reason))
    return fields


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _when_text(text: str) -> str:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text
    return _when(parsed) if parsed.tzinfo is not None and "T" in text else text
