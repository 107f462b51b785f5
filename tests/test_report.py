"""`rotator report`: status rules (unit) and the evidence it prints for a scripted history made through the
real CLI on the local store (rotations, a rollback, an incident revocation, an overdue secret, a failed
rotation, notifications). The module's workspace is canary-scanned when the module ends."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rotator.keyset import Keyset, KeyVersion, State
from rotator.manifest import SecretPolicy, parse_manifest
from rotator.report import (
    AuditCheck,
    Report,
    assess,
    parse_since,
    render,
)
from tests.conftest import REPO, Result, Workspace

pytestmark = pytest.mark.xdist_group("report")  # one worker builds the scripted history once

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
HOOK_SECRET = "report-test-signing-secret-0123"
UNIT_MANIFEST = """
version: 1
defaults: {every: 90d, grace: 7d, notice: [14d, 1d]}
secrets:
  - {name: plain, kind: hmac}
  - {name: weekly, kind: hmac, cron: "0 3 * * MON", window: 2h, grace: 1d, notice: 1d}
  - {name: paused, kind: hmac, enabled: false}
"""
HISTORY_MANIFEST = """
version: 1
defaults: {{every: 90d, grace: 7d, notice: [14d, 1d]}}
providers: {{local: {{type: local, path: store.db}}}}
notifiers:
  ok: {{type: webhook, url: "http://127.0.0.1:{port}/hook", signing_secret: "{hook}"}}
  dead: {{type: webhook, url: "http://127.0.0.1:1/hook", signing_secret: "{hook}", timeout: 1s,
         retry: {{attempts: 1}}}}
secrets:
  - {{name: api/partner, kind: api_key, prefix: "rtr_test_", notify: [ok, dead]}}
  - {{name: hmac/webhook, kind: hmac, consumers: [gateway]}}
  - {{name: db/password, kind: password, length: 24, every: 2s, grace: 1s, notice: 1s}}
  - {{name: soon/key, kind: hmac, every: 1h, grace: 1m, notice: 59m59s}}
  - {{name: flaky/key, kind: hmac, verify: {{command: ["sh", "-c", "test ! -e flaky.fail"]}}}}
