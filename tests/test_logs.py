"""Tests for rotator.logs: configuration, and redaction of values, secret-named keys and secret shapes."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from rotator.keyset import SecretValue
from rotator.logs import (
    REDACTED,
    configure_logging,
    forget_secret,
    get_logger,
    is_secret_key,
    redact,
    redact_text,
    register_secret,
)

PEM = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIHxcGr7Lw1hVb6kU5PH5wNMDqmh2c4ZmOBNwsgSNvPZt\n"
    "-----END PRIVATE KEY-----\n"
)
Lines = Callable[[], list[dict[str, Any]]]
SLACK = "https://hooks.slack.com/services/T0001/B0002/abcdefghijklmnopqrstuvwx"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


@pytest.fixture
def value() -> Iterator[str]:
    """A registered secret value, forgotten again after the test."""
    secret = secrets.token_urlsafe(32)
    register_secret(secret)
    yield secret
    forget_secret(secret)


@pytest.fixture
def capture() -> Lines:
    """Configure JSON logging into a buffer; calling the result returns the lines logged so far."""
    buf = io.StringIO()
    configure_logging("json", stream=buf)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buf.getvalue().splitlines()]

    return lines


def test_registered_value_redacted_everywhere(capture: Lines, value: str) -> None:
    """A registered value is hidden in the message, in plain fields and deep inside dicts and lists."""
    get_logger("t").info(f"staged {value}", note=f"prefix-{value}-suffix", deep={"a": [{"b": value}]})
    (line,) = capture()
    assert value not in json.dumps(line)
    assert line["event"] == f"staged {REDACTED}"
    assert line["note"] == f"prefix-{REDACTED}-suffix"
    assert line["deep"] == {"a": [{"b": REDACTED}]}


@pytest.mark.parametrize(
    "key",
    ["password", "Password", "db_password", "passwd", "token", "X-Vault-Token", "x_vault_token",
     "client_secret", "signing_secret", "api_key", "private_key", "webhook_url", "authorization",
     "value", "new_value", "session_token"],
)
def test_secret_named_keys_redacted(capture: Lines, key: str) -> None:
    """A field whose key names a secret is replaced whatever its content."""
    get_logger().info("event", **{key: "plain-text-content"})
    assert capture()[0][key] == REDACTED


def test_secret_name_field_kept(capture: Lines) -> None:
    """The exact key ``secret`` is the secret's name and stays readable; so do other ordinary keys."""
    get_logger().info("rotated", secret="payments/webhook-hmac", secret_name="x", provider="v", token=None)
    line = capture()[0]
    assert line["secret"] == "payments/webhook-hmac"
    assert (line["secret_name"], line["provider"], line["token"]) == ("x", "v", None)


def test_nested_secret_keys_redacted() -> None:
    """Secret-named keys are redacted inside nested structures too."""
    data = {"headers": {"Authorization": "Bearer abc", "Accept": "json"}, "items": [{"password": "x"}]}
    assert redact(data) == {"headers": {"Authorization": REDACTED, "Accept": "json"},
                            "items": [{"password": REDACTED}]}


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"key follows\n{PEM}done", "done"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----", ""),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAA (cut off", ""),
        (f"posting to {SLACK} now", "posting to https://hooks.slack.com/"),
        ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc", "Authorization: Bearer "),
        ("dsn postgres://admin:hunter2hunter2@db:5432/app", "postgres://"),
        ("GET https://api.example.com/cb?id=7&token=abcdef123456 failed", "?id=7&token="),
    ],
)
def test_shapes_masked(text: str, kept: str) -> None:
    """PEM private keys, Slack hooks, bearer tokens, URL userinfo and token query parameters are masked."""
    out = redact_text(text)
    assert REDACTED in out
    assert kept in out
    for leak in ("MC4CAQAw", "MIIEow", "b3BlbnNz", "abcdefghijklmnop", "eyJhbGci", "hunter2", "abcdef123456"):
        assert leak not in out


def test_ordinary_text_untouched() -> None:
    """Text without anything secret-shaped comes back unchanged."""
    text = "rotated payments/webhook-hmac to v3 (see https://example.com/docs?page=2), basic checks ok"
    assert redact_text(text) == text


def test_secret_value_object_redacted(capture: Lines) -> None:
    """A SecretValue passed as a field renders as the redaction marker."""
    get_logger().info("stage", staged=SecretValue("super-secret-material"), items=[SecretValue("another")])
    line = capture()[0]
    assert (line["staged"], line["items"]) == (REDACTED, [REDACTED])


