"""Tests of the Slack and webhook notifiers and the dispatcher against a real local HTTP server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from structlog.testing import capture_logs
from werkzeug import Request, Response

from rotator.errors import UsageError
from rotator.events import Event, EventType
from rotator.keyset import SecretValue
from rotator.notify import (
    DeliveryError,
    DeliveryPolicy,
    Dispatcher,
    NotifierConfig,
    SlackConfig,
    WebhookConfig,
)
from rotator.webhooks import ReplayCache, WebhookVerificationError, verify

HOOK_SECRET = "whsec-CANARY-signing-0123456789"
SLACK_PATH = "/services/T0CANARY/B0CANARY/CanaryHookToken123456"
VALUE = "CANARY-secret-value-7f3a9c"
FAST = DeliveryPolicy(attempts=3, initial=0.01, max=0.02)
CANARIES = (HOOK_SECRET, SLACK_PATH, "CanaryHookToken123456", VALUE)

Result = tuple[str, Event, str, Exception | None]


def _event(kind: EventType = EventType.SUCCEEDED, secret: str = "payments/webhook-hmac",
           **extra: Any) -> Event:
    return Event(
        type=kind, secret=secret, provider="vault", at=datetime(2025, 3, 1, 3, 0, tzinfo=UTC),
        actor="cronjob", correlation_id="corr-123", reason=extra.pop("reason", "scheduled"),
        new_version="v8", old_version="v7",
        details={"due_at": "2025-03-01T03:00:00+00:00", "expires_at": "2025-03-04T03:00:00+00:00", **extra},
    )


def _webhook(httpserver: HTTPServer, **kw: Any) -> WebhookConfig:
    return WebhookConfig(type="webhook", url=httpserver.url_for("/hook"), signing_secret=HOOK_SECRET, **kw)


def _slack(url: str, **kw: Any) -> SlackConfig:
    return SlackConfig(type="slack", webhook_url=url, **kw)


class Recorder:
    """Collects on_result calls from the dispatcher threads."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.lock = threading.Lock()

    def __call__(self, notifier: str, event: Event, result: str, exc: Exception | None) -> None:
        with self.lock:
            self.results.append((notifier, event, result, exc))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def _dispatcher(configs: dict[str, NotifierConfig], recorder: Recorder, routes: Sequence[str] | None = None
                ) -> Dispatcher:
    names = list(configs) if routes is None else list(routes)
    return Dispatcher(configs, lambda secret: names, on_result=recorder, policy=FAST)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


def _bodies(httpserver: HTTPServer) -> list[dict[str, Any]]:
    return [json.loads(req.get_data()) for req, _ in httpserver.log]


def _assert_no_canary(*texts: str) -> None:
    for text in texts:
        for canary in CANARIES:
            assert canary not in text


def test_slack_block_kit_message(httpserver: HTTPServer, recorder: Recorder) -> None:
    """Slack gets one Block Kit message with header, all fields, reason, channel and a color per event."""
    httpserver.expect_request(SLACK_PATH, method="POST").respond_with_data("ok")
    config = _slack(httpserver.url_for(SLACK_PATH), channel="#ops", username="rotator")
    with _dispatcher({"ops": config}, recorder) as dispatcher:
        dispatcher(_event(reason="quarterly schedule"))
        assert dispatcher.flush(5)
    (body,) = _bodies(httpserver)
    assert body["channel"] == "#ops"
    assert body["username"] == "rotator"
    assert body["text"] == "Rotation succeeded: payments/webhook-hmac"
    header = body["blocks"][0]
    assert header["type"] == "header"
    assert header["text"]["text"] == ":white_check_mark: Rotation succeeded: payments/webhook-hmac"
    attachment = body["attachments"][0]
    assert attachment["color"] == "#2eb67d"
    fields = [f["text"] for block in attachment["blocks"] if block["type"] == "section"
              for f in block.get("fields", [])]
    for expected in ("*Secret*\npayments/webhook-hmac", "*Provider*\nvault", "*Event*\nrotation.succeeded",
                     "*New version*\nv8", "*Old version*\nv7", "*Due at*\n2025-03-01 03:00:00 UTC",
                     "*Expires at*\n2025-03-04 03:00:00 UTC", "*Actor*\ncronjob",
                     "*Correlation id*\ncorr-123"):
        assert expected in fields
    texts = [b["text"]["text"] for b in attachment["blocks"] if b["type"] == "section" and "text" in b]
    assert texts == ["*Reason*\nquarterly schedule"]
    assert recorder.results == [("ops", recorder.results[0][1], "ok", None)]


