"""CLI conventions (rotator/cli/_base.py, _root.py, _complete.py, rotator/_output.py): -o table|json|yaml,
--no-headers, names and -l on status/plan/history, ROTATOR_<OPTION> for every option, help with examples,
exit codes and environment, whole summaries in -h, shell completion through the real bash script, and the
daemon's durations in logs. Real CLI subprocesses; canary-scanned."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import Workspace

MANIFEST = """
version: 1
defaults: {every: 90d, grace: 7d, notice: 14d}
notifiers:
  ops: {type: webhook, url: "https://hooks.example.com/rotator", signing_secret: "test-signing-secret-0123456789"}
secrets:
  - {name: partner-api-key, kind: api_key, consumers: [partner-gateway, billing-worker],
     labels: {team: partners}}
  - {name: webhook-hmac, kind: hmac, labels: {team: payments, tier: gold}}
  - {name: payments-db, kind: password, labels: {team: payments}}
  - {name: jwt, kind: ed25519, labels: {team: identity}}
"""


@pytest.fixture
def ws(workspace: Workspace) -> Workspace:
    """The workspace with every secret created."""
    workspace.write_manifest(MANIFEST)
    assert workspace.cli("run").code == 0
    return workspace


def test_yaml_output_is_the_json_structure(ws: Workspace) -> None:
    """-o yaml carries exactly the fields and values of -o json, for every command that has -o."""
    for args in (("status",), ("plan",), ("history", "jwt"), ("rotate", "--dry-run", "--all"),
                 ("retire", "jwt")):
        as_json = ws.cli(*args, "-o", "json")
        as_yaml = ws.cli(*args, "-o", "yaml")
        assert as_json.code == as_yaml.code == 0, (args, as_json.err, as_yaml.err)
        left, right = json.loads(as_json.out), yaml.safe_load(as_yaml.out)
        for volatile in ("at",):  # status and plan stamp the moment they ran
            left.pop(volatile, None)
            right.pop(volatile, None)
        if args == ("status",):
            for doc in (left, right):
                for secret in doc["secrets"]:
                    for version in secret["versions"]:
                        version.pop("age_seconds")
        assert left == right, args


def test_names_and_selector_narrow_status_plan_and_history(ws: Workspace) -> None:
    """NAME... and -l KEY=VALUE choose secrets on status, plan and history; both together intersect."""
    def secrets(*args: str) -> list[str]:
        result = ws.cli(*args, "-o", "json")
        assert result.code == 0, result.err
        doc = result.json()
        if "records" in doc:
            return sorted({r["secret"] for r in doc["records"]})
        return sorted(s["secret"] for s in doc["secrets"])

    for command in ("status", "plan", "history"):
        assert secrets(command, "-l", "team=payments") == ["payments-db", "webhook-hmac"]
        assert secrets(command, "-l", "team=payments", "-l", "tier=gold") == ["webhook-hmac"]
        assert secrets(command, "jwt", "payments-db") == ["jwt", "payments-db"]
        assert secrets(command, "jwt", "payments-db", "-l", "team=payments") == ["payments-db"]
        assert len(secrets(command)) == 4
    single = ws.cli("history", "jwt", "-o", "json").json()
    assert set(single) == {"secret", "records"}  # the documented shape for one name is unchanged
    several = ws.cli("history", "-l", "team=payments", "-o", "json").json()
    assert several["secrets"] == ["webhook-hmac", "payments-db"]


def test_no_headers_and_plain_columns(ws: Workspace) -> None:
    """Off a terminal tables are plain aligned columns; --no-headers drops the header row."""
    with_headers = ws.cli("status", "jwt").out.splitlines()
    assert with_headers[0].split() == ["SECRET", "VERSION", "STATE", "AGE", "GRACE", "CONSUMERS", "MOVED", "NOTE"]
    without = ws.cli("status", "--no-headers", "jwt").out.splitlines()
    assert without == [line.rstrip() for line in with_headers[1:]] or without[0].split()[0] == "jwt"
    assert len(without) == 1
    assert ws.cli("plan", "--no-headers").out.splitlines()[0].split()[0] == "partner-api-key"


def test_history_times_are_utc_with_z(ws: Workspace) -> None:
    """history prints times like every other table: ``YYYY-MM-DD HH:MM:SSZ``."""
    rows = ws.cli("history", "--no-headers", "jwt").out.splitlines()
    assert rows
    date, time_, *_ = rows[0].split()
    assert len(date) == 10
    assert time_.endswith("Z")
    assert len(time_) == 9


def test_consumers_line_for_a_new_secret_is_not_a_blocker(ws: Workspace) -> None:
    """A first value has nothing to move from; after a rotation the column counts who moved and (with the
    default retire: at_grace_end) says "not yet" rather than "waiting"."""
    first = ws.cli("status", "--no-headers", "partner-api-key").out
    assert "n/a (no previous value)" in first
    assert "waiting" not in first
    ws.cli("rotate", "--now", "partner-api-key")
    rotated = ws.cli("status", "--no-headers", "partner-api-key").out
    assert "0/2; not yet: partner-gateway billing-worker" in rotated


def test_every_option_reads_its_environment_variable(ws: Workspace) -> None:
    """ROTATOR_OUTPUT, ROTATOR_LOG_FORMAT, ROTATOR_SELECTOR, ROTATOR_NO_HEADERS, ROTATOR_QUIET work like the
    options; a command-line option still wins over its variable."""
    assert ws.cli("status", "jwt", env={"ROTATOR_OUTPUT": "json"}).json()["secrets"][0]["secret"] == "jwt"
    assert ws.cli("status", "jwt", "-o", "table", env={"ROTATOR_OUTPUT": "json"}).out.startswith("SECRET")
    selected = ws.cli("status", env={"ROTATOR_OUTPUT": "json", "ROTATOR_SELECTOR": "team=identity"}).json()
    assert [s["secret"] for s in selected["secrets"]] == ["jwt"]
    assert ws.cli("plan", env={"ROTATOR_NO_HEADERS": "1"}).out.split()[0] == "partner-api-key"
    logged = ws.cli("rotate", "--now", "jwt", env={"ROTATOR_LOG_FORMAT": "console"})
    assert "{" not in logged.err  # console (warnings only), not JSON lines
    quiet = ws.cli("rotate", "--now", "jwt", env={"ROTATOR_QUIET": "1"})
    assert quiet.code == 0
    assert quiet.out == ""


def test_revoke_previous_is_never_read_from_the_environment(ws: Workspace) -> None:
    """ROTATOR_REVOKE_PREVIOUS does not turn an ordinary rotation into an incident."""
    result = ws.cli("rotate", "--now", "jwt", "-o", "json", env={"ROTATOR_REVOKE_PREVIOUS": "1"})
    assert result.json()["results"][0]["action"] == "rotated"


def test_help_has_examples_exit_codes_environment_and_whole_summaries(ws: Workspace) -> None:
    """-h lists each command with its whole first sentence, exit codes and the environment variables;
    each command's help shows its envvars and examples."""
    top = ws.cli("-h")
    assert top.code == 0
    flat = " ".join(top.out.split())
    for summary in ("Run continuously: scheduled rotations, notices, retirements; /metrics, /healthz, /readyz.",
                    "One reconcile pass (the CronJob entry point): resume, notices, due rotations, retirements."):
        assert summary in flat
    assert "..." not in top.out.split("Commands:")[1]  # click would cut summaries at 45 characters
    for needle in ("Exit codes:", "4 a backend is unreachable", "ROTATOR_ACTOR", "ROTATOR_AUDIT_LOG",
                   "ROTATOR_MASTER_KEY", "ROTATOR_<OPTION>", "NO_COLOR", "Examples:", "[env var: ROTATOR_MANIFEST]"):
        assert needle in flat, needle
    for command in ("rotate", "rollback", "retire", "status", "plan", "history", "daemon", "completion"):
        text = ws.cli(command, "--help").out
        assert "Examples:" in text or "Setup:" in text, command
    daemon = " ".join(ws.cli("daemon", "-h").out.split())
    for variable in ("ROTATOR_LISTEN", "ROTATOR_METRICS_PORT", "ROTATOR_RECONCILE_EVERY"):
        assert f"env var: {variable}" in daemon
    bare = subprocess.run([sys.executable, "-m", "rotator"], capture_output=True, text=True, cwd=ws.root,
                          env=ws.env, timeout=60, check=False)
    assert (bare.returncode, bare.stdout) == (0, top.out)  # no arguments: the help, exit 0
    assert ws.cli().err == "rotator: error: missing command\n  hint: see 'rotator --help'\n"