def test_exception_text_redacted(capture: Lines, value: str) -> None:
    """The formatted traceback of a logged exception has registered values removed."""
    try:
        raise RuntimeError(f"backend echoed {value}")
    except RuntimeError:
        get_logger().exception("write failed")
    line = capture()[0]
    assert "RuntimeError: backend echoed " + REDACTED in line["exception"]
    assert value not in json.dumps(line)


def test_exception_object_field_redacted(capture: Lines, value: str) -> None:
    """An exception passed as a field value is rendered as its redacted message."""
    get_logger().warning("retrying", error=ValueError(f"bad {value}"))
    assert capture()[0]["error"] == f"ValueError: bad {REDACTED}"


def test_short_values_ignored(capture: Lines) -> None:
    """Values under 8 characters are not registered, so ordinary words survive."""
    register_secret("abc1234")
    get_logger().info("abc1234 stays")
    assert capture()[0]["event"] == "abc1234 stays"


def test_forget_secret(capture: Lines) -> None:
    """A forgotten value is no longer redacted, and one of 8-10 characters is found too."""
    short, long = "shortsec9", secrets.token_hex(20)
    register_secret(short)
    register_secret(SecretValue(long))
    get_logger().info(f"{short} {long}")
    forget_secret(short)
    forget_secret(long)
    get_logger().info(f"{short} {long}")
    first, second = capture()
    assert first["event"] == f"{REDACTED} {REDACTED}"
    assert second["event"] == f"{short} {long}"


def test_logger_name_and_levels(capture: Lines) -> None:
    """Lines carry level, UTC timestamp and logger name; DEBUG is dropped at verbosity 0."""
    log = get_logger("rotator.engine")
    log.debug("hidden")
    log.info("shown")
    (line,) = capture()
    assert (line["event"], line["level"], line["logger"]) == ("shown", "info", "rotator.engine")
    assert line["timestamp"].endswith("Z")


def test_verbose_logs_debug() -> None:
    """verbosity >= 1 lets DEBUG lines through."""
    buf = io.StringIO()
    configure_logging("json", verbosity=1, stream=buf)
    get_logger().debug("details")
    assert json.loads(buf.getvalue())["level"] == "debug"


def test_console_mode(value: str) -> None:
    """The console renderer writes readable, uncoloured lines off a TTY, still redacted."""
    buf = io.StringIO()
    configure_logging("console", stream=buf)
    get_logger().info("rotated", secret="payments/webhook-hmac", password="pw123456789")
    try:
        raise ValueError(f"oops {value}")
    except ValueError:
        get_logger().exception("failed")
    out = buf.getvalue()
    assert "rotated" in out
    assert "secret=payments/webhook-hmac" in out
    assert f"password={REDACTED}" in out
    assert f"ValueError: oops {REDACTED}" in out
    assert value not in out
    assert "\x1b[" not in out


def test_default_format_off_tty_is_json() -> None:
    """Without an explicit format, a non-TTY stream gets JSON lines."""
    buf = io.StringIO()
    configure_logging(stream=buf)
    get_logger().info("hello")
    assert json.loads(buf.getvalue())["event"] == "hello"


