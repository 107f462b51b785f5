"""The daemon as a real subprocess: metrics that move, graceful SIGTERM mid-rotation, and several replicas
plus a CronJob-style loop on one store rotating each due secret exactly once."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rotator.localstore import LocalConfig, LocalProvider
from rotator.provider import SecretRef
from tests.conftest import Workspace

pytestmark = pytest.mark.xdist_group("processes")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, body = _get(port, "/metrics")
    out = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _wait(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


def _keyset(root: Path, name: str) -> list[tuple[str, str, float]]:
    """(id, state, promoted_at as a timestamp) of every version stored for ``name``."""
    provider = LocalProvider(name="check", config=LocalConfig(type="local"), base_dir=root)
    try:
        keyset = provider.read(SecretRef(name, name))
        assert keyset is not None
        return [(v.id, str(v.state), v.promoted_at.timestamp() if v.promoted_at else 0.0) for v in keyset.versions]
    finally:
        provider.close()


def test_metrics_parse_and_change_after_rotation(workspace: Workspace) -> None:
    """/metrics parses with prometheus_client and the rotation counter and age move as the daemon rotates."""
    port = _port()
    workspace.write_manifest("""
        version: 1
        defaults: {every: 3s, grace: 1s, notice: 1s}
        secrets:
          - {name: fast, kind: hmac}
          - {name: slow, kind: api_key, every: 90d, grace: 7d, notice: 14d}
    """)
    proc = workspace.spawn("daemon", "--metrics-port", str(port), "--reconcile-every", "1m")
    try:
        _wait(lambda: _get(port, "/readyz")[0] == 200)
        first = _metrics(port)
        assert first[("rotator_up", ())] == 1
        assert first[("rotator_build_info", (("version", "0.1.0"),))] == 1
        assert first[("rotator_secret_policy_seconds", (("secret", "slow"),))] == 90 * 86400
        key = ("rotator_rotations_total", (("result", "success"), ("secret", "fast")))
        _wait(lambda: _metrics(port).get(key, 0) >= 1, timeout=20)
        later = _metrics(port)
        assert later[("rotator_next_rotation_timestamp_seconds", (("secret", "fast"),))] > time.time() - 1
        assert _get(port, "/healthz") == (200, "ok\n")
        assert _get(port, "/nope")[0] == 404
    finally:
        proc.send_signal(signal.SIGTERM)
        workspace.collect(proc)
    assert proc.returncode == 0


def test_sigterm_during_verify_finishes_the_step_and_exits_0(workspace: Workspace) -> None:
    """SIGTERM while a verify hook runs lets the rotation finish, then the daemon exits 0 with no pending."""
    port = _port()
    marker = workspace.root / "verifying"
    workspace.write_manifest(f"""
        version: 1
        defaults: {{every: 2s, grace: 1s, notice: 1s}}
        secrets:
          - name: s
            kind: hmac
            verify: {{command: ["sh", "-c", "cat >/dev/null; touch {marker}; sleep 1.5"]}}
    """)
    proc = workspace.spawn("daemon", "--metrics-port", str(port), "--reconcile-every", "1m")
    try:
        _wait(lambda: marker.exists(), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = workspace.collect(proc, timeout=30)
    assert proc.returncode == 0, err[-1500:]
    states = [state for _, state, _ in _keyset(workspace.root, "s")]
    assert states.count("current") == 1
    assert "pending" not in states
    assert "daemon.stopped" in err


def test_three_daemons_and_a_cronjob_rotate_each_due_secret_once(workspace: Workspace) -> None:
    """3 daemons and a `rotator run` loop share one store for 30+ one-second cycles: every version is
    promoted exactly once, rotations are never closer than the interval, and the audit agrees."""
    workspace.write_manifest("""
        version: 1
        defaults: {every: 1s, grace: 500ms, notice: 500ms, rollback_window: 1h}
        secrets:
          - {name: a, kind: hmac}
          - {name: b, kind: api_key}
    """.replace("500ms", "0.5s"))
    assert workspace.cli("run").code == 0
    daemons = [workspace.spawn("daemon", "--metrics-port", str(_port()), "--reconcile-every", "2s")
               for _ in range(3)]
    deadline = time.monotonic() + 36
    runs = 0
    try:
        while time.monotonic() < deadline:
            result = workspace.cli("run", timeout=60)
            assert result.code == 0, result.out + result.err
            runs += 1
    finally:
        for proc in daemons:
            proc.send_signal(signal.SIGTERM)
        for proc in daemons:
            workspace.collect(proc, timeout=60)
    assert all(proc.returncode == 0 for proc in daemons)
    audit = [json.loads(line) for line in (workspace.root / "audit.jsonl").read_text().splitlines()]
    for name in ("a", "b"):
        versions = _keyset(workspace.root, name)
        succeeded = [r for r in audit if r.get("event") == "rotation.succeeded" and r["secret"] == name]
        promoted = [r["new_version"] for r in succeeded]
        assert len(promoted) == len(set(promoted)), "a version was reported promoted twice"
        assert len(promoted) == len(versions), "audit and backend disagree"
        assert len(promoted) >= 30, f"only {len(promoted)} cycles for {name}"
        times = sorted(promoted_at for _, _, promoted_at in versions)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 1.0, f"two rotations {min(gaps):.3f}s apart: not exactly once per due time"
        assert [s for _, s, _ in versions].count("current") == 1
    assert subprocess.run(workspace.command("audit", "verify"), cwd=workspace.root, env=workspace.env,
                          capture_output=True, check=False).returncode == 0
    assert runs >= 5