def test_completion_scripts_and_dynamic_values(ws: Workspace) -> None:
    """`completion zsh|fish` print click's scripts; the callback protocol completes secret names, notifier
    names and label selectors from the manifest."""
    for shell, marker in (("zsh", "#compdef rotator"), ("fish", "complete --no-files --command rotator")):
        result = ws.cli("completion", shell)
        assert result.code == 0
        assert marker in result.out

    def complete(words: str, shell: str = "zsh") -> list[str]:
        env = {**ws.env, "_ROTATOR_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        proc = subprocess.run([sys.executable, "-m", "rotator"], capture_output=True, text=True, cwd=ws.root,
                              env=env, timeout=60, check=True)
        ws.outputs.append(proc.stdout)
        lines = proc.stdout.splitlines()
        return lines[1::3] if shell == "zsh" else [line.split(",", 1)[1] for line in lines]

    assert complete("rotator status pa") == ["partner-api-key", "payments-db"]
    assert complete("rotator rollback partner-api-key ") == []  # one NAME only
    assert complete("rotator notify test ") == ["ops"]
    assert complete("rotator plan -l team=pa") == ["team=partners", "team=payments"]
    assert complete("rotator plan -l t", "bash") == ["team=identity", "team=partners", "team=payments",
                                                     "tier=gold"]
    assert complete("rotator status jwt ") == ["partner-api-key", "webhook-hmac", "payments-db"]


