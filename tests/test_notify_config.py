"""Tests of rotator.notify.config: the notifier models the manifest embeds."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from rotator.notify import DeliveryPolicy, EmailConfig, NotifierConfig, SlackConfig, WebhookConfig

ADAPTER: TypeAdapter[NotifierConfig] = TypeAdapter(NotifierConfig)
HOOK = "https://hooks.slack.com/services/T000/B000/CanaryToken1234567890"


def _parse(data: dict[str, Any]) -> NotifierConfig:
    return ADAPTER.validate_python(data)


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        _parse(data)
    return str(info.value)


def _email(**kw: Any) -> dict[str, Any]:
    return {"type": "email", "host": "smtp.example.com", "from": "rotator@example.com",
            "to": ["security@example.com"], **kw}


def test_discriminated_by_type() -> None:
    """The `type` key picks the model; the DESIGN.md sample notifiers parse."""
    assert isinstance(_parse({"type": "slack", "webhook_url": HOOK}), SlackConfig)
    email = _parse(_email(username="bot", password="pw-123456789"))
    assert isinstance(email, EmailConfig)
    assert (email.port, email.starttls, email.ssl, email.from_) == (587, True, False, "rotator@example.com")
    hook = _parse({"type": "webhook", "url": "https://billing.internal/rotations",
                   "signing_secret": "0123456789abcdef"})
    assert isinstance(hook, WebhookConfig)
    assert hook.headers == {}


def test_unknown_type_and_extra_keys_rejected() -> None:
    """An unknown type and an unknown key are both validation errors."""
    assert "'slack', 'email', 'webhook'" in _error({"type": "pager", "url": "x"})
    assert "extra" in _error({"type": "slack", "webhook_url": HOOK, "chanel": "#ops"}).lower()


def test_secrets_hidden_in_repr_and_errors() -> None:
    """The hook URL, SMTP password and signing secret never show in a repr or a validation error."""
    slack = _parse({"type": "slack", "webhook_url": HOOK})
    email = _parse(_email(username="bot", password="pw-CANARY-9876"))
    assert "CanaryToken" not in repr(slack)
    assert "pw-CANARY" not in repr(email)
    with pytest.raises(ValidationError) as info:
        SlackConfig.model_validate({"type": "slack", "webhook_url": HOOK.replace("https", "ftp")})
    assert "CanaryToken" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        WebhookConfig.model_validate({"type": "webhook", "url": "https://x", "signing_secret": "sec-CANARY"})
    assert "sec-CANARY" not in str(info.value)


def test_timeout_accepts_durations() -> None:
    """timeout takes seconds or a duration string, and must be positive."""
    assert _parse({"type": "slack", "webhook_url": HOOK, "timeout": "2m"}).timeout == 120
    assert _parse({"type": "slack", "webhook_url": HOOK, "timeout": 2.5}).timeout == 2.5
    assert "greater than 0" in _error({"type": "slack", "webhook_url": HOOK, "timeout": 0})
    assert "duration" in _error({"type": "slack", "webhook_url": HOOK, "timeout": "soon"})


def test_event_filter_validated() -> None:
    """events must name real event types; the error lists them."""
    config = _parse({"type": "slack", "webhook_url": HOOK, "events": ["rotation.failed"]})
    assert config.wants("rotation.failed")
    assert not config.wants("rotation.succeeded")
    assert _parse({"type": "slack", "webhook_url": HOOK}).wants("key.revoked")
    message = _error({"type": "slack", "webhook_url": HOOK, "events": ["rotation.failure"]})
    assert "unknown event 'rotation.failure'" in message
    assert "key.revoked" in message


def test_retry_policy() -> None:
    """retry overrides attempts and backoff per notifier and keeps initial <= max."""
    config = _parse({"type": "slack", "webhook_url": HOOK, "retry": {"attempts": 2, "initial": "10s"}})
    assert config.retry == DeliveryPolicy(attempts=2, initial=10, max=30)
    assert DeliveryPolicy() == DeliveryPolicy(attempts=5, initial=1, max=30)
    assert "retry.max" in _error({"type": "slack", "webhook_url": HOOK, "retry": {"initial": 5, "max": 1}})
    assert "greater than or equal to 1" in _error({"type": "slack", "webhook_url": HOOK,
                                                   "retry": {"attempts": 0}})


def test_email_implicit_tls_defaults() -> None:
    """ssl: true means implicit TLS on port 465 unless a port is given, and excludes starttls."""
    config = _parse(_email(ssl=True))
    assert isinstance(config, EmailConfig)
    assert (config.port, config.starttls) == (465, False)
    config = _parse(_email(ssl=True, port=2465, starttls=False))
    assert isinstance(config, EmailConfig)
    assert config.port == 2465
    assert "exclusive" in _error(_email(ssl=True, starttls=True))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"starttls": False, "username": "bot", "password": "pw"}, "needs starttls or ssl"),
        ({"password": "pw"}, "username is not"),
        ({"to": []}, "at least 1 item"),
        ({"to": ["not-an-address"]}, "not an email address"),
        ({"from": "a@b.c\r\nBcc: x@y.z"}, "not an email address"),
        ({"port": 0}, "greater than or equal to 1"),
    ],
)
def test_email_invalid(extra: dict[str, Any], message: str) -> None:
    """Unsafe or incomplete email settings are rejected with a message naming the problem."""
    assert message in _error(_email(**extra))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url": "ftp://x/y"}, "http(s) URL"),
        ({"url": "file:///etc/passwd"}, "http(s) URL"),
        ({"signing_secret": "short"}, "at least 16"),
        ({"headers": {"X-Rotator-Signature": "x"}}, "set by rotator"),
        ({"headers": {"X-Team": "a\r\nEvil: 1"}}, "line break"),
    ],
)
def test_webhook_invalid(data: dict[str, Any], message: str) -> None:
    """Bad URLs, short signing secrets and header injection are rejected."""
    base = {"type": "webhook", "url": "https://example.com/h", "signing_secret": "0123456789abcdef"}
    assert message in _error({**base, **data})
