"""Delivery as a reconcile step (rotator.sinks.reconcile) and its wiring into run / rotate / rollback:
desired content from the keyset, shared targets, retries, and how a failing sink is reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from rotator.app import Runtime
from rotator.audit import iter_records
from rotator.errors import ExitCode
from rotator.outcome import exit_code_for
from rotator.sinks.reconcile import deliver
from rotator.testing import FakeClock
from tests.conftest import Workspace, memory_runtime
from tests.k8s_emulator import KubernetesEmulator
from tests.test_k8s_emulator import TOKEN, USER, kubeconfig

MANIFEST = """\
version: 1
defaults: {{provider: {store}, every: 30d, grace: 3d, notice: 1d}}
providers: {{{store}: {{type: memory}}}}
audit: {{path: audit.jsonl}}
secrets:
  - name: partner-api
    kind: api_key
    sinks:
      - {{type: file, path: app.env, format: env, key: API_KEY}}
      - {{type: file, path: app.json, format: json, key: API_KEY}}
  - name: db
    kind: password
    sinks:
      - {{type: file, path: app.env, format: env, key: DB_PASSWORD}}
      - type: file
        path: missing-dir/db.txt
        format: raw
        key: DB_PASSWORD
        retry: {{attempts: 2, initial: 0.01, max: 0.02}}
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Runtime, FakeClock, str]]:
    """A runtime on a memory store with both secrets created (nothing delivered yet)."""
    with memory_runtime(tmp_path, MANIFEST) as made:
        yield made


def _values(rt: Runtime, name: str) -> dict[str, str]:
    keyset = rt.engine.read(rt.manifest.secret(name))
    assert keyset is not None
    return {str(v.state): v.value.reveal() for v in keyset.versions if v.value is not None}


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_deliver_writes_shared_targets_then_nothing(env: tuple[Runtime, FakeClock, str], tmp_path: Path) -> None:
    """Two secrets share app.env; the first pass writes, the second finds everything equal."""
    rt, _, _ = env
    policies = list(rt.manifest.secrets.values())
    outcomes = deliver(rt, policies)
    assert {(o.secret, o.action, o.ok) for o in outcomes if o.ok} == {("partner-api", "delivered", True),
                                                                      ("db", "delivered", True)}
    held = _env_file(tmp_path / "app.env")
    assert held == {"API_KEY": _values(rt, "partner-api")["current"],
                    "DB_PASSWORD": held["DB_PASSWORD"]}  # the password is quoted in the env file
    assert json.loads((tmp_path / "app.json").read_text()) == {"API_KEY": _values(rt, "partner-api")["current"]}
    again = deliver(rt, policies)
    assert [o.action for o in again] == ["delivery_failed"]  # only the broken sink, nothing rewritten


def test_grace_puts_previous_beside_current_until_retired(env: tuple[Runtime, FakeClock, str],
                                                          tmp_path: Path) -> None:
    """After a rotation the file holds API_KEY and API_KEY_PREVIOUS; once retired, only API_KEY."""
    rt, clock, _ = env
    policy = rt.manifest.secret("partner-api")
    clock.advance(timedelta(hours=1))
    rt.engine.reconcile_one(policy, force=True)
    deliver(rt, [policy])
    values = _values(rt, "partner-api")
    assert _env_file(tmp_path / "app.env")["API_KEY_PREVIOUS"] == values["previous"]
    clock.advance(timedelta(hours=1))
    second = rt.engine.reconcile_one(policy, force=True)  # two values in grace: the newer one is delivered
    assert second.ok, second
    deliver(rt, [policy])
    newer = _values(rt, "partner-api")
    assert _env_file(tmp_path / "app.env")["API_KEY_PREVIOUS"] == values["current"]
    assert values["previous"] not in (tmp_path / "app.env").read_text()
    values = newer
    clock.advance(timedelta(days=4))
    rt.engine.reconcile_one(policy)  # retires the previous values
    deliver(rt, [policy])
    held = _env_file(tmp_path / "app.env")
    assert "API_KEY_PREVIOUS" not in held
    assert values["previous"] not in (tmp_path / "app.env").read_text()