def test_default_stream_is_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Logs go to stderr so stdout stays clean for command output."""
    configure_logging("json")
    get_logger().info("to-stderr")
    out, err = capsys.readouterr()
    assert out == ""
    assert "to-stderr" in err


def test_stdlib_third_party_redacted(capture: Lines, value: str) -> None:
    """A third-party stdlib logger passes the same redaction, limited to WARNING."""
    third = logging.getLogger("botocore.endpoint")
    third.info("request with %s", value)
    third.warning("retry with %s", value)
    try:
        raise ConnectionError(f"reset {value}")
    except ConnectionError:
        logging.getLogger("urllib3.connectionpool").exception("connection failed")
    everything = capture()  # threads left by other tests in this worker (moto) may log too: pick ours
    first, second = [line for line in everything
                     if line.get("event", "").startswith(("retry with", "connection failed"))]
    assert (first["event"], first["level"], first["logger"]) == (f"retry with {REDACTED}", "warning",
                                                                 "botocore.endpoint")
    assert f"ConnectionError: reset {REDACTED}" in second["exception"]
    assert value not in json.dumps(everything)


def test_reconfigure_does_not_stack_handlers() -> None:
    """Configuring twice leaves one redacting handler, writing to the newest stream."""
    old, new = io.StringIO(), io.StringIO()
    configure_logging("json", stream=old)
    configure_logging("json", stream=new)
    logging.getLogger("werkzeug").error("once")
    assert old.getvalue() == ""
    assert len(new.getvalue().splitlines()) == 1


def test_is_secret_key() -> None:
    """Key classification: secret-ish names and suffixes yes, the name field and lookalikes no."""
    assert all(map(is_secret_key, ["TOKEN", "aws_secret_access_key", "x-api-key", "hook_url", "cookie"]))
    assert not any(map(is_secret_key, ["secret", "secrets", "secret_name", "tokens_used", "provider"]))


def test_redaction_is_fast_with_many_values(capture: Lines) -> None:
    """With 5,000 registered values, 10,000 log lines take well under two seconds."""
    values = [secrets.token_urlsafe(32) for _ in range(5000)]
    for v in values:
        register_secret(v)
    try:
        log = get_logger("bench")
        start = time.process_time()  # CPU time: robust to other load on the machine
        for i in range(10_000):
            log.info("rotation.succeeded", secret=f"team/app-{i}", provider="vault", actor="daemon",
                     new_version="v12", message=f"rotated with {values[i % 5000]}")
        elapsed = time.process_time() - start
    finally:
        for v in values:
            forget_secret(v)
    lines = capture()
    assert len(lines) == 10_000
    assert lines[-1]["message"] == f"rotated with {REDACTED}"
    assert elapsed < 2.0, f"10,000 redacted log lines took {elapsed:.2f}s"


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_no_color_disables_console_colors(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the console renderer colours, unless NO_COLOR is set (no-color.org) or colors=False."""
    for env, colors, expect in ((None, None, True), ("1", None, False), (None, False, False), ("1", True, True)):
        if env is None:
            monkeypatch.delenv("NO_COLOR", raising=False)
        else:
            monkeypatch.setenv("NO_COLOR", env)
        buf = _Terminal()
        configure_logging("console", stream=buf, colors=colors)
        get_logger().warning("colored?", secret="s")
        assert ("\x1b[" in buf.getvalue()) is expect, (env, colors)


def test_level_and_return_value() -> None:
    """An explicit level filters below it; the chosen format is returned (json off a TTY by default)."""
    buf = io.StringIO()
    assert configure_logging(stream=buf, level=logging.WARNING) == "json"
    get_logger().info("hidden")
    get_logger().warning("shown")
    logging.getLogger("botocore").warning("third party shown")
    assert [json.loads(line)["event"] for line in buf.getvalue().splitlines()] == ["shown", "third party shown"]
    assert configure_logging("console", stream=buf) == "console"


def test_compact_console_drops_machine_fields() -> None:
    """Compact console lines keep the event, secret and error but not ids and event times."""
    buf = io.StringIO()
    configure_logging("console", stream=buf, compact=True)
    get_logger("rotator").warning("rotation.failed", secret="s1", correlation_id="c0ffee", at="2026-01-01",
                                  error="verify failed")
    line = buf.getvalue()
    assert "rotation.failed" in line
    assert "secret=s1" in line
    assert "error='verify failed'" in line
    assert "c0ffee" not in line
    assert "2026-01-01" not in line
    assert re.match(r"\d\d:\d\d:\d\dZ ", line)


def test_default_stream_follows_sys_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a stream, each line goes to whatever sys.stderr is at that moment: a progress bar that
    swaps sys.stderr for its own console gets the lines (and prints them above the bar)."""
    configure_logging("json", cache=True)
    log = get_logger("rotator")
    swapped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", swapped)
    log.info("while the bar shows")
    logging.getLogger("urllib3").warning("third party too")
    assert "while the bar shows" in swapped.getvalue()
    assert "third party too" in swapped.getvalue()


def test_durations_logged_like_the_manifest_writes_them(capture: Lines) -> None:
    """A timedelta field is logged as ``5m`` / ``7d``, not Python's ``0:05:00``."""
    from datetime import timedelta

    get_logger().info("scheduled", every=timedelta(minutes=5), grace=timedelta(days=7))
    (line,) = capture()
    assert (line["every"], line["grace"]) == ("5m", "7d")
