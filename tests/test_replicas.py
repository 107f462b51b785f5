"""Many replicas on one backend: 3 daemon subprocesses plus a CronJob-style `rotator run` loop share the same
manifest for 30+ one-second rotation cycles, on the local store, the Vault emulator and moto; each due
rotation happens exactly once, counted from the backend and from the audit log. Also /readyz following a
Vault that is sealed and unsealed."""

from __future__ import annotations

import itertools
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rotator.keyset import Keyset
from rotator.localstore import LocalConfig, LocalProvider
from rotator.provider import SecretRef
from tests.conftest import Workspace
from tests.moto_server import DUMMY_ENV, GatedMotoServer, aws_env, moto
from tests.test_daemon import _get, _port
from tests.test_vault_cli import TOKEN, Emulator

__all__ = ["aws_env", "moto"]
pytestmark = pytest.mark.xdist_group("processes")

SECRETS = """
defaults: {provider: backend, every: 1s, grace: 0.5s, notice: 0.5s, rollback_window: 1h}
secrets:
  - {name: a, kind: hmac}
  - {name: b, kind: api_key}
"""
PROVIDERS = {
    "local": "backend: {type: local}",
    "vault": 'backend: {type: vault, url: "${VAULT_ADDR}", auth: {method: token}, path_prefix: "${PREFIX}"}',
    "aws": 'backend: {type: aws, region: us-east-1, endpoint_url: "${MOTO_ENDPOINT}", name_prefix: "${PREFIX}", '
           "max_attempts: 2, connect_timeout: 1, read_timeout: 5}",
}


def _manifest(kind: str) -> str:
    return f"version: 1\nproviders:\n  {PROVIDERS[kind]}\n{SECRETS}"


def _read_all(kind: str, ws: Workspace, name: str) -> Keyset:
    """The keyset of ``name`` read with a provider of the test's own."""
    provider: Any
    if kind == "local":
        provider = LocalProvider(name="check", config=LocalConfig(), base_dir=ws.root)
    elif kind == "vault":
        from rotator_vault.auth import TokenAuth
        from rotator_vault.provider import VaultConfig, VaultProvider

        config = VaultConfig(url=ws.env["VAULT_ADDR"], auth=TokenAuth(token_env="ROTATOR_REPLICA_TOKEN"),
                             path_prefix=ws.env["PREFIX"])
        provider = VaultProvider(name="check", config=config, base_dir=ws.root)
    else:
        from rotator_aws.config import AwsConfig
        from rotator_aws.provider import AwsProvider

        provider = AwsProvider(name="check", config=AwsConfig(endpoint_url=ws.env["MOTO_ENDPOINT"],
                                                              region="us-east-1", name_prefix=ws.env["PREFIX"]),
                               base_dir=ws.root)
    try:
        keyset = provider.read(SecretRef(name, name))
    finally:
        provider.close()
    assert keyset is not None
    return keyset