"""


# --- unit: the status rules ------------------------------------------------------------------------------


def _policies() -> dict[str, SecretPolicy]:
    return parse_manifest(UNIT_MANIFEST, Path("rotation.yaml"), env={}).secrets


def _keyset(rotated: datetime, **meta: Any) -> Keyset:
    current = KeyVersion(id="v1", state=State.CURRENT, created_at=rotated, promoted_at=rotated)
    return Keyset(name="x", revision="1", versions=(current,), meta=meta)


def test_fresh_secret_is_compliant() -> None:
    """A value rotated a day ago under a 90d policy is compliant, due in 89d, not overdue."""
    report = assess(_policies()["plain"], _keyset(NOW - timedelta(days=1)), NOW)
    assert (report.status, report.overdue, report.age) == ("compliant", False, timedelta(days=1))
    assert report.due_at == NOW + timedelta(days=89)


def test_inside_longest_notice_is_due_soon() -> None:
    """Inside the longest notice lead (14d) before the due date the status is due_soon."""
    policy = _policies()["plain"]
    assert assess(policy, _keyset(NOW - timedelta(days=76, hours=1)), NOW).status == "due_soon"
    assert assess(policy, _keyset(NOW - timedelta(days=75, hours=23)), NOW).status == "compliant"


def test_past_interval_is_overdue() -> None:
    """At or past last rotation + interval the secret is overdue, with how long in the detail."""
    report = assess(_policies()["plain"], _keyset(NOW - timedelta(days=91)), NOW)
    assert (report.status, report.overdue) == ("overdue", True)
    assert "overdue by 1d" in report.detail


def test_cron_is_overdue_only_after_its_window() -> None:
    """A cron secret is due_soon inside the window of its first fire time and overdue once it closed."""
    policy = _policies()["weekly"]  # Mondays 03:00 + 2h; 2025-06-02 is a Monday
    rotated = datetime(2025, 5, 27, 10, 0, tzinfo=UTC)
    inside = assess(policy, _keyset(rotated), datetime(2025, 6, 2, 4, 0, tzinfo=UTC))
    after = assess(policy, _keyset(rotated), datetime(2025, 6, 2, 5, 1, tzinfo=UTC))
    assert (inside.status, inside.overdue) == ("due_soon", False)
    assert (after.status, after.overdue) == ("overdue", True)


def test_failed_attempt_wins_over_schedule_status() -> None:
    """Keyset bookkeeping of a failed attempt makes the status failed and keeps the overdue flag."""
    keyset = _keyset(NOW - timedelta(days=100), failures=2, last_failure="verify failed: hook exited 1",
                     last_failure_at=NOW.isoformat())
    report = assess(_policies()["plain"], keyset, NOW)
    assert (report.status, report.overdue, report.failures) == ("failed", True, 2)
    assert "verify failed" in report.detail
    assert "overdue" in report.detail


def test_missing_unmanaged_and_paused() -> None:
    """No keyset is missing, a foreign value is unmanaged, and a paused secret still gets an age status."""
    policies = _policies()
    assert assess(policies["plain"], None, NOW).status == "missing"
    foreign = _keyset(NOW).replace(managed=False)
    assert assess(policies["plain"], foreign, NOW).status == "unmanaged"
    paused = assess(policies["paused"], _keyset(NOW - timedelta(days=200)), NOW)
    assert paused.status == "overdue"
    assert "paused" in paused.detail


def test_since_accepts_durations_and_dates() -> None:
    """--since takes 90d back from now or an ISO date (UTC when naive); anything else is a usage error."""
    from rotator.errors import UsageError

    assert parse_since("90d", NOW) == NOW - timedelta(days=90)
    assert parse_since("2025-01-01", NOW) == datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(UsageError, match="--since"):
        parse_since("last quarter", NOW)


def test_markdown_cells_cannot_break_the_table() -> None:
    """Pipes, newlines and HTML in free text (reasons, names) are escaped in Markdown table cells."""
    secret = assess(_policies()["plain"], _keyset(NOW - timedelta(days=1)), NOW)
    secret.detail = "a | b\n<img src=x>"
    report = Report(NOW, NOW - timedelta(days=90), Path("rotation.yaml"), [secret],
                    AuditCheck(Path("audit.jsonl"), True, 3, "ab" * 32))
    text = render(report, "md")
    row = next(line for line in text.splitlines() if line.startswith("| plain |"))
    assert "a \\| b &lt;img src=x&gt;" in row
    assert row.count(" | ") == 10  # 11 columns, none added by the detail


# --- the scripted history ----------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@dataclass
class History:
    """The workspace after the scripted history, and every report taken of it."""

    ws: Workspace
    steps: dict[str, Result] = field(default_factory=dict)
    reports: dict[str, Result] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)

    def secret(self, name: str, which: str = "json") -> dict[str, Any]:
        data = self.reports[which].json()
        return next(s for s in data["secrets"] if s["secret"] == name)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Create five secrets, rotate, roll back, revoke, fail a rotation, wait for one to be overdue, report."""
    root = tmp_path_factory.mktemp("report")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "VAULT_", "AWS_"))}
    env.update(PYTHONPATH=str(REPO), ROTATOR_AUDIT_LOG=str(root / "audit.jsonl"), COLUMNS="200")
    ws = Workspace(root, env, extra_values=[HOOK_SECRET])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ws.write_manifest(HISTORY_MANIFEST.format(port=server.server_address[1], hook=HOOK_SECRET))
        h = History(ws)
        h.steps["run"] = ws.cli("run")
        h.steps["rotate"] = ws.cli("rotate", "--now", "api/partner", "--reason", "quarterly | <b>rotation</b>",
                                   env={"ROTATOR_ACTOR": "alice"})
        h.steps["rollback"] = ws.cli("rollback", "api/partner", "--reason", "consumer broke",
                                     env={"ROTATOR_ACTOR": "bob"})
        h.steps["revoke"] = ws.cli("rotate", "--now", "--revoke-previous", "hmac/webhook", "--reason",
                                   "INC-42 key leaked", env={"ROTATOR_ACTOR": "INC-42"})
        (ws.root / "flaky.fail").touch()  # the verify hook passed the first value; it refuses the next
        h.steps["fail"] = ws.cli("rotate", "--now", "flaky/key")
        time.sleep(2.2)  # db/password (every 2s) is now overdue, and every event is older than 1s
        for fmt in ("json", "md", "html"):
            h.reports[fmt] = ws.cli("report", "--format", fmt)
        h.reports["recent"] = ws.cli("report", "--format", "json", "--since", "1s")
        wrong_key = base64.b64encode(bytes(32)).decode()
        h.reports["wrong_key"] = ws.cli("report", "--format", "json", env={"ROTATOR_MASTER_KEY": wrong_key})
        h.reports["file"] = ws.cli("report", "--format", "html", "--out", "evidence.html")
        h.files["evidence.html"] = (root / "evidence.html").read_text()
        ws.outputs += list(h.files.values())
        yield h
    finally:
        server.shutdown()
        server.server_close()
    ws.scan()