def test_a_failing_sink_is_reported_not_rolled_back(env: tuple[Runtime, FakeClock, str], tmp_path: Path) -> None:
    """The unwritable target gives a failed outcome (exit 1), a sink.failed event in the audit log and a
    failed counter; the keyset and the other sinks are untouched."""
    rt, _, _ = env
    before = rt.metrics.registry.get_sample_value(
        "rotator_sink_deliveries_total", {"secret": "db", "sink": f"file:{tmp_path}/missing-dir/db.txt",
                                          "result": "failed"}) or 0
    current = _values(rt, "db")["current"]
    (failed,) = [o for o in deliver(rt, [rt.manifest.secret("db")]) if not o.ok]
    assert failed.secret == "db"
    assert failed.message.startswith(f"file:{tmp_path}/missing-dir/db.txt: cannot write: ")
    assert exit_code_for([failed]) == ExitCode.FAILED
    events = [r for r in iter_records(tmp_path / "audit.jsonl") if r.get("event") == "sink.failed"]
    assert events[-1]["secret"] == "db"
    assert events[-1]["details"] == {"sink": f"file:{tmp_path}/missing-dir/db.txt"}
    after = rt.metrics.registry.get_sample_value(
        "rotator_sink_deliveries_total", {"secret": "db", "sink": f"file:{tmp_path}/missing-dir/db.txt",
                                          "result": "failed"})
    assert after == before + 1
    assert _values(rt, "db")["current"] == current
    (tmp_path / "missing-dir").mkdir()
    assert [o.action for o in deliver(rt, [rt.manifest.secret("db")])] == ["delivered"]  # the next pass


def test_transient_failures_are_retried(tmp_path: Path) -> None:
    """A reload command that fails twice and then works is retried within one delivery."""
    script = tmp_path / "flaky.sh"
    script.write_text('#!/bin/sh\nn=$(cat "$0.n" 2>/dev/null || echo 0); echo $((n+1)) > "$0.n"\n'
                      '[ "$n" -ge 2 ]\n')
    script.chmod(0o755)
    manifest = MANIFEST.split("  - name: db")[0].replace(
        "format: json, key: API_KEY}}",
        "format: json, key: API_KEY, reload: {{command: [./flaky.sh]}}, retry: {{initial: 0.01, max: 0.02}}}}")
    with memory_runtime(tmp_path, manifest) as (rt, _, _):
        outcomes = deliver(rt, list(rt.manifest.secrets.values()))
    assert all(o.ok for o in outcomes)
    assert (tmp_path / "flaky.sh.n").read_text().strip() == "3"


def test_secrets_sharing_a_target_must_agree(tmp_path: Path) -> None:
    """Two secrets writing one file with different formats is a failed delivery naming both."""
    manifest = MANIFEST.split("      - type: file\n        path: missing-dir")[0].replace(
        "path: app.env, format: env, key: DB_PASSWORD", "path: app.env, format: json, key: DB_PASSWORD")
    with memory_runtime(tmp_path, manifest) as (rt, _, _):
        outcomes = deliver(rt, list(rt.manifest.secrets.values()))
    failed = [o for o in outcomes if not o.ok]
    assert {o.secret for o in failed} == {"partner-api", "db"}
    assert "sinks of partner-api and db share this target" in failed[0].message


