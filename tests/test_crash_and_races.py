"""Crash safety and exactly-once across processes, with real subprocesses on one local store:
`kill -9` at random moments followed by `rotator run`, and several processes rotating one due secret."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rotator.generators import matches_kind
from rotator.localstore import LocalConfig, LocalProvider
from rotator.provider import SecretRef
from tests.conftest import Workspace

pytestmark = pytest.mark.xdist_group("processes")

SLOW_VERIFY = """
version: 1
defaults: {every: 90d, grace: 1h, notice: 1d, stale_pending_after: 1h}
secrets:
  - name: key
    kind: api_key
    prefix: "k_"
    verify: {command: ["sh", "-c", "cat >/dev/null; sleep 0.15"]}
"""


class Watcher(threading.Thread):
    """Reads the keyset continuously and records any instant without exactly one valid current value."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.provider = LocalProvider(name="watch", config=LocalConfig(type="local"), base_dir=root)
        self.stop = threading.Event()
        self.bad: list[str] = []
        self.reads = 0

    def run(self) -> None:
        while not self.stop.is_set():
            keyset = self.provider.read(SecretRef("key", "key"))
            if keyset is not None:
                self.reads += 1
                currents = [v for v in keyset.versions if v.state == "current"]
                if len(currents) != 1 or currents[0].value is None or not matches_kind(
                        "api_key", currents[0].value.reveal()):
                    self.bad.append(f"{[(v.id[:6], str(v.state)) for v in keyset.versions]}")
            time.sleep(0.005)
        self.provider.close()


def _keyset(root: Path) -> dict[str, list[str]]:
    provider = LocalProvider(name="check", config=LocalConfig(type="local"), base_dir=root)
    try:
        keyset = provider.read(SecretRef("key", "key"))
        assert keyset is not None
        out: dict[str, list[str]] = {}
        for version in keyset.versions:
            out.setdefault(str(version.state), []).append(version.id)
        return out
    finally:
        provider.close()


def _create_old_value(root: Path) -> None:
    """Store the secret's first value as if it had been made two hours ago."""
    from datetime import UTC, datetime, timedelta

    from rotator.generators import GeneratorParams, generate
    from rotator.keyset import KeyVersion, State

    old = datetime.now(UTC) - timedelta(hours=2)
    value = generate(GeneratorParams(kind="api_key")).value
    provider = LocalProvider(name="seed", config=LocalConfig(type="local"), base_dir=root)
    try:
        provider.create(SecretRef("key", "key"), KeyVersion(id="seed" * 8, state=State.CURRENT, created_at=old,
                                                           promoted_at=old, value=value), {})
    finally:
        provider.close()


