"""A real ``redis-server`` for the redis target tests: 127.0.0.1, a free port, a temp dir, ACL users on disk.

Two flavours, both with ``user default off`` and a least-privilege admin user whose rules are exactly the ones
the README documents (so the tests prove that list is enough):

* ``redis_server`` (session): users in an ``aclfile`` (``persist: acl_save``);
* ``redis_conf_server`` (session): users in ``redis.conf`` itself (``persist: config_rewrite``).

``restart()`` stops the server (SHUTDOWN NOSAVE via SIGTERM) and starts it again on the same port and files, so
a test can prove an ACL change survives a restart. Skips with one line when ``redis-server`` is missing.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import require_binary

__all__ = ["ADMIN_RULES_ACL_SAVE", "ADMIN_RULES_REWRITE", "RedisServer", "redis_conf_server", "redis_server"]

ADMIN_RULES_ACL_SAVE = "resetchannels -@all +acl|setuser +acl|getuser +acl|save +ping"
ADMIN_RULES_REWRITE = "resetchannels -@all +acl|setuser +acl|getuser +config|rewrite +ping"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process in ``root``; ``admin_password`` logs in as ``rotator``."""

    def __init__(self, binary: str, root: Path, *, aclfile: bool) -> None:
        self.binary, self.root, self.aclfile = binary, root, aclfile
        self.port = free_port()
        self.admin_user = "rotator"
        self.admin_password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None
        digest = hashlib.sha256(self.admin_password.encode()).hexdigest()
        rules = ADMIN_RULES_ACL_SAVE if aclfile else ADMIN_RULES_REWRITE
        users = f"user default off\nuser {self.admin_user} on #{digest} {rules}\n"
        lines = [f"port {self.port}", "bind 127.0.0.1", f'dir "{root}"', 'save ""', "appendonly no",
                 'logfile "redis.log"', "daemonize no"]
        if aclfile:
            (root / "users.acl").write_text(users)
            lines.append(f'aclfile "{root / "users.acl"}"')
        else:
            lines += users.strip().splitlines()
        self.conf = root / "redis.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, str(self.conf)], cwd=self.root,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.root / "redis.log").read_text() if (self.root / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: {log[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start listening within 30s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _server(tmp_path_factory: pytest.TempPathFactory, *, aclfile: bool) -> Iterator[RedisServer]:
    binary = require_binary("redis-server", "redis-server")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"), aclfile=aclfile)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server whose users live in an aclfile (``persist: acl_save``)."""
    yield from _server(tmp_path_factory, aclfile=True)


@pytest.fixture(scope="session")
def redis_conf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server whose users live in redis.conf (``persist: config_rewrite``)."""
    yield from _server(tmp_path_factory, aclfile=False)