def test_an_unreadable_secret_blocks_only_the_targets_it_shares(tmp_path: Path) -> None:
    """When one secret's backend cannot be read, a file it shares is left alone (writing the other secret
    alone would drop its key); the other secret's own targets are still delivered."""
    (tmp_path / "broken.db").mkdir()  # a directory where the local store expects a file: every read fails
    manifest = MANIFEST.split("      - type: file\n        path: missing-dir")[0].replace(
        "  - name: db\n    kind: password\n", "  - name: db\n    kind: password\n    provider: broken\n").replace(
        "providers: {{{store}: {{type: memory}}}}",
        "providers: {{{store}: {{type: memory}}, broken: {{type: local, path: broken.db}}}}")
    with memory_runtime(tmp_path, manifest) as (rt, _, _):
        outcomes = deliver(rt, list(rt.manifest.secrets.values()))
    by_target = {(o.secret, o.action): o.message for o in outcomes}
    assert by_target[("partner-api", "delivery_failed")].startswith(
        f"file:{tmp_path}/app.env: not delivered, the keyset of db could not be read")
    assert ("partner-api", "delivered") in by_target  # app.json, which db does not share
    assert not (tmp_path / "app.env").exists()
    assert exit_code_for(outcomes) == ExitCode.BACKEND


def test_the_issue_example_validates_as_written(tmp_path: Path) -> None:
    """The `sinks:` block of issue 17, verbatim, is a valid manifest; a typo is a file:line:col error."""
    pytest.importorskip("rotator_kubernetes", reason="pip install -e providers/kubernetes")
    from rotator.errors import ManifestError
    from rotator.manifest import parse_manifest

    text = (
        "version: 1\nsecrets:\n  - name: partner-api\n    kind: api_key\n    sinks:\n"
        '      - {type: file, path: /run/secrets/app.env, format: env, key: API_KEY, mode: "0600", reload: {signal: HUP, pidfile: /run/app.pid}}\n'  # noqa: E501 - verbatim from the issue
        "      - {type: kubernetes, namespace: payments, secret: partner-api, key: API_KEY, restart: [deployment/api, deployment/worker]}\n"  # noqa: E501 - verbatim from the issue
    )
    manifest = parse_manifest(text, tmp_path / "rotation.yaml")
    file_sink, k8s_sink = manifest.secret("partner-api").spec.sinks
    assert (file_sink.type, k8s_sink.type) == ("file", "kubernetes")
    with pytest.raises(ManifestError, match=r"^rotation.yaml:7:\d+: secrets\[0\]\.sinks\[1\]\.restrat: unknown key"):
        parse_manifest(text.replace("restart:", "restrat:"), tmp_path / "rotation.yaml")


# --- through the CLI ------------------------------------------------------------------------------------

LOCAL = """\
version: 1
providers: {local: {type: local, path: store.db}}
secrets:
  - name: partner-api
    kind: api_key
    grace: 1d
    sinks:
      - {type: file, path: out/app.env, format: env, key: API_KEY, retry: {attempts: 1}}
"""


def test_run_exits_1_while_a_sink_fails_and_catches_up_next_pass(workspace: Workspace) -> None:
    """`run` rotates, reports the unwritable sink (exit 1, a line naming secret and target), and the next
    `run` after the fix delivers; `rollback` delivers too."""
    workspace.write_manifest(LOCAL)
    first = workspace.cli("run")
    assert first.code == 1, first.err
    assert f"FAILED partner-api: delivery_failed - file:{workspace.root}/out/app.env: cannot write" in first.out
    assert workspace.cli("status", "-o", "json").json()["secrets"][0]["versions"][0]["state"] == "current"
    (workspace.root / "out").mkdir()
    second = workspace.cli("run")
    assert second.code == 0, second.err
    assert "ok     partner-api: delivered" in second.out
    assert workspace.cli("run").out.count("delivered") == 0  # idempotent: nothing to write
    assert workspace.cli("rotate", "partner-api", "--now").code == 0
    assert "API_KEY_PREVIOUS=" in (workspace.root / "out" / "app.env").read_text()
    rolled = workspace.cli("rollback", "partner-api")
    assert rolled.code == 0, rolled.err
    assert "API_KEY_PREVIOUS" not in (workspace.root / "out" / "app.env").read_text()
    leftovers = [p.name for p in (workspace.root / "out").iterdir() if p.name != "app.env"]
    assert leftovers == []


