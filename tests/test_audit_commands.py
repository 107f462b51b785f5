"""`rotator audit verify` and `rotator audit rotate-key` through the real CLI (subprocesses on a local store):
the printed head, each attack of the compliance issue reproduced on the files and detected with exit 1 and
one line, `--expect-head`, key rotation, notification results and steps reaching the log through the bus, a
syslog copy of every record, and exit 4 when the key backend is down. Every test ends with the canary scan,
which also looks for each audit key."""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator._audit_chain import encode
from tests.conftest import Workspace

MANIFEST = """
version: 1
defaults: {every: 90d, grace: 7d, notice: 14d}
secrets:
  - {name: api, kind: api_key, prefix: "k_"}
  - {name: hook, kind: hmac, bytes: 32}
"""


@pytest.fixture
def ws(workspace: Workspace) -> Iterator[Workspace]:
    """A workspace with two secrets, created; at the end every audit key joins the canary scan."""
    workspace.write_manifest(MANIFEST)
    assert workspace.cli("run").code == 0
    yield workspace
    for value in workspace.store_values():
        if value.startswith('{"v":1,"keys"'):
            workspace.extra_values += [key for _, key, _ in json.loads(value)["keys"]]


def _log(ws: Workspace) -> Path:
    return ws.root / "audit.jsonl"


def _records(ws: Workspace) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _log(ws).read_text().splitlines()]


def _head(result: Any) -> str:
    assert result.code == 0, result.err
    return str(result.out.strip().rsplit(" ", 1)[-1])


def test_verify_prints_a_keyed_head(ws: Workspace) -> None:
    """A clean log verifies (exit 0) with its keyed checks listed and the head SEQ:HASH as the last word."""
    result = ws.cli("audit", "verify")
    records = _records(ws)
    assert _head(result) == f"{records[-1]['seq']}:{records[-1]['hash']}"
    assert "keyed, checked checkpoint, backend anchor" in result.out
    as_json = ws.cli("audit", "verify", "-o", "json").json()
    assert as_json["ok"] is True
    assert as_json["logs"][0]["checked"] == ["checkpoint", "backend anchor"]
    assert all("kid" in r and "log" in r for r in records)


def test_a_folder_verifies_every_log_in_it(ws: Workspace) -> None:
    """`audit verify DIR` (the weekly CronJob) checks each *.jsonl there; one broken log fails the run."""
    other = ws.root / "audit-other.jsonl"
    ws.cli("rotate", "--now", "api", env={"ROTATOR_AUDIT_LOG": str(other)})
    result = ws.cli("audit", "verify", str(ws.root))
    assert result.code == 0, result.err
    assert result.out.count(": OK: ") == 2
    other.write_text("".join(other.read_text().splitlines(keepends=True)[:-1]))
    result = ws.cli("audit", "verify", str(ws.root))
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "audit-other.jsonl" in result.err


def test_truncated_tail_is_one_line_exit_1(ws: Workspace) -> None:
    """Deleting the last records (the reported attack) now fails with one line naming the missing tail."""
    ws.cli("rotate", "--now", "--all")
    lines = _log(ws).read_text().splitlines(keepends=True)
    _log(ws).write_text("".join(lines[:-2]))
    result = ws.cli("audit", "verify")
    assert result.code == 1
    assert result.err.count("\n") == 1
    assert "2 record(s) missing from the end" in result.err


def test_rewrite_with_recomputed_sha256_is_exit_1(ws: Workspace) -> None:
    """Editing a record and recomputing plain SHA-256 hashes for the whole log (the reported attack) fails."""
    records = _records(ws)
    records[0]["secret"] = "someone-else"
    prev, out = records[0]["prev"], []
    for record in records:
        body = {k: v for k, v in record.items() if k not in ("hash", "kid", "log")} | {"prev": prev}
        prev = hashlib.sha256(encode(body)).hexdigest()
        out.append(encode({**body, "hash": prev}))
    _log(ws).write_bytes(b"\n".join(out) + b"\n")
    result = ws.cli("audit", "verify")
    assert result.code == 1
    assert "no keyed record" in result.err or "checkpoint exists" in result.err