def test_bash_completion_through_the_real_script(ws: Workspace) -> None:
    """`source <(rotator completion bash)` in a real bash completes secret names from the manifest."""
    bash = shutil.which("bash")
    if bash is None:  # pragma: no cover - bash is part of every Debian base
        pytest.skip("bash not found: apt-get install bash")
    bin_dir = Path(sys.executable).parent
    script = ("source <(rotator completion bash); COMP_WORDS=(rotator status we); COMP_CWORD=2; "
              "_rotator_completion rotator; echo \"${COMPREPLY[*]}\"")
    env = {**ws.env, "PATH": f"{bin_dir}{os.pathsep}{ws.env.get('PATH', '')}", "ROTATOR_MANIFEST": str(ws.manifest)}
    proc = subprocess.run([bash, "--noprofile", "--norc", "-c", script], capture_output=True, text=True,
                          cwd=ws.root, env=env, timeout=60, check=True)
    ws.outputs.append(proc.stdout)
    assert proc.stdout.split() == ["webhook-hmac"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_daemon_logs_durations_like_the_command_line(ws: Workspace) -> None:
    """daemon.started logs ``reconcile_every: "5m"``, the form the option takes, not a Python timedelta."""
    proc = ws.spawn("--log-format", "json", "daemon", "--metrics-port", str(_free_port()),
                    "--reconcile-every", "5m")
    assert proc.stderr is not None
    started = None
    for line in proc.stderr:
        if '"daemon.started"' in line:
            started = json.loads(line)
            break
    proc.send_signal(signal.SIGTERM)
    ws.collect(proc)
    assert started is not None
    assert started["reconcile_every"] == "5m"