def test_slack_failure_color_and_escaping(httpserver: HTTPServer, recorder: Recorder) -> None:
    """A failure is red with its own emoji, and mrkdwn control characters in a reason are escaped."""
    httpserver.expect_request(SLACK_PATH).respond_with_data("ok")
    with _dispatcher({"ops": _slack(httpserver.url_for(SLACK_PATH))}, recorder) as dispatcher:
        dispatcher(_event(EventType.FAILED, reason="verify hook exited 1 <@here>"))
    (body,) = _bodies(httpserver)
    assert body["blocks"][0]["text"]["text"].startswith(":x: Rotation failed")
    assert body["attachments"][0]["color"] == "#e01e5a"
    assert "&lt;@here&gt;" in json.dumps(body)


def test_slack_error_is_redacted(httpserver: HTTPServer, recorder: Recorder) -> None:
    """A Slack 404 fails once without retry, and neither the error nor logs show the hook URL."""
    httpserver.expect_request(SLACK_PATH).respond_with_data("no_service", status=404)
    with capture_logs() as logs, _dispatcher({"ops": _slack(httpserver.url_for(SLACK_PATH))}, recorder) as d:
        d(_event())
        assert d.flush(5)
    assert len(httpserver.log) == 1
    ((name, _, result, exc),) = recorder.results
    assert (name, result) == ("ops", "failed")
    assert "HTTP 404 no_service" in str(exc)
    (failure,) = d.failures()
    assert (failure.notifier, failure.event, failure.secret) == ("ops", "rotation.succeeded",
                                                                 "payments/webhook-hmac")
    _assert_no_canary(str(exc), repr(exc), failure.reason, repr(logs))


