"""The real `rotator` CLI in subprocesses on a temporary local store: the whole lifecycle, incidents,
bad input, and the exit-code contract. Every test ends with the canary scan (see conftest)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Workspace

MANIFEST = """
version: 1
defaults: {every: 90d, grace: 7d, notice: 14d, rollback_window: 24h}
secrets:
  - name: partner-api-key
    kind: api_key
    prefix: "rtr_test_"
    consumers: [partner-gateway, billing-worker]
  - {name: webhook-hmac, kind: hmac, bytes: 32, labels: {team: payments}}
  - {name: jwt, kind: ed25519, labels: {team: identity}}
  - {name: db-password, kind: password, length: 24, exclude: "O0Il1"}
"""


def _audit(ws: Workspace) -> list[dict[str, object]]:
    path = ws.root / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _versions(ws: Workspace, name: str) -> list[dict[str, str]]:
    result = ws.cli("status", name, "-o", "json")
    assert result.code == 0, result.err
    return result.json()["secrets"][0]["versions"]  # type: ignore[no-any-return]


def test_first_run_creates_every_secret(workspace: Workspace) -> None:
    """`run` on an empty store creates one current value per secret and exits 0."""
    workspace.write_manifest(MANIFEST)
    result = workspace.cli("run")
    assert result.code == 0, result.err
    assert "4 secrets: 4 created" in result.out
    status = workspace.cli("status", "-o", "json").json()
    assert {s["secret"]: [v["state"] for v in s["versions"]] for s in status["secrets"]} == {
        "partner-api-key": ["current"], "webhook-hmac": ["current"], "jwt": ["current"],
        "db-password": ["current"]}
    assert workspace.cli("run").out.strip().endswith("4 secrets: 4 none")
    assert (workspace.root / ".rotator" / "store.db").stat().st_mode & 0o777 == 0o600


def test_rotate_now_keeps_previous_for_grace(workspace: Workspace) -> None:
    """`rotate --now` makes a new current and keeps the old one as previous with a grace deadline."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    result = workspace.cli("rotate", "--now", "webhook-hmac", "--reason", "scheduled test")
    assert result.code == 0, result.err
    states = [v["state"] for v in _versions(workspace, "webhook-hmac")]
    assert sorted(states) == ["current", "previous"]
    previous = next(v for v in _versions(workspace, "webhook-hmac") if v["state"] == "previous")
    assert previous["expires_at"]
    events = [r["event"] for r in _audit(workspace) if r.get("type") == "event"]
    assert events.count("rotation.succeeded") == 5


def test_rotate_without_now_only_rotates_due(workspace: Workspace) -> None:
    """Plain `rotate` leaves a secret that is not due alone."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    result = workspace.cli("rotate", "jwt")
    assert result.code == 0
    assert "jwt: none" in result.out


def test_grace_then_retire_then_rollback_window(workspace: Workspace) -> None:
    """With short durations: previous is retired after grace, and rollback still works in the window."""
    workspace.write_manifest("""
        version: 1
        defaults: {every: 1h, grace: 2s, notice: 1m, rollback_window: 1h}
        secrets:
          - {name: s, kind: hmac}
    """)
    workspace.cli("run")
    workspace.cli("rotate", "--now", "s")
    time.sleep(2.2)
    result = workspace.cli("run")
    assert "s: retired" in result.out, result.out
    assert [v["state"] for v in _versions(workspace, "s")].count("retired") == 1
    rollback = workspace.cli("rollback", "s", "--reason", "clients broke")
    assert rollback.code == 0, rollback.err
    assert "rolled_back" in rollback.out


def test_rollback_and_retire_commands(workspace: Workspace) -> None:
    """`rollback` restores the previous value and is a no-op when repeated; `retire` with nothing in grace is
    a no-op with exit 0, so scripts may run either twice."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    before = next(v["id"] for v in _versions(workspace, "jwt") if v["state"] == "current")
    workspace.cli("rotate", "--now", "jwt")
    assert workspace.cli("rollback", "jwt").code == 0
    after = next(v["id"] for v in _versions(workspace, "jwt") if v["state"] == "current")
    assert after == before
    again = workspace.cli("rollback", "jwt")
    assert again.code == 0, again.err
    assert f"jwt: none - already rolled back: {before[:8]} is current" in again.out
    assert next(v["id"] for v in _versions(workspace, "jwt") if v["state"] == "current") == before
    result = workspace.cli("retire", "jwt")
    assert result.code == 0, result.err
    assert "jwt: none - nothing in grace to retire" in result.out
    workspace.cli("rotate", "--now", "jwt")
    assert workspace.cli("retire", "jwt").code == 0
    assert "previous" not in [v["state"] for v in _versions(workspace, "jwt")]