def test_history_steps_behaved(history: History) -> None:
    """The scripted steps did what the scenario needs: all worked except the failing verify hook."""
    codes = {name: result.code for name, result in history.steps.items()}
    assert codes == {"run": 0, "rotate": 0, "rollback": 0, "revoke": 0, "fail": 1}, history.steps["fail"].err


def test_report_exits_1_for_the_overdue_secret(history: History) -> None:
    """Every format exits 1 because db/password is overdue; the JSON summary counts each status."""
    assert {fmt: history.reports[fmt].code for fmt in ("json", "md", "html")} == {"json": 1, "md": 1, "html": 1}
    data = history.reports["json"].json()
    assert data["exit_code"] == 1
    assert data["summary"]["statuses"] == {"compliant": 2, "due_soon": 1, "overdue": 1, "failed": 1,
                                           "unknown": 0, "missing": 0, "unmanaged": 0}


def test_statuses_per_secret(history: History) -> None:
    """Each secret gets the status its history implies, with its policy in the report."""
    statuses = {s["secret"]: s["status"] for s in history.reports["json"].json()["secrets"]}
    assert statuses == {"api/partner": "compliant", "hmac/webhook": "compliant", "db/password": "overdue",
                        "soon/key": "due_soon", "flaky/key": "failed"}
    overdue = history.secret("db/password")
    assert overdue["overdue"] is True
    assert overdue["age_seconds"] >= 2
    assert overdue["policy"]["every_seconds"] == 2
    assert overdue["policy"]["notice_seconds"] == [1]
    flaky = history.secret("flaky/key")
    assert (flaky["failed"], flaky["overdue"], flaky["failures"]) == (True, False, 1)
    assert "verify failed" in flaky["last_failure"]
    assert history.secret("api/partner")["policy"] == {
        "schedule": "every 90d", "every_seconds": 90 * 86400, "cron": None, "window_seconds": None,
        "interval_seconds": 90 * 86400, "grace_seconds": 7 * 86400, "notice_seconds": [14 * 86400, 86400],
        "rollback_window_seconds": 86400}


def test_rotations_and_rollbacks_carry_actor_and_reason(history: History) -> None:
    """api/partner lists its creation, alice's rotation and bob's rollback, with their reasons."""
    partner = history.secret("api/partner")
    rows = [(a["event"], a["actor"], a["reason"], a["initial"]) for a in partner["activity"]]
    assert rows == [("rotation.succeeded", "cronjob", "initial value", True),
                    ("rotation.succeeded", "alice", "quarterly | <b>rotation</b>", False),
                    ("rotation.rolled_back", "bob", "consumer broke", False)]
    rolled_back = partner["activity"][2]
    assert partner["current_version"] == rolled_back["new_version"] == partner["activity"][0]["new_version"]
    assert partner["counts"] == {"created": 1, "rotations": 1, "rollbacks": 1, "revocations": 0, "failures": 0,
                                 "retirements": 0, "notices": 0}


def test_incident_revocation_and_failure_are_listed(history: History) -> None:
    """The revocation shows as key.revoked with the incident reason; the failed attempt as rotation.failed."""
    revoked = history.secret("hmac/webhook")
    assert [(a["event"], a["actor"]) for a in revoked["activity"]][-1] == ("key.revoked", "INC-42")
    assert revoked["activity"][-1]["reason"] == "INC-42 key leaked"
    assert revoked["counts"]["revocations"] == 1
    failed = history.secret("flaky/key")["activity"][-1]
    assert failed["event"] == "rotation.failed"
    assert "verify failed" in failed["reason"]


