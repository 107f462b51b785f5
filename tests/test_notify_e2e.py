"""End to end: the real CLI and daemon in subprocesses, notifying a local Slack/webhook receiver and a local
SMTP server (STARTTLS + AUTH). Every event arrives once; nothing secret leaks (workspace canary scan)."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from pytest_httpserver import HTTPServer

from rotator.webhooks import ReplayCache, verify
from tests.conftest import Workspace
from tests.test_notify_email import PASSWORD, USER, Mailbox, free_port, make_tls

HOOK_SECRET = "whsec-E2E-canary-signing-5150"
SLACK_PATH = "/services/TE2E/BE2E/E2eCanaryHookToken9876"
RETRY = "{attempts: 3, initial: 0.05, max: 0.1}"
Pair = tuple[str, str]  # (secret, event)


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[tuple[Mailbox, int, Path]]:
    """An SMTP server requiring STARTTLS and AUTH: its mailbox, port and the CA file to trust."""
    context, ca_file = make_tls(tmp_path)
    box, port = Mailbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
                            authenticator=box.authenticate)
    controller.start()
    yield box, port, ca_file
    controller.stop()


@pytest.fixture
def ws(workspace: Workspace, httpserver: HTTPServer, mail: tuple[Mailbox, int, Path]) -> Workspace:
    """A workspace whose manifest notifies Slack, a signed webhook and email (failures/incidents only)."""
    _, port, ca_file = mail
    httpserver.expect_request(SLACK_PATH, method="POST").respond_with_data("ok")
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    workspace.env.update(
        SLACK_WEBHOOK_URL=httpserver.url_for(SLACK_PATH), HOOK_URL=httpserver.url_for("/hook"),
        HOOK_SECRET=HOOK_SECRET, SMTP_USER=USER, SMTP_PASSWORD=PASSWORD, NO_PROXY="127.0.0.1,localhost",
    )
    workspace.extra_values += [HOOK_SECRET, PASSWORD, SLACK_PATH, SLACK_PATH.rsplit("/", 1)[1]]
    flag = workspace.root / "verify-fails"
    workspace.write_manifest(f"""
        version: 1
        defaults: {{every: 30s, grace: 5s, notice: 28s, notify: [ops, billing, security]}}
        notifiers:
          ops: {{type: slack, webhook_url: "${{SLACK_WEBHOOK_URL}}", retry: {RETRY}}}
          billing: {{type: webhook, url: "${{HOOK_URL}}", signing_secret: "${{HOOK_SECRET}}", retry: {RETRY}}}
          security: {{type: email, host: 127.0.0.1, port: {port}, ca_file: "{ca_file}", from: rotator@example.com,
                     to: [security@example.com, oncall@example.com], username: "${{SMTP_USER}}",
                     password: "${{SMTP_PASSWORD}}", retry: {RETRY},
                     events: [rotation.failed, rotation.rolled_back, key.revoked]}}
        secrets:
          - {{name: app/hmac, kind: hmac}}
          - {{name: app/guarded, kind: hmac, verify: {{command: ["/bin/sh", "-c", "test ! -e {flag}"]}}}}
    """)
    return workspace


def _hook_events(httpserver: HTTPServer) -> list[Pair]:
    """Webhook deliveries as (secret, event), each checked with the shipped verify()."""
    cache = ReplayCache()
    pairs = []
    for request, _ in httpserver.log:
        if request.path == "/hook":
            payload = verify(dict(request.headers), request.get_data(), HOOK_SECRET, replay_cache=cache)
            pairs.append((payload["secret"], payload["event"]))
    return pairs


def _slack_events(httpserver: HTTPServer) -> list[Pair]:
    pairs = []
    for request, _ in httpserver.log:
        if request.path == SLACK_PATH:
            body: dict[str, Any] = json.loads(request.get_data())
            fields = dict(f["text"].split("\n", 1) for block in body["attachments"][0]["blocks"]
                          for f in block.get("fields", []))
            pairs.append((fields["*Secret*"], fields["*Event*"]))
    return pairs


def _mail_events(box: Mailbox) -> list[Pair]:
    return [(msg["Subject"].rsplit(": ", 1)[1], msg["X-Rotator-Event"]) for _, msg, _ in box.messages]


def _all_text(httpserver: HTTPServer, box: Mailbox) -> str:
    return "\n".join([*(f"{dict(r.headers)} {r.get_data(as_text=True)}" for r, _ in httpserver.log),
                      *(msg.as_string() for _, msg, _ in box.messages)])


def _no_canary(ws: Workspace, *texts: str) -> None:
    for text in texts:
        for canary in ws.extra_values:
            assert canary not in text


def test_cli_lifecycle_events_arrive_once(ws: Workspace, httpserver: HTTPServer,
                                          mail: tuple[Mailbox, int, Path]) -> None:
    """Create, notice, rotate, rollback, revoke and a failed verify each reach every routed notifier once."""
    box = mail[0]
    assert ws.cli("run").code == 0
    time.sleep(2.5)  # into the 28s notice window of a 30s schedule
    first, second = ws.cli("run"), ws.cli("run")
    assert first.code == 0, first.err
    assert "noticed" in first.out
    assert second.code == 0
    assert "noticed" not in second.out  # the notice is recorded in the backend: not sent twice
    assert ws.cli("rotate", "--now", "app/hmac", "--reason", "scheduled").code == 0
    assert ws.cli("rollback", "app/hmac", "--reason", "clients broke").code == 0
    revoke = ws.cli("rotate", "--now", "--revoke-previous", "app/hmac", "--reason", "leaked")
    assert revoke.code == 0, revoke.err
    (ws.root / "verify-fails").touch()
    failed = ws.cli("rotate", "--now", "app/guarded")
    assert failed.code == 1

    everything = Counter({
        ("app/hmac", "rotation.succeeded"): 3, ("app/guarded", "rotation.succeeded"): 1,
        ("app/hmac", "rotation.upcoming"): 1, ("app/guarded", "rotation.upcoming"): 1,
        ("app/hmac", "rotation.rolled_back"): 1, ("app/hmac", "key.revoked"): 1,
        ("app/guarded", "rotation.failed"): 1,
    })
    hook = Counter(_hook_events(httpserver))
    assert hook == everything
    assert Counter(_slack_events(httpserver)) == hook
    assert Counter(_mail_events(box)) == Counter({("app/hmac", "rotation.rolled_back"): 1,
                                                  ("app/hmac", "key.revoked"): 1,
                                                  ("app/guarded", "rotation.failed"): 1})
    assert all(encrypted for _, _, encrypted in box.messages)
    assert {login for login, ok in box.logins if ok} == {USER.encode()}
    _no_canary(ws, _all_text(httpserver, box))


def test_down_notifier_warns_but_run_succeeds(ws: Workspace, httpserver: HTTPServer) -> None:
    """A notifier that is down leaves the rotation done, exit 0, one warning and one audit record each."""
    port = free_port()
    ws.env["HOOK_URL"] = f"http://127.0.0.1:{port}/hook"
    result = ws.cli("run")
    assert result.code == 0, result.err
    assert "2 created" in result.out
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: notification")]
    assert len(warnings) == 2  # one per failed delivery: billing x 2 secrets
    assert all("'billing'" in line and "refused" in line for line in warnings)
    records = [json.loads(line) for line in (ws.root / "audit.jsonl").read_text().splitlines()]
    outcome = Counter((r["notifier"], r["result"]) for r in records if r.get("type") == "notification")
    assert outcome == Counter({("billing", "failed"): 2, ("ops", "ok"): 2})
    assert len(_slack_events(httpserver)) == 2


def test_notify_test_command(ws: Workspace, httpserver: HTTPServer, mail: tuple[Mailbox, int, Path]) -> None:
    """`rotator notify test` delivers a test message per notifier and fails with exit 1 when it cannot."""
    for name in ("ops", "billing", "security"):
        result = ws.cli("notify", "test", name)
        assert result.code == 0, result.err
    assert _hook_events(httpserver) == [("rotator/notify-test", "notification.test")]
    assert _slack_events(httpserver) == [("rotator/notify-test", "notification.test")]
    assert _mail_events(mail[0]) == [("rotator/notify-test", "notification.test")]
    ws.env["SLACK_WEBHOOK_URL"] = f"http://127.0.0.1:{free_port()}{SLACK_PATH}"
    down = ws.cli("notify", "test", "ops")
    assert down.code == 1
    assert "refused" in down.err
    assert ws.cli("notify", "test", "nope").code == 2


def _wait(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def _daemon(ws: Workspace, httpserver: HTTPServer, until: Any, settle: float) -> None:
    proc = ws.spawn("daemon", "--metrics-port", str(free_port()), "--reconcile-every", "1s")
    try:
        assert _wait(until, 20), "the daemon did not deliver in time"
        time.sleep(settle)  # further reconcile passes must not repeat anything
    finally:
        proc.send_signal(signal.SIGTERM)
        ws.collect(proc)
    assert proc.returncode == 0


@pytest.mark.slow
def test_daemon_notice_once_across_restarts(ws: Workspace, httpserver: HTTPServer) -> None:
    """The daemon creates, announces once, and neither a restart nor a CronJob run announces again."""
    def count(event: str) -> int:
        return sum(1 for _, e in _hook_events(httpserver) if e == event)

    _daemon(ws, httpserver, until=lambda: count("rotation.upcoming") >= 2, settle=2.5)
    assert count("rotation.succeeded") == 2
    assert count("rotation.upcoming") == 2
    _daemon(ws, httpserver, until=lambda: True, settle=2.5)
    assert ws.cli("run").code == 0
    assert Counter(_hook_events(httpserver)) == Counter({
        ("app/hmac", "rotation.succeeded"): 1, ("app/guarded", "rotation.succeeded"): 1,
        ("app/hmac", "rotation.upcoming"): 1, ("app/guarded", "rotation.upcoming"): 1,
    })
    assert Counter(_slack_events(httpserver)) == Counter(_hook_events(httpserver))