@pytest.fixture(params=["local", "vault", "aws"])
def backend(request: pytest.FixtureRequest, workspace: Workspace,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The workspace wired to one backend kind (the emulator or moto started for it)."""
    kind: str = request.param
    workspace.env["PREFIX"] = f"rep-{uuid.uuid4().hex[:8]}"
    if kind == "vault":
        emulator = Emulator()
        workspace.env.update(VAULT_ADDR=emulator.address, VAULT_TOKEN=TOKEN)
        monkeypatch.setenv("ROTATOR_REPLICA_TOKEN", TOKEN)
        try:
            workspace.write_manifest(_manifest(kind))
            yield kind
            workspace.extra_values += emulator.every_value()
        finally:
            emulator.stop()
        return
    if kind == "aws":
        server: GatedMotoServer = request.getfixturevalue("moto")
        workspace.env.update(DUMMY_ENV, MOTO_ENDPOINT=server.endpoint)
        workspace.env["PREFIX"] += "/"
        for key, value in DUMMY_ENV.items():
            monkeypatch.setenv(key, value)
    workspace.write_manifest(_manifest(kind))
    yield kind


def _cycles(ws: Workspace) -> int:
    """Rotations so far of the least-rotated secret, from the audit log."""
    lines = (ws.root / "audit.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines if '"rotation.succeeded"' in line]
    return min(sum(1 for e in events if e["secret"] == name) for name in ("a", "b"))


def test_three_daemons_and_a_cronjob_rotate_each_due_secret_once(workspace: Workspace, backend: str) -> None:
    """For 30+ cycles every version is promoted exactly once, never sooner than the interval after the
    previous one, and the backend and the audit log agree."""
    assert workspace.cli("run").code == 0
    daemons = [workspace.spawn("daemon", "--metrics-port", str(_port()), "--reconcile-every", "2s",
                               "--shutdown-timeout", "40s") for _ in range(3)]
    started = time.monotonic()
    try:  # at least 34 s, and until both secrets have had 31 cycles (slower backends need longer), <= 100 s
        while time.monotonic() - started < 34 or (_cycles(workspace) < 31 and time.monotonic() - started < 100):
            result = workspace.cli("run", timeout=120)
            assert result.code == 0, result.out + result.err
    finally:
        for proc in daemons:
            proc.send_signal(signal.SIGTERM)
        for proc in daemons:
            workspace.collect(proc, timeout=90)
    elapsed = time.monotonic() - started
    assert [proc.returncode for proc in daemons] == [0, 0, 0]
    audit = [json.loads(line) for line in (workspace.root / "audit.jsonl").read_text().splitlines()]
    for name in ("a", "b"):
        succeeded = [r for r in audit if r.get("event") == "rotation.succeeded" and r["secret"] == name]
        promoted = [r["new_version"] for r in succeeded]
        assert len(promoted) == len(set(promoted)), "a version was reported promoted twice"
        assert 30 <= len(promoted) <= elapsed + 8, f"{len(promoted)} rotations of {name} in {elapsed:.0f}s"
        keyset = _read_all(backend, workspace, name)
        assert [str(v.state) for v in keyset.versions].count("current") == 1
        assert keyset.pending is None
        assert keyset.current is not None
        assert keyset.current.id == promoted[-1]
        if backend in ("local", "vault"):  # these keep every retired version for the rollback window
            assert sorted(v.id for v in keyset.versions) == sorted(promoted)
        # (AWS keeps only current, previous and one retired version: their times are checked). A value's age,
        # and so its due time, counts from its creation
        times = sorted(v.created_at.timestamp() for v in keyset.versions if v.promoted_at)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 1.0, f"two rotations {min(gaps):.3f}s apart: not once per due time"
    assert workspace.cli("audit", "verify").code == 0


def _until(port: int, code: int, timeout: float = 40) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got, body = _get(port, "/readyz")
        if got == code:
            return body
        time.sleep(0.3)
    raise AssertionError(f"/readyz never answered {code}")


def test_readyz_follows_a_sealed_and_unsealed_vault(workspace: Workspace, tmp_path: Path) -> None:
    """/readyz is 200 with Vault up, 503 naming the provider while sealed, and 200 again after unseal."""
    import hvac

    emulator = Emulator()
    workspace.env.update(VAULT_ADDR=emulator.address, VAULT_TOKEN=TOKEN, PREFIX="ready")
    workspace.write_manifest(_manifest("vault").replace("every: 1s, grace: 0.5s, notice: 0.5s",
                                                        "every: 1d, grace: 1h, notice: 1h"))
    port = _port()
    proc = workspace.spawn("daemon", "--metrics-port", str(port), "--reconcile-every", "1s",
                           "--circuit-cooldown", "2s")
    client = hvac.Client(url=emulator.address, token=TOKEN)
    try:
        _until(port, 200)
        client.sys.seal()
        assert "provider backend" in _until(port, 503)
        client.sys.submit_unseal_key("emulated-key")
        _until(port, 200)
    finally:
        proc.send_signal(signal.SIGTERM)
        workspace.collect(proc, timeout=30)
        workspace.extra_values += emulator.every_value()
        emulator.stop()
    assert proc.returncode == 0