def test_notifications_are_counted(history: History) -> None:
    """Deliveries about api/partner are counted: three to the live receiver, three to the dead one."""
    assert history.secret("api/partner")["notifications"] == {"ok": 3, "failed": 3}
    assert history.secret("db/password")["notifications"] == {"ok": 0, "failed": 0}


def test_audit_chain_result_and_head(history: History) -> None:
    """The report verifies the audit chain and quotes its head: the hash of the log's last record."""
    audit = history.reports["json"].json()["audit"]
    last = json.loads((history.ws.root / "audit.jsonl").read_text().splitlines()[-1])
    assert audit["ok"] is True
    assert audit["head"] == last["hash"]
    assert audit["records"] == last["seq"]


def test_since_limits_the_activity(history: History) -> None:
    """--since 1s leaves out everything that happened before the pause; statuses do not change."""
    data = history.reports["recent"].json()
    assert [s["activity"] for s in data["secrets"]] == [[]] * 5
    assert all(s["counts"]["created"] == 0 for s in data["secrets"])
    assert data["summary"]["statuses"]["overdue"] == 1


def test_markdown_renders_tables(history: History) -> None:
    """The Markdown report has GitHub tables: the secrets, the audit check with the head, the activity."""
    text = history.reports["md"].out
    head = history.reports["json"].json()["audit"]["head"]
    assert text.startswith("# Key rotation compliance report\n")
    assert "| secret | provider | kind | schedule | grace | notice | last rotation | age | due | status |" in text
    assert re.search(r"^\| db/password \| local \| password \| every 2s \| 1s \| 1s \|.*\| overdue \|", text, re.M)
    assert re.search(r"^\| flaky/key \|.*\| failed \|", text, re.M)
    assert f"| chain head (SHA-256) | {head} |" in text
    assert "| rolled back | bob | consumer broke |" in text
    assert "quarterly \\| &lt;b&gt;rotation&lt;/b&gt;" in text
    assert "NOT COMPLIANT: 1 overdue, 1 failed, 1 due soon (exit 1)" in text


def test_backend_error_marks_unknown_and_exits_4(history: History) -> None:
    """With the wrong master key the report still renders, every secret unknown (backend error), exit 4."""
    result = history.reports["wrong_key"]
    assert result.code == 4, result.err
    secrets = result.json()["secrets"]
    assert {s["status"] for s in secrets} == {"unknown"}
    assert all(s["backend_error"] and "wrong master key" in s["detail"] for s in secrets)


def test_out_writes_the_file(history: History) -> None:
    """--out writes the report to the file, prints nothing on stdout, and one summary line on stderr."""
    result = history.reports["file"]
    assert (result.code, result.out) == (1, "")
    assert "report written to evidence.html: 5 secrets, 1 overdue, 1 failed, audit chain OK" in result.err
    assert history.files["evidence.html"].startswith("<!DOCTYPE html>")


def test_html_from_the_cli_is_self_contained(history: History) -> None:
    """The HTML report from the CLI holds the secrets table and the chart and loads nothing from outside."""
    from tests.test_report_html import check_self_contained, parse

    page = parse(history.reports["html"].out)
    check_self_contained(page)
    table = page.tables["secrets"]
    assert [row[0] for row in table[1:]] == ["api/partner", "hmac/webhook", "db/password", "soon/key", "flaky/key"]
    assert [row[9] for row in table[1:]] == ["compliant", "compliant", "overdue", "due soon", "failed"]
    assert page.svg_rects >= 10  # a background and an age bar per secret


# --- exit 0 and a broken chain -------------------------------------------------------------------------------


def test_compliant_store_exits_0_then_tampering_exits_1(workspace: Workspace) -> None:
    """All secrets within policy and an intact chain exit 0; an edited audit line makes the report exit 1."""
    workspace.write_manifest("""
        version: 1
        secrets:
          - {name: one, kind: hmac}
        """)
    assert workspace.cli("run").code == 0
    clean = workspace.cli("report", "--format", "json")
    assert clean.code == 0, clean.err
    assert clean.json()["audit"]["ok"] is True
    assert clean.json()["secrets"][0]["status"] == "compliant"
    log = workspace.root / "audit.jsonl"
    log.write_text(log.read_text().replace('"initial value"', '"edited value"', 1))
    broken = workspace.cli("report")
    assert broken.code == 1
    assert "| result | BROKEN |" in broken.out
    assert "audit.jsonl:1: content does not match its hash" in broken.out