PHASED = """
version: 1
defaults: {every: 90d, grace: 1s, notice: 1d, stale_pending_after: 1h}
secrets:
  - name: key
    kind: api_key
    prefix: "k_"
    verify: {command: ["sh", "-c", "cat >/dev/null; touch verifying; sleep 0.3"]}
"""
PHASES = ("staged", "verifying", "promoted", "retiring")


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 30) -> bool:
    """Poll until ``predicate`` holds (True) or the process ended first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return predicate()
        time.sleep(0.002)
    return False


@pytest.mark.slow
def test_kill_9_in_every_phase_then_run_recovers(workspace: Workspace) -> None:
    """20 kills picked from observed progress, so every phase is hit on every run: right after the stage
    record, during the verify hook, right after promote, and during a retire. Each following `run` leaves one
    current, no pending, and never loses a value; a watcher sees a valid current at every instant."""
    workspace.write_manifest(PHASED)
    assert workspace.cli("run").code == 0
    watcher = Watcher(workspace.root)
    watcher.start()
    hits = dict.fromkeys(PHASES, 0)
    marker = workspace.root / "verifying"
    try:
        for trial in range(20):
            phase = PHASES[trial % len(PHASES)]
            before = _keyset(workspace.root)["current"][0]
            marker.unlink(missing_ok=True)
            if phase == "retiring":  # the previous value's 1s grace has ended: `run` retires it
                time.sleep(1.1)
                retired = len(_keyset(workspace.root).get("retired", []))
                proc = workspace.spawn("run")
                reached = _wait_for(lambda n=retired: len(_keyset(workspace.root).get("retired", [])) > n, proc)
            else:
                proc = workspace.spawn("rotate", "--now", "key")
                if phase == "staged":
                    reached = _wait_for(lambda: "pending" in _keyset(workspace.root), proc)
                elif phase == "verifying":
                    reached = _wait_for(marker.exists, proc)
                else:
                    reached = _wait_for(lambda old=before: _keyset(workspace.root)["current"][0] != old, proc)
            proc.send_signal(signal.SIGKILL)
            workspace.collect(proc)
            hits[phase] += reached and proc.returncode == -signal.SIGKILL
            result = workspace.cli("run")
            assert result.code == 0, result.out + result.err
            state = _keyset(workspace.root)
            assert len(state["current"]) == 1
            assert "pending" not in state
            kept = [vid for ids in state.values() for vid in ids]
            assert before in kept, f"{phase}: the value current before the kill was lost"
    finally:
        watcher.stop.set()
        watcher.join()
    print(f"kill -9 per phase: {hits}")
    assert watcher.bad == []
    assert watcher.reads > 100
    assert all(hits[p] >= 2 for p in ("staged", "verifying", "promoted")), hits
    assert workspace.cli("audit", "verify").code == 0


def test_four_processes_rotate_a_due_secret_exactly_once(workspace: Workspace) -> None:
    """Four `rotate NAME` processes started together on a due secret produce one rotation in total."""
    workspace.write_manifest("""
        version: 1
        defaults: {every: 1h, grace: 1m, notice: 1m}
        secrets:
          - name: key
            kind: api_key
            verify: {command: ["sh", "-c", "cat >/dev/null; sleep 0.1"]}
    """)
    _create_old_value(workspace.root)  # due now, and not again for an hour however slowly processes start
    procs = [workspace.spawn("rotate", "key", "-o", "json") for _ in range(4)]
    results = []
    for proc in procs:
        out, _ = workspace.collect(proc, timeout=60)
        assert proc.returncode == 0
        results.append(json.loads(out)["results"][0]["action"])
    audit = [json.loads(line) for line in (workspace.root / "audit.jsonl").read_text().splitlines()]
    rotations = [r for r in audit
                 if r.get("event") == "rotation.succeeded" and "initial" not in r.get("details", {})]
    assert len(rotations) == 1, results
    state = _keyset(workspace.root)
    assert len(state["current"]) == 1
    assert len(state["previous"]) == 1
    assert "pending" not in state


def test_daemon_rotates_on_schedule_serves_metrics_and_stops_on_sigterm(workspace: Workspace) -> None:
    """The daemon creates secrets, rotates when due, exposes metrics and exits 0 on SIGTERM."""
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workspace.write_manifest("""
        version: 1
        defaults: {every: 2s, grace: 1s, notice: 1s}
        secrets:
          - {name: key, kind: hmac}
    """)
    proc = workspace.spawn("daemon", "--metrics-port", str(port), "--reconcile-every", "30s")
    try:
        deadline = time.monotonic() + 30
        rotations = 0.0
        while time.monotonic() < deadline and rotations < 2:
            time.sleep(0.5)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
            except OSError:
                continue
            for line in body.splitlines():
                if line.startswith('rotator_rotations_total{result="success",secret="key"}'):
                    rotations = float(line.split()[-1])
        assert rotations >= 2, "daemon did not rotate on schedule"
        ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
        assert ready.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = workspace.collect(proc, timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "daemon.stopped" in err
    state = _keyset(workspace.root)
    assert len(state["current"]) == 1
    assert "pending" not in state