def test_kubernetes_sink_end_to_end(workspace: Workspace) -> None:
    """`run` fills the Secret and restarts the Deployments once; `run` again writes nothing; a rotation
    restarts each Deployment once more."""
    pytest.importorskip("rotator_kubernetes", reason="pip install -e providers/kubernetes")
    with KubernetesEmulator() as emu:
        emu.grant(TOKEN, USER, [("secrets", "payments", "partner-api", {"get", "update"}),
                                ("deployments", "payments", "api", {"get", "patch"})])
        emu.add_secret("payments", "partner-api", {})
        emu.add_deployment("payments", "api")
        kubeconfig(workspace.root / "kubeconfig", emu.address)
        workspace.write_manifest("""\
            version: 1
            providers: {local: {type: local, path: store.db}}
            secrets:
              - name: partner-api
                kind: api_key
                sinks:
                  - {type: kubernetes, namespace: payments, secret: partner-api, key: API_KEY,
                     restart: [deployment/api], kubeconfig: kubeconfig}
            """)
        first = workspace.cli("run")
        assert first.code == 0, first.err
        assert "kubernetes:payments/partner-api: written; reloaded deployment/api" in first.out
        writes = len(emu.writes())
        assert workspace.cli("run").code == 0
        assert len(emu.writes()) == writes
        assert workspace.cli("rotate", "partner-api", "--now").code == 0
        assert emu.rollouts == {("payments", "api"): 2}
        data = emu.secret_data("payments", "partner-api")
        assert set(data) == {"API_KEY", "API_KEY_PREVIOUS"}
    assert emu.internal_errors == []


@pytest.mark.xdist_group("processes")
def test_daemon_delivers_after_rotations_and_heals_a_tampered_file(workspace: Workspace) -> None:
    """The daemon delivers each rotation and SIGHUPs a real consumer; a file edited behind its back is
    put right by the next periodic pass."""
    import signal
    import subprocess
    import sys

    from tests.test_daemon import _get, _metrics, _port, _wait
    from tests.test_sinks_file import CONSUMER

    out = workspace.root / "out"
    out.mkdir()
    (out / "app.env").write_text("")
    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(out / "app.env"), str(out / "app.pid"),
                                 str(workspace.root / "reloads.txt")])
    port = _port()
    workspace.write_manifest("""\
        version: 1
        defaults: {every: 3s, grace: 1s, notice: 1s}
        secrets:
          - name: fast
            kind: hmac
            sinks:
              - {type: file, path: out/app.env, format: env, key: HMAC_KEY,
                 reload: {signal: HUP, pidfile: out/app.pid}}
        """)
    _wait(lambda: (out / "app.pid").exists())
    proc = workspace.spawn("daemon", "--metrics-port", str(port), "--reconcile-every", "1s")
    try:
        _wait(lambda: _get(port, "/readyz")[0] == 200)
        key = ("rotator_rotations_total", (("result", "success"), ("secret", "fast")))
        _wait(lambda: _metrics(port).get(key, 0) >= 1, timeout=30)
        _wait(lambda: "HMAC_KEY_PREVIOUS=" in (out / "app.env").read_text(), timeout=30)
        reloads = workspace.root / "reloads.txt"
        _wait(lambda: reloads.exists() and len(reloads.read_text().split()) >= 2, timeout=30)
        (out / "app.env").write_text("HMAC_KEY=tampered\n")
        _wait(lambda: "tampered" not in (out / "app.env").read_text(), timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        workspace.collect(proc)
        consumer.kill()
        consumer.wait()
    assert proc.returncode == 0
    stored = workspace.store_values()
    held = (out / "app.env").read_text()
    assert any(value in held for value in stored)
    (out / "app.env").unlink()  # the delivered file holds values by design; the canary scan covers the rest
