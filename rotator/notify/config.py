"""Notifier configuration: the ``notifiers:`` section of the manifest, one model per ``type``.

``${VAR}`` values are interpolated by the manifest loader before these models validate them. Secrets (the
Slack hook URL, the SMTP password, the webhook signing secret) are ``SecretStr`` so they never show in a
``repr`` or a validation error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from rotator.events import NOTIFIABLE, EventType
from rotator.schedule import parse_duration

__all__ = [
    "DeliveryPolicy",
    "EmailConfig",
    "NotifierConfig",
    "SlackConfig",
    "WebhookConfig",
]


def _seconds(value: Any) -> Any:
    """Accept a number of seconds or a duration string like ``10s`` / ``1m``."""
    if isinstance(value, str):
        return parse_duration(value).total_seconds()
    return value


Seconds = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(gt=0),
    WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0},
                              {"type": "string", "pattern": r"^(\d+(\.\d+)?[wdhms])+$"}],
                    "description": "seconds, or a duration like 10s or 2m"}),
]
EVENT_NAMES = tuple(str(e) for e in EventType if e in NOTIFIABLE)  # steps and results are never notified


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True)


class DeliveryPolicy(_Strict):
    """Retries of one delivery: ``attempts`` tries, exponential backoff from ``initial`` up to ``max``."""

    attempts: int = Field(5, ge=1, le=20)
    initial: Seconds = 1.0
    max: Seconds = 30.0

    @model_validator(mode="after")
    def _ordered(self) -> DeliveryPolicy:
        if self.max < self.initial:
            raise ValueError("retry.max must be >= retry.initial")
        return self


class _Notifier(_Strict):
    timeout: Seconds = 10.0
    events: list[str] | None = None
    retry: DeliveryPolicy | None = None  # None: the dispatcher's default policy

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str] | None) -> list[str] | None:
        for name in value or ():
            if name not in EVENT_NAMES:
                raise ValueError(f"unknown event '{name}' (events: {', '.join(EVENT_NAMES)})")
        return value

    def wants(self, event_name: str) -> bool:
        """True when the ``events`` filter lets ``event_name`` through."""
        return self.events is None or event_name in self.events


def _http_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError("must be an http(s) URL")
    return url


class SlackConfig(_Notifier):
    """A Slack incoming webhook; the URL is itself a credential."""

    type: Literal["slack"]
    webhook_url: SecretStr
    channel: str | None = None
    username: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _check_url(cls, value: SecretStr) -> SecretStr:
        try:
            _http_url(value.get_secret_value())
        except ValueError:
            raise ValueError("webhook_url must be an http(s) URL") from None
        return value


class EmailConfig(_Notifier):
    """SMTP delivery: STARTTLS (default) or implicit TLS (``ssl: true``), optional AUTH."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    ssl: bool = False
    ca_file: str | None = None  # extra CA bundle (a private relay, tests)
    from_: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    subject_prefix: str = "[rotator]"

    @field_validator("from_", "to")
    @classmethod
    def _addresses(cls, value: str | list[str]) -> str | list[str]:
        for address in [value] if isinstance(value, str) else value:
            if "@" not in address or any(c in address for c in "\r\n,"):
                raise ValueError(f"'{address}' is not an email address")
        return value

    @model_validator(mode="before")
    @classmethod
    def _implicit_tls_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("ssl") is True:
            if data.get("starttls") is True:
                raise ValueError("starttls and ssl are exclusive: ssl is implicit TLS (usually port 465)")
            data = {"port": 465, **data, "starttls": False}
        return data

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> EmailConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.username is not None and not (self.starttls or self.ssl):
            raise ValueError("SMTP AUTH needs starttls or ssl: the password would cross the network in clear")
        return self


_RESERVED_HEADERS = {"content-type", "content-length", "host", "x-rotator-signature", "x-rotator-timestamp",
                     "x-rotator-event"}


class WebhookConfig(_Notifier):
    """A JSON POST signed with HMAC-SHA256 (see :mod:`rotator.webhooks`)."""

    type: Literal["webhook"]
    url: str
    signing_secret: SecretStr
    headers: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value)

    @field_validator("signing_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("signing_secret must be at least 16 characters")
        return value

    @field_validator("headers")
    @classmethod
    def _no_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header '{name}' is set by rotator")
            if any(c in name + text for c in "\r\n"):
                raise ValueError(f"header '{name}' contains a line break")
        return value


NotifierConfig = Annotated[SlackConfig | EmailConfig | WebhookConfig, Field(discriminator="type")]
