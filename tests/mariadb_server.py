"""A real MariaDB for the tests: ``mariadb-install-db`` into a temp datadir, then ``mariadbd`` on 127.0.0.1.

One server per test session (per xdist worker) at a free port, with the general query log on (tests scan it
for plaintext passwords). ``root`` has a random password over TCP; tests use unique account names.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.pg_server import free_port
from tests.servers import require_binary

__all__ = ["MariadbServer", "mariadb_server", "start_mariadb"]


@dataclass
class MariadbServer:
    """A running server; ``password`` is ``root``'s (for TCP logins from 127.0.0.1)."""

    root: Path
    port: int
    password: str
    process: subprocess.Popen[bytes] = field(repr=False)
    host: str = "127.0.0.1"
    superuser: str = "root"

    @property
    def general_log(self) -> Path:
        return self.root / "general.log"

    def log_text(self) -> str:
        return self.general_log.read_text(errors="replace") if self.general_log.exists() else ""

    def connect(self, user: str | None = None, password: str | None = None) -> Any:
        """A PyMySQL connection (autocommit), as root unless told otherwise."""
        import pymysql

        return pymysql.connect(host=self.host, port=self.port, user=user or self.superuser,
                               password=password if user else self.password, autocommit=True, connect_timeout=10)

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement as root; the rows it returned."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, params or None)
                return list(cur.fetchall())
        finally:
            conn.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def start_mariadb() -> MariadbServer:
    """Initialise and start a fresh server (skips when MariaDB is not installed)."""
    install_db = require_binary("mariadb-install-db", "mariadb-server")
    mariadbd = require_binary("mariadbd", "mariadb-server", search=("/usr/sbin",))
    root = Path(tempfile.mkdtemp(prefix="rotator-mariadb-"))
    user = ["--user=root"] if os.geteuid() == 0 else []
    subprocess.run([install_db, "--no-defaults", f"--datadir={root / 'data'}", "--skip-test-db",
                    "--auth-root-authentication-method=normal", "--skip-name-resolve", *user],
                   check=True, capture_output=True, timeout=180)
    port, password, socket = free_port(), secrets.token_urlsafe(18), root / "mysqld.sock"
    proc = subprocess.Popen(
        [mariadbd, "--no-defaults", f"--datadir={root / 'data'}", f"--socket={socket}", f"--port={port}",
         "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin", f"--pid-file={root / 'pid'}",
         f"--log-error={root / 'error.log'}", "--general-log=1", f"--general-log-file={root / 'general.log'}",
         "--innodb-buffer-pool-size=32M", "--innodb-flush-log-at-trx-commit=0", "--max-connections=300", *user],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import pymysql

    deadline = time.monotonic() + 60
    while True:
        try:
            conn = pymysql.connect(unix_socket=str(socket), user="root", autocommit=True, connect_timeout=5)
            break
        except pymysql.err.OperationalError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                log = (root / "error.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"mariadbd did not start:\n{log}") from None
            time.sleep(0.1)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_off = 1")  # keep root's own password out of the general log
            cur.execute("ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY %s", (password,))
    finally:
        conn.close()
    return MariadbServer(root=root, port=port, password=password, process=proc)


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariadbServer]:
    """One MariaDB per test session (see the module docstring)."""
    server = start_mariadb()
    try:
        yield server
    finally:
        server.stop()