def test_incident_revoke_previous_lists_consumers(workspace: Workspace) -> None:
    """`rotate --now --revoke-previous` revokes the old key at once (terminal) and names who will break."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    result = workspace.cli("rotate", "--now", "--revoke-previous", "partner-api-key", "--reason", "leaked")
    assert result.code == 0, result.err
    assert "partner-gateway, billing-worker" in result.out
    states = [v["state"] for v in _versions(workspace, "partner-api-key")]
    assert sorted(states) == ["current", "revoked"]
    revoked = [r for r in _audit(workspace) if r.get("event") == "key.revoked"]
    assert len(revoked) == 1
    assert revoked[0]["reason"] == "leaked"


def test_selector_and_all_with_json_output(workspace: Workspace) -> None:
    """`--selector` picks by label and `-o json` gives stable, parseable results."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    result = workspace.cli("rotate", "--now", "--selector", "team=payments", "-o", "json")
    data = result.json()
    assert [r["secret"] for r in data["results"]] == ["webhook-hmac"]
    assert data["exit_code"] == 0
    assert workspace.cli("rotate", "--all", "--now", "--concurrency", "3").code == 0


def test_plan_and_history(workspace: Workspace) -> None:
    """`plan -o json` says what a run would do; `history` lists a secret's events from the audit log."""
    workspace.write_manifest(MANIFEST)
    plan = workspace.cli("plan", "-o", "json").json()
    assert {s["action"] for s in plan["secrets"]} == {"create"}
    workspace.cli("run")
    later = workspace.cli("plan", "--at", "+80d", "-o", "json").json()
    assert {s["action"] for s in later["secrets"]} == {"notice"}
    workspace.cli("rotate", "--now", "jwt")
    history = workspace.cli("history", "jwt", "-o", "json").json()
    assert [r["event"] for r in history["records"]] == ["rotation.succeeded", "rotation.succeeded"]


def test_audit_verify_detects_tampering(workspace: Workspace) -> None:
    """`audit verify` passes on a clean log and names the first edited line with exit 1."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    workspace.cli("rotate", "--now", "--all")
    assert workspace.cli("audit", "verify").code == 0
    path = workspace.root / "audit.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("rotation.succeeded", "rotation.failed")
    path.write_text("\n".join(lines) + "\n")
    result = workspace.cli("audit", "verify")
    assert result.code == 1
    assert ":3" in result.err or ":4" in result.err


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("rotate", "--now", "nope"), 2, "unknown secret 'nope'"),
    (("rotate",), 2, "name at least one secret"),
    (("status", "-o", "xml"), 2, "status: -o/--output: 'xml' is not one of table, json, yaml"),
    (("rollback", "partner-api-key"), 1, "nothing stored"),
])
def test_bad_input_gives_one_line_and_exit_code(workspace: Workspace, args: tuple[str, ...], code: int,
                                                needle: str) -> None:
    """Usage errors exit 2 and operation errors exit 1, with one clear line and no traceback."""
    workspace.write_manifest(MANIFEST)
    result = workspace.cli(*args)
    assert result.code == code, (result.out, result.err)
    assert needle in result.err
    assert "Traceback" not in result.err


def test_wrong_master_key_exits_4_and_changes_nothing(workspace: Workspace) -> None:
    """A store opened with the wrong master key fails with exit 4 and is left byte-for-byte unchanged."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("run")
    db = workspace.root / ".rotator" / "store.db"
    before = db.read_bytes()
    result = workspace.cli("rotate", "--now", "--all",
                           env={"ROTATOR_MASTER_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="})
    assert result.code == 4, result.err
    assert "cannot decrypt store: wrong master key" in result.out + result.err
    assert db.read_bytes() == before


def test_unknown_provider_type_names_installed_ones(workspace: Workspace) -> None:
    """A manifest naming a provider that is not installed says which are and how to add one."""
    workspace.write_manifest("""
        version: 1
        providers: {x: {type: gcp}}
        secrets: [{name: s, kind: hmac, provider: x}]
    """)
    result = workspace.cli("validate")
    assert result.code == 2
    assert "rotation.yaml:3:" in result.err
    assert "installed: " in result.err
    assert "local" in result.err


def test_help_and_schema(workspace: Workspace) -> None:
    """`--help` lists every contract command and `schema` prints JSON Schema."""
    workspace.write_manifest(MANIFEST)
    out = workspace.cli("--help").out
    for command in ("validate", "plan", "status", "rotate", "rollback", "retire", "run", "daemon", "history",
                    "audit", "schema"):
        assert command in out
    schema = workspace.cli("schema").json()
    assert schema["properties"]["version"]


def test_secret_values_never_printed_even_verbose(workspace: Workspace, tmp_path: Path) -> None:
    """Console and JSON logs at -vv, status and history never contain a value (the scan runs at teardown)."""
    workspace.write_manifest(MANIFEST)
    workspace.cli("-vv", "--log-format", "console", "run")
    workspace.cli("-vv", "--log-format", "json", "rotate", "--now", "--all")
    workspace.cli("status", "-o", "json")
    workspace.cli("plan")
    assert workspace.store_values()