def test_expect_head(ws: Workspace) -> None:
    """A head stored by last week's job passes while the log grows and fails once the log is cut below it."""
    head = _head(ws.cli("audit", "verify"))
    ws.cli("rotate", "--now", "api")
    assert ws.cli("audit", "verify", "--expect-head", head).code == 0
    seq = int(head.split(":")[0])
    lines = _log(ws).read_text().splitlines(keepends=True)
    _log(ws).write_text("".join(lines[: seq - 1]))
    (ws.root / "audit.jsonl.head").unlink()  # the attacker also removes the checkpoint
    result = ws.cli("audit", "verify", "--expect-head", head)
    assert result.code == 1
    assert "missing" in result.err
    bad = ws.cli("audit", "verify", "--expect-head", "12:nothex")
    assert bad.code == 2
    assert "SEQ:HASH" in bad.err


def test_rotate_key(ws: Workspace) -> None:
    """After rotate-key the rotation record and later records use the new key; old records still verify."""
    old_kid = _records(ws)[-1]["kid"]
    result = ws.cli("audit", "rotate-key")
    assert result.code == 0, result.err
    ws.cli("rotate", "--now", "hook")
    records = _records(ws)
    rotated = next(i for i, r in enumerate(records) if r.get("step") == "audit.key_rotated")
    new_kid = records[rotated]["kid"]
    assert new_kid != old_kid
    assert records[rotated]["previous_kid"] == old_kid
    assert {r["kid"] for r in records[:rotated]} == {old_kid}
    assert {r["kid"] for r in records[rotated:]} == {new_kid}
    assert ws.cli("audit", "verify").code == 0


def test_notification_results_and_steps_come_through_the_bus(ws: Workspace) -> None:
    """A failed delivery and a discarded step are audit records written by the one bus subscriber."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ws.write_manifest(MANIFEST.replace("defaults: {", "defaults: {notify: [hook], ") + f"""
notifiers:
  hook: {{type: webhook, url: "http://127.0.0.1:{port}/x", signing_secret: "s3cr3t-signing-value",
         retry: {{attempts: 1}}}}
""")
    result = ws.cli("rotate", "--now", "api")
    assert result.code == 0, result.err
    notes = [r for r in _records(ws) if r["type"] == "notification"]
    assert [(n["notifier"], n["event"], n["result"]) for n in notes] == [("hook", "rotation.succeeded", "failed")]
    assert "kid" in notes[0]
    assert ws.cli("audit", "verify").code == 0
    ws.extra_values.append("s3cr3t-signing-value")


@pytest.fixture
def syslog() -> Iterator[tuple[int, list[bytes]]]:
    """A UDP syslog receiver on 127.0.0.1."""
    got: list[bytes] = []

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            got.append(self.request[0])

    with socketserver.UDPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        yield server.server_address[1], got
        server.shutdown()


def test_records_are_copied_to_syslog(ws: Workspace, syslog: tuple[int, list[bytes]]) -> None:
    """With ROTATOR_AUDIT_SINK every record of a run also reaches the syslog receiver, byte for byte."""
    port, got = syslog
    before = len(_records(ws))
    result = ws.cli("rotate", "--now", "--all", env={"ROTATOR_AUDIT_SINK": f"udp://127.0.0.1:{port}"})
    assert result.code == 0, result.err
    new = _log(ws).read_bytes().splitlines()[before:]
    for _ in range(200):
        if len(got) >= len(new):
            break
        threading.Event().wait(0.05)
    assert [m.split(b" audit - ", 1)[1] for m in got] == new


def test_key_backend_down_is_exit_4(workspace: Workspace) -> None:
    """When the audit key's backend cannot be reached, verify exits 4 with one line."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace.write_manifest(f"""
version: 1
providers:
  vault: {{type: vault, url: "http://127.0.0.1:{port}", mount: secret, auth: {{method: token}}}}
defaults: {{provider: vault}}
""")
    (workspace.root / "audit.jsonl").write_text("")
    result = workspace.cli("audit", "verify", env={"VAULT_TOKEN": "test-token-not-secret"})
    assert result.code == 4, result.err
    assert result.err.count("\n") == 1
