"""Shared fixtures: a workspace that runs the real `rotator` CLI in subprocesses and, at teardown, scans
everything those processes printed or wrote for every secret value in the store (the canary scan)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.mariadb_server import mariadb_server  # noqa: F401  (session fixtures: one database server per session)
from tests.pg_server import pg_server  # noqa: F401
from tests.redis_server import redis_conf_server, redis_server, redis_tls_server  # noqa: F401 - session fixtures

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    """A finished CLI run."""

    args: Sequence[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Workspace:
    """A temp folder with a manifest; every CLI run's output is kept for the canary scan."""

    root: Path
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)
    extra_values: list[str] = field(default_factory=list)

    @property
    def manifest(self) -> Path:
        return self.root / "rotation.yaml"

    def write_manifest(self, body: str) -> Path:
        self.manifest.write_text(textwrap.dedent(body))
        return self.manifest

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "rotator", "-f", str(self.manifest), *args]

    def cli(self, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> Result:
        proc = subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, env={**self.env, **(env or {})}, check=False)
        self.outputs += [proc.stdout, proc.stderr]
        return Result(args, proc.returncode, proc.stdout, proc.stderr)

    def spawn(self, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
        """Start the CLI without waiting (daemon, kill -9 trials); call ``collect`` with it afterwards."""
        return subprocess.Popen(self.command(*args), cwd=self.root, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)

    def collect(self, proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
        """Wait for ``proc``; if it hangs, have it dump its thread stacks (SIGUSR1), kill it, and fail."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            import signal

            proc.send_signal(signal.SIGUSR1)  # the daemon registers faulthandler on SIGUSR1
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            self.outputs += [out, err]
            raise AssertionError(f"{proc.args[-6:]} did not exit in {timeout}s; its stacks:\n{err[-6000:]}") from None
        self.outputs += [out, err]
        return out, err

    def store_values(self) -> list[str]:
        """Every value of every version held in the workspace's local stores."""
        from rotator.localstore import LocalConfig, LocalProvider

        values: list[str] = []
        for db in self.root.rglob("*.db"):
            provider = LocalProvider(name="scan", config=LocalConfig(type="local", path=str(db)),
                                     base_dir=self.root)
            try:
                for path in provider.list():
                    from rotator.provider import SecretRef

                    keyset = provider.read(SecretRef(path, path))
                    values += [v.value.reveal() for v in keyset.versions if keyset and v.value]
            finally:
                provider.close()
        return values

    def scan(self) -> None:
        """Fail if any secret value appears in any output, audit record or log file of the workspace."""
        texts = list(self.outputs)
        for path in self.root.rglob("*"):
            if path.is_file() and (path.suffix in (".jsonl", ".log", ".txt") or ".jsonl." in path.name):
                texts.append(path.read_text(errors="replace"))
        values = [v for v in self.store_values() + self.extra_values if len(v) >= 8]
        for value in values:
            for text in texts:
                assert value not in text, "a secret value leaked into output or audit"
            for line in value.splitlines():  # PEM keys: no body line may leak either
                if len(line) >= 16 and "-----" not in line:
                    assert all(line not in text for text in texts), "a PEM line leaked"


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    """A workspace whose outputs are canary-scanned when the test ends."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROTATOR_", "VAULT_", "AWS_"))}
    env.update(PYTHONPATH=str(REPO), ROTATOR_AUDIT_LOG=str(tmp_path / "audit.jsonl"), COLUMNS="200")
    ws = Workspace(tmp_path, env)
    yield ws
    ws.scan()


@contextlib.contextmanager
def memory_runtime(tmp_path: Path, manifest: str) -> Iterator[tuple[Any, Any, str]]:
    """An in-process runtime on a fresh memory provider (``{store}`` in ``manifest``) with a fake clock,
    every secret created; yields (runtime, clock, store name)."""
    from rotator.app import build_runtime
    from rotator.testing.clock import FakeClock
    from rotator.testing.memory import MemoryProvider

    name = f"mem{uuid.uuid4().hex[:8]}"
    path = tmp_path / "rotation.yaml"
    path.write_text(manifest.format(store=name))
    clock = FakeClock()
    rt = build_runtime(path, actor="test", clock=clock, notify=False)
    rt.engine.reconcile(list(rt.manifest.secrets.values()))
    try:
        yield rt, clock, name
    finally:
        rt.close()
        MemoryProvider.reset(name)