def test_webhook_signed_and_verifiable(httpserver: HTTPServer, recorder: Recorder) -> None:
    """The webhook body is the event plus an id, signed so that the shipped verify() accepts it once."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    event = _event(EventType.REVOKED)
    with _dispatcher({"billing": _webhook(httpserver, headers={"X-Team": "payments"})}, recorder) as d:
        d(event)
    ((request, _),) = httpserver.log
    headers, body = dict(request.headers), request.get_data()
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Rotator-Event"] == "key.revoked"
    assert request.headers["X-Team"] == "payments"
    cache = ReplayCache()
    payload = verify(headers, body, HOOK_SECRET, replay_cache=cache)
    expected = event.to_dict()
    assert {k: v for k, v in payload.items() if k != "id"} == expected
    assert payload["id"].startswith("evt_")
    ts = int(request.headers["X-Rotator-Timestamp"])
    assert abs(ts - time.time()) < 60
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(headers, body, HOOK_SECRET, replay_cache=cache)
    for skew in (301, -301):
        with pytest.raises(WebhookVerificationError, match="stale_timestamp"):
            verify(headers, body, HOOK_SECRET, now=ts + skew, replay_cache=ReplayCache())
    _assert_no_canary(body.decode(), json.dumps({k: v for k, v in headers.items() if "Signature" not in k}))


def test_retries_until_receiver_recovers(httpserver: HTTPServer, recorder: Recorder) -> None:
    """A receiver answering 500 twice then 200 gets three attempts and exactly one successful delivery."""
    for status in (500, 500, 200):
        httpserver.expect_ordered_request("/hook", method="POST").respond_with_data("", status=status)
    with _dispatcher({"billing": _webhook(httpserver)}, recorder) as d:
        d(_event())
        assert d.flush(5)
    assert [resp.status_code for _, resp in httpserver.log] == [500, 500, 200]
    assert len({body["id"] for body in _bodies(httpserver)}) == 1  # the same event id on every attempt
    assert [(n, r) for n, _, r, _ in recorder.results] == [("billing", "ok")]
    assert d.failures() == []


def test_gives_up_after_attempts(httpserver: HTTPServer, recorder: Recorder) -> None:
    """A receiver that keeps failing gets `attempts` tries and one failed result."""
    httpserver.expect_request("/hook").respond_with_data("", status=503)
    with _dispatcher({"billing": _webhook(httpserver)}, recorder) as d:
        d(_event())
    assert len(httpserver.log) == FAST.attempts
    ((_, _, result, exc),) = recorder.results
    assert result == "failed"
    assert "HTTP 503" in str(exc)


def test_down_notifier_gets_single_attempts_until_it_recovers(httpserver: HTTPServer, recorder: Recorder) -> None:
    """After one delivery exhausts its retries, the next gets one attempt; a success restores retries."""
    statuses = [503] * 4 + [200] + [503] * 3

    def handler(request: Request) -> Response:
        return Response("", status=statuses.pop(0))

    httpserver.expect_request("/hook").respond_with_handler(handler)
    with _dispatcher({"billing": _webhook(httpserver)}, recorder) as d:
        for _ in range(3):
            d(_event())
            d.flush(5)
        assert len(httpserver.log) == 3 + 1 + 1  # full retries, a single try, then success on one try
        d(_event())
    assert len(httpserver.log) == 5 + 3  # retries are back after the success
    assert [r for _, _, r, _ in recorder.results] == ["failed", "failed", "ok", "failed"]


def test_client_error_not_retried(httpserver: HTTPServer, recorder: Recorder) -> None:
    """A 4xx answer (other than 408/429) is permanent: one attempt only."""
    httpserver.expect_request("/hook").respond_with_data("bad", status=400)
    with _dispatcher({"billing": _webhook(httpserver)}, recorder) as d:
        d(_event())
    assert len(httpserver.log) == 1
    assert [r for _, _, r, _ in recorder.results] == ["failed"]


def test_redirect_not_followed(httpserver: HTTPServer, recorder: Recorder) -> None:
    """A redirect is a failure: the signed body is never re-sent elsewhere."""
    httpserver.expect_request("/hook").respond_with_data("", status=302, headers={"Location": "/other"})
    with _dispatcher({"billing": _webhook(httpserver)}, recorder) as d:
        d(_event())
    assert [req.path for req, _ in httpserver.log] == ["/hook"]
    assert [r for _, _, r, _ in recorder.results] == ["failed"]


def test_down_notifier_does_not_block(httpserver: HTTPServer, recorder: Recorder, closed_port: int,
                                      black_hole: int) -> None:
    """Emitting returns without waiting for a notifier that refuses or one that hangs; a healthy one still
    delivers while the hanging one waits. Checked by order of outcomes, not by a stopwatch."""
    httpserver.expect_request("/hook").respond_with_data("")
    configs: dict[str, NotifierConfig] = {
        "refused": _slack(f"http://127.0.0.1:{closed_port}{SLACK_PATH}"),
        "hanging": WebhookConfig(type="webhook", url=f"http://127.0.0.1:{black_hole}/hook",
                                 signing_secret=HOOK_SECRET, timeout=5,
                                 retry=DeliveryPolicy(attempts=1, initial=0.01, max=0.01)),
        "healthy": _webhook(httpserver),
    }
    with capture_logs() as logs, _dispatcher(configs, recorder) as d:
        d(_event())
        assert "hanging" not in {n for n, _, _, _ in recorder.results}  # emit did not wait for it
        deadline = time.monotonic() + 30
        while not httpserver.log and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(httpserver.log) == 1
        assert "hanging" not in {n for n, _, _, _ in recorder.results}  # delivered while it still waited
        assert d.flush(30)
    outcome = sorted((n, r) for n, _, r, _ in recorder.results)
    assert outcome == [("hanging", "failed"), ("healthy", "ok"), ("refused", "failed")]
    reasons = {f.notifier: f.reason for f in d.failures()}
    assert "refused" in reasons["refused"].lower()
    assert "timed out" in reasons["hanging"].lower()
    _assert_no_canary(*reasons.values(), *(repr(r[3]) for r in recorder.results), repr(logs))


def test_routing_and_event_filters(httpserver: HTTPServer, recorder: Recorder) -> None:
    """Each secret reaches only its routed notifiers, and an events filter keeps only chosen events."""
    httpserver.expect_request("/all").respond_with_data("")
    httpserver.expect_request("/failures").respond_with_data("")
    configs: dict[str, NotifierConfig] = {
        "all": WebhookConfig(type="webhook", url=httpserver.url_for("/all"), signing_secret=HOOK_SECRET),
        "failures": WebhookConfig(type="webhook", url=httpserver.url_for("/failures"),
                                  signing_secret=HOOK_SECRET, events=["rotation.failed", "key.revoked"]),
    }
    routes = {"a": ["all", "failures"], "b": ["failures"], "c": []}
    with Dispatcher(configs, lambda s: routes[s], on_result=recorder, policy=FAST) as d:
        for secret in ("a", "b", "c"):
            d(_event(EventType.SUCCEEDED, secret=secret))
            d(_event(EventType.FAILED, secret=secret))
    got = sorted((req.path, json.loads(req.get_data())["secret"], req.headers["X-Rotator-Event"])
                 for req, _ in httpserver.log)
    assert got == [("/all", "a", "rotation.failed"), ("/all", "a", "rotation.succeeded"),
                   ("/failures", "a", "rotation.failed"), ("/failures", "b", "rotation.failed")]
    assert len(recorder.results) == 4


def test_unknown_route_reported(recorder: Recorder) -> None:
    """A route naming a notifier that is not configured is reported as one failed delivery."""
    with Dispatcher({}, lambda s: ["ghost"], on_result=recorder, policy=FAST) as d:
        d(_event())
    ((name, _, result, exc),) = recorder.results
    assert (name, result) == ("ghost", "failed")
    assert "no such notifier" in str(exc)


def test_per_notifier_order_kept(httpserver: HTTPServer, recorder: Recorder) -> None:
    """Events reach one notifier in the order they were emitted."""
    httpserver.expect_request("/hook").respond_with_data("")
    kinds = [EventType.UPCOMING, EventType.SUCCEEDED, EventType.ROLLED_BACK, EventType.RETIRED,
             EventType.REVOKED]
    with _dispatcher({"billing": _webhook(httpserver)}, recorder) as d:
        for kind in kinds:
            d(_event(kind))
    assert [body["event"] for body in _bodies(httpserver)] == [str(k) for k in kinds]


def test_close_abandons_retries(closed_port: int, recorder: Recorder) -> None:
    """close() with a short timeout cuts a long backoff short and reports the delivery as failed once."""
    config = WebhookConfig(type="webhook", url=f"http://127.0.0.1:{closed_port}/hook",
                           signing_secret=HOOK_SECRET, retry=DeliveryPolicy(attempts=10, initial=30, max=30))
    d = Dispatcher({"hook": config}, lambda s: ["hook"], on_result=recorder)
    d(_event())
    d(_event(EventType.RETIRED))
    assert d.close(timeout=0.2) is False  # returns instead of sitting out 10 x 30 s of backoff
    assert [r for _, _, r, _ in recorder.results] == ["failed", "failed"]
    first, second = (f.reason for f in d.failures())
    assert "Connection refused" in first
    assert "gave up: the dispatcher was closed" in first
    assert "not delivered: the dispatcher was closed" in second


def test_result_handler_errors_are_contained(httpserver: HTTPServer) -> None:
    """An on_result handler that raises does not stop later deliveries."""
    httpserver.expect_request("/hook").respond_with_data("")
    calls: list[str] = []

    def broken(notifier: str, event: Event, result: str, exc: Exception | None) -> None:
        calls.append(result)
        raise RuntimeError("metrics down")

    with Dispatcher({"b": _webhook(httpserver)}, lambda s: ["b"], on_result=broken, policy=FAST) as d:
        d(_event())
        d(_event(EventType.RETIRED))
    assert calls == ["ok", "ok"]


def test_no_secret_value_in_messages(httpserver: HTTPServer, recorder: Recorder) -> None:
    """A SecretValue that strays into event details is redacted in Slack and webhook messages."""
    httpserver.expect_request(SLACK_PATH).respond_with_data("ok")
    httpserver.expect_request("/hook").respond_with_data("")
    configs: dict[str, NotifierConfig] = {"ops": _slack(httpserver.url_for(SLACK_PATH)),
                                          "billing": _webhook(httpserver)}
    with _dispatcher(configs, recorder) as d:
        d(_event(leaked=SecretValue(VALUE), window=timedelta(hours=2)))
    assert [r for _, _, r, _ in recorder.results] == ["ok", "ok"]
    for request, _ in httpserver.log:
        text = request.get_data(as_text=True)
        assert "**redacted**" in text
        _assert_no_canary(text)


def test_send_test_message(httpserver: HTTPServer, recorder: Recorder) -> None:
    """send_test posts a notification.test message, ignoring the events filter and on_result."""
    received: list[Request] = []

    def handler(request: Request) -> Response:
        received.append(request)
        return Response("ok")

    httpserver.expect_request(SLACK_PATH).respond_with_handler(handler)
    httpserver.expect_request("/hook").respond_with_handler(handler)
    configs: dict[str, NotifierConfig] = {"ops": _slack(httpserver.url_for(SLACK_PATH)),
                                          "billing": _webhook(httpserver, events=["rotation.failed"])}
    with _dispatcher(configs, recorder) as d:
        d.send_test("ops")
        d.send_test("billing")
        with pytest.raises(UsageError, match=r"unknown notifier 'nope'.*ops, billing"):
            d.send_test("nope")
    slack, hook = (json.loads(r.get_data()) for r in received)
    assert slack["blocks"][0]["text"]["text"].startswith(":test_tube: Test notification")
    assert hook["event"] == "notification.test"
    assert received[1].headers["X-Rotator-Event"] == "notification.test"
    verify(dict(received[1].headers), received[1].get_data(), HOOK_SECRET, replay_cache=ReplayCache())
    assert recorder.results == []


def test_send_test_failure_is_redacted(closed_port: int) -> None:
    """A failing test message raises DeliveryError without the hook URL."""
    config = _slack(f"http://127.0.0.1:{closed_port}{SLACK_PATH}", retry=FAST)
    with Dispatcher({"ops": config}, lambda s: []) as d, pytest.raises(DeliveryError) as info:
        d.send_test("ops")
    _assert_no_canary(str(info.value), repr(info.value))
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
