"""Slack incoming webhooks through ``slack_sdk``'s ``WebhookClient``: a Block Kit message per event.

The hook URL is a credential: slack_sdk gets a silenced logger (its debug lines print the URL) and no
retry handlers of its own (the dispatcher retries), and errors are rebuilt without the URL.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from rotator.events import Event
from rotator.notify.base import failure, message_fields, title
from rotator.notify.config import SlackConfig

__all__ = ["SlackNotifier", "slack_message"]

_QUIET = logging.getLogger("rotator.notify.slack_sdk")
_QUIET.disabled = True
_QUIET.propagate = False
_QUIET.setLevel(logging.CRITICAL + 1)

_SECTION_FIELDS = 10  # Block Kit: at most 10 fields per section
_LONG = ("Reason",)


def slack_message(event: Event) -> dict[str, Any]:
    """The ``text`` fallback, header ``blocks`` and a colored attachment holding the fields."""
    emoji, _, headline, color = title(event)
    heading = f"{emoji} {headline}: {event.secret}"
    fields = message_fields(event)
    short = [{"type": "mrkdwn", "text": f"*{label}*\n{_md(text)}"} for label, text in fields
             if label not in _LONG]
    body: list[dict[str, Any]] = [
        {"type": "section", "fields": short[i:i + _SECTION_FIELDS]}
        for i in range(0, len(short), _SECTION_FIELDS)
    ]
    body += [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{label}*\n{_md(text)}"}}
        for label, text in fields if label in _LONG
    ]
    body.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"rotator · correlation id `{event.correlation_id}`"}]})
    return {
        "text": f"{headline}: {event.secret}",
        "blocks": [{"type": "header", "text": {"type": "plain_text", "text": heading[:150], "emoji": True}}],
        "attachments": [{"color": color, "blocks": body}],
    }


def _md(text: str) -> str:
    """Escape Slack mrkdwn control characters and cap the length (2000 per text object)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")[:1900]


class SlackNotifier:
    """Posts events to one Slack incoming webhook."""

    def __init__(self, name: str, config: SlackConfig) -> None:
        from slack_sdk.webhook import WebhookClient  # lazy: only manifests with Slack pay for it

        self.name = name
        self.config = config
        self._client = WebhookClient(
            config.webhook_url.get_secret_value(), timeout=max(1, round(config.timeout)),
            logger=_QUIET, retry_handlers=[],
        )

    def secrets(self) -> tuple[str, ...]:
        url = self.config.webhook_url.get_secret_value()
        parts = urlsplit(url)
        tail = parts.path.rstrip("/").rsplit("/", 1)[-1]
        return tuple(s for s in (url, parts.path, parts.query, tail if len(tail) >= 8 else "") if s)

    def send(self, event: Event) -> None:
        """Post ``event``; raise DeliveryError on a network error or a non-2xx answer."""
        message = slack_message(event)
        if self.config.channel:
            message["channel"] = self.config.channel
        if self.config.username:
            message["username"] = self.config.username
        try:
            response = self._client.send_dict(message)
        except Exception as exc:
            raise failure(self.name, exc, self.secrets()) from None
        if not 200 <= response.status_code < 300:
            retryable = response.status_code >= 500 or response.status_code in (408, 429)
            detail = (response.body or "").strip()[:100]
            raise failure(self.name, f"HTTP {response.status_code} {detail}".strip(), self.secrets(),
                          retryable=retryable)
