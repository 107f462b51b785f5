"""The real `rotator` CLI against the Vault emulator running as a separate process: rotation, kill -9 at
random moments then `run`, and a sealed server (exit 4 naming the address). Every value Vault ever held is
added to the workspace canary scan."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from rotator_vault.auth import TokenAuth
from rotator_vault.provider import VaultConfig, VaultProvider

from rotator.generators import matches_kind
from rotator.keyset import Keyset, State
from rotator.provider import SecretRef
from tests.conftest import Workspace

pytestmark = pytest.mark.xdist_group("processes")
TOKEN = "hvs.cli-test-root-token"
MANIFEST = """
version: 1
defaults: {provider: vault, every: 30d, grace: 1d, notice: 1d, stale_pending_after: 1h}
providers:
  vault: {type: vault, url: "${VAULT_ADDR}", auth: {method: token}, path_prefix: cli}
secrets:
  - name: api
    kind: api_key
    prefix: "k_"
    verify: {command: ["sh", "-c", "cat >/dev/null; sleep 0.1"]}
"""
REF = SecretRef(name="api", path="api")


class Emulator:
    """``tests/vault_emulator.py`` as its own process."""

    def __init__(self, latency_ms: float = 0) -> None:
        script = Path(__file__).with_name("vault_emulator.py")
        self.proc = subprocess.Popen([sys.executable, str(script), "--token", TOKEN, "--latency-ms",
                                      str(latency_ms)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.address = self.proc.stdout.readline().strip()
        self.client = hvac.Client(url=self.address, token=TOKEN)

    def every_value(self) -> list[str]:
        """Every value stored in any KV version of any document (for the canary scan)."""
        kv, found = self.client.secrets.kv.v2, []
        try:
            keys = kv.list_secrets("cli")["data"]["keys"]
        except hvac.exceptions.InvalidPath:  # nothing was ever written
            return []
        while keys:
            key = keys.pop()
            if key.endswith("/"):  # a folder, e.g. _rotator/ holding the audit key
                keys += [key + sub for sub in kv.list_secrets(f"cli/{key}")["data"]["keys"]]
                continue
            versions = kv.read_secret_metadata(f"cli/{key}")["data"]["versions"]
            for number in versions:
                doc = kv.read_secret_version(f"cli/{key}", version=int(number),
                                             raise_on_deleted_version=True)["data"]["data"]
                found += [doc[k] for k in ("current", "previous", "pending") if k in doc]
                found += list(doc.get("_rotator", {}).get("retired", {}).values())
        return found

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def vault_ws(workspace: Workspace, tmp_path: Path) -> Iterator[tuple[Workspace, Emulator]]:
    """A workspace whose manifest points at a fresh emulator process (20 ms per request)."""
    emulator = Emulator(latency_ms=20)
    workspace.env.update(VAULT_ADDR=emulator.address, VAULT_TOKEN=TOKEN)
    workspace.write_manifest(MANIFEST)
    try:
        yield workspace, emulator
        workspace.extra_values += emulator.every_value()
    finally:
        emulator.stop()


def read(emulator: Emulator, base_dir: Path) -> Keyset:
    """The keyset as stored, read with a provider of our own."""
    config = VaultConfig(url=emulator.address, auth=TokenAuth(token_env="ROTATOR_CLI_TEST_TOKEN"),
                         path_prefix="cli")
    provider = VaultProvider(name="check", config=config, base_dir=base_dir)
    try:
        keyset = provider.read(REF)
    finally:
        provider.close()
    assert keyset is not None
    return keyset


def consistent(keyset: Keyset) -> list[str]:
    """What is wrong with ``keyset`` (empty when there is exactly one valid current and nothing pending)."""
    states = [v.state for v in keyset.versions]
    problems = [] if states.count(State.CURRENT) == 1 else [f"currents: {states}"]
    current = keyset.current
    if current is None or current.value is None or not matches_kind("api_key", current.value.reveal()):
        problems.append("current value missing or invalid")
    return problems + (["pending left"] if keyset.pending is not None else [])


@pytest.fixture(autouse=True)
def _reader_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """The token our own checking provider uses."""
    monkeypatch.setenv("ROTATOR_CLI_TEST_TOKEN", TOKEN)


def test_rotate_now_through_vault(vault_ws: tuple[Workspace, Emulator], tmp_path: Path) -> None:
    """`run` creates the secret in Vault; `rotate --now` makes a new current with the old one previous."""
    ws, emulator = vault_ws
    assert ws.cli("run").code == 0
    first = read(emulator, tmp_path)
    result = ws.cli("rotate", "--now", "api")
    assert result.code == 0, result.err
    second = read(emulator, tmp_path)
    assert consistent(second) == []
    assert second.previous is not None
    assert second.previous.id == first.current.id
    status = ws.cli("status", "api", "-o", "json").json()
    assert [v["state"] for v in status["secrets"][0]["versions"]] == ["previous", "current"]


@pytest.mark.slow
def test_kill_9_at_random_moments_then_run(vault_ws: tuple[Workspace, Emulator], tmp_path: Path) -> None:
    """10 rotations killed at random instants: each `run` after it leaves exactly one valid current and no
    pending, and a watcher never sees a keyset without one valid current."""
    ws, emulator = vault_ws
    # every trial is a forced rotation: a 1s grace has ended before the next one, which otherwise would
    # have to cut it short (and is refused for that)
    ws.write_manifest(MANIFEST.replace("grace: 1d", "grace: 1s"))
    assert ws.cli("run").code == 0
    started = time.monotonic()
    assert ws.cli("rotate", "--now", "api").code == 0
    full = time.monotonic() - started
    bad: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen = read(emulator, tmp_path)
            bad.extend(p for p in consistent(seen) if p != "pending left")  # pending is fine mid-rotation
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rng = random.Random(20261123)
    rotations = 0
    try:
        for trial in range(10):
            time.sleep(1.1)  # the 1s grace of the value before has ended: this rotation is not refused
            before = read(emulator, tmp_path)
            proc = ws.spawn("rotate", "--now", "api")
            if trial % 2:  # anywhere from start-up to the end
                time.sleep(rng.uniform(0.3 * full, 1.1 * full))
            else:  # once a value is staged: during verify, promote or the metadata mirror
                while read(emulator, tmp_path).pending is None and proc.poll() is None:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, 0.12))
            proc.kill()
            ws.collect(proc)
            result = ws.cli("run")
            assert result.code == 0, result.out + result.err
            after = read(emulator, tmp_path)
            assert consistent(after) == []
            rotations += after.current.id != before.current.id  # type: ignore[union-attr]
    finally:
        stop.set()
        watcher.join()
    assert bad == []
    assert rotations >= 5  # every kill after staging was finished by `run`


def test_sealed_vault_exits_4_with_the_address(vault_ws: tuple[Workspace, Emulator], tmp_path: Path) -> None:
    """A sealed Vault: `rotate` exits 4 naming the address, nothing changes; after unseal `run` works."""
    ws, emulator = vault_ws
    assert ws.cli("run").code == 0
    before = read(emulator, tmp_path)
    emulator.client.sys.seal()
    result = ws.cli("rotate", "--now", "api")
    assert result.code == 4
    assert f"vault at {emulator.address} is sealed" in result.out + result.err
    emulator.client.sys.submit_unseal_key("key")
    assert read(emulator, tmp_path) == before
    assert ws.cli("rotate", "--now", "api").code == 0
    assert consistent(read(emulator, tmp_path)) == []


def test_bad_token_exits_4(vault_ws: tuple[Workspace, Emulator]) -> None:
    """An invalid token is exit 4 with a message naming the path, and the token is never printed."""
    ws, _ = vault_ws
    result = ws.cli("run", env={"VAULT_TOKEN": "hvs.not-a-valid-token"})
    assert result.code == 4
    assert "permission denied on secret/data/cli/api (the token is invalid or expired)" in result.out + result.err
    assert "hvs.not-a-valid-token" not in result.out + result.err


def test_foreign_value_needs_adopt(vault_ws: tuple[Workspace, Emulator], tmp_path: Path) -> None:
    """A value rotator did not write fails the run (exit 1) unless the secret says ``adopt: true``."""
    ws, emulator = vault_ws
    emulator.client.secrets.kv.v2.create_or_update_secret("cli/api", {"value": "k_legacy_value_0001"})
    refused = ws.cli("run")
    assert refused.code == 1
    assert "set 'adopt: true'" in refused.out + refused.err
    ws.write_manifest(MANIFEST.replace('    prefix: "k_"', '    prefix: "k_"\n    adopt: true'))
    assert ws.cli("run").code == 0
    adopted = read(emulator, tmp_path)
    assert adopted.managed
    assert adopted.current.value.reveal() == "k_legacy_value_0001"  # type: ignore[union-attr]
