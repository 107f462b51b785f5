"""Signed JSON webhooks over stdlib ``urllib``; receivers check them with :func:`rotator.webhooks.verify`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from rotator import __version__
from rotator.events import Event
from rotator.notify.base import event_name, event_payload, failure
from rotator.notify.config import WebhookConfig
from rotator.webhooks import EVENT_HEADER, sign

__all__ = ["WebhookNotifier"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would drop the body (POST becomes GET) or send the signature elsewhere: fail instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebhookNotifier:
    """POSTs each event, signed with the notifier's signing secret."""

    def __init__(self, name: str, config: WebhookConfig) -> None:
        self.name = name
        self.config = config
        self._opener = urllib.request.build_opener(_NoRedirect)

    def secrets(self) -> tuple[str, ...]:
        parts = urlsplit(self.config.url)
        userinfo = parts.netloc.rpartition("@")[0]
        return tuple(s for s in (self.config.signing_secret.get_secret_value(), userinfo, parts.query) if s)

    def request(self, event: Event, now: float | None = None) -> urllib.request.Request:
        """The signed POST for ``event`` (signed at ``now``, default: the current time)."""
        body = json.dumps(event_payload(event), sort_keys=True, separators=(",", ":")).encode()
        secret = self.config.signing_secret.get_secret_value()
        signed = sign(body, secret, time.time() if now is None else now)
        headers = {
            **self.config.headers,
            "Content-Type": "application/json",
            "User-Agent": f"rotator/{__version__}",
            EVENT_HEADER: event_name(event),
            **signed,
        }
        # the scheme is checked to be http(s) when the config is validated
        return urllib.request.Request(self.config.url, data=body, headers=headers, method="POST")  # noqa: S310

    def send(self, event: Event) -> None:
        """Deliver ``event``; raise DeliveryError on a network error or a non-2xx answer."""
        try:
            with self._opener.open(self.request(event), timeout=self.config.timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            exc.close()
            retryable = exc.code >= 500 or exc.code in (408, 429)
            text = f"HTTP {exc.code} {exc.reason}"
            raise failure(self.name, text, self.secrets(), retryable=retryable) from None
        except Exception as exc:
            raise failure(self.name, exc, self.secrets()) from None
