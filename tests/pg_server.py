"""A real PostgreSQL 15 for the tests: ``initdb`` and ``pg_ctl`` as the ``postgres`` user in a temp dir.

One server per test session (per xdist worker), on 127.0.0.1 at a free port, with
``password_encryption=scram-sha-256``, ``scram-sha-256`` for TCP logins in pg_hba and ``log_statement=all``
(tests scan the log for plaintext passwords). Tests use unique role names, so they share the server.
Also used by ``benchmarks/bench_targets_pg.py``.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import require_binary

__all__ = ["PgServer", "free_port", "pg_server", "start_postgres"]

_SEARCH = ("/usr/lib/postgresql/*/bin",)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    """A running server; ``password`` is the ``postgres`` superuser's."""

    root: Path
    port: int
    password: str
    pg_ctl: str
    host: str = "127.0.0.1"
    superuser: str = "postgres"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self, user: str | None = None, password: str | None = None, dbname: str = "postgres") -> Any:
        """A psycopg connection (autocommit), as the superuser unless told otherwise."""
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, dbname=dbname, user=user or self.superuser,
                               password=password if user else self.password, autocommit=True, connect_timeout=10)

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run one statement as the superuser; the rows it returned (empty for DDL)."""
        with self.connect() as conn:
            cur = conn.execute(statement, params or None)
            return list(cur.fetchall()) if cur.description else []

    def stop(self) -> None:
        _as_postgres([self.pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_postgres(argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)


def start_postgres(*, log_statement: str = "all", extra: tuple[str, ...] = ()) -> PgServer:
    """Initialise and start a fresh server (skips when PostgreSQL is not installed)."""
    initdb = require_binary("initdb", "postgresql", search=_SEARCH)
    pg_ctl = require_binary("pg_ctl", "postgresql", search=_SEARCH)
    root = Path(tempfile.mkdtemp(prefix="rotator-pg-"))
    password = secrets.token_urlsafe(18)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    _as_postgres([initdb, "-D", str(root / "data"), "-U", "postgres", f"--pwfile={pwfile}", "-E", "UTF8",
                  "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync"])
    pwfile.unlink()
    port = free_port()
    options = ["-c listen_addresses=127.0.0.1", f"-c port={port}", f"-c unix_socket_directories={root}",
               "-c password_encryption=scram-sha-256", f"-c log_statement={log_statement}", "-c fsync=off",
               "-c synchronous_commit=off", "-c full_page_writes=off", "-c max_connections=200", *extra]
    _as_postgres([pg_ctl, "-D", str(root / "data"), "-l", str(root / "postgres.log"), "-w", "-t", "60",
                  "-o", " ".join(options), "start"])
    return PgServer(root=root, port=port, password=password, pg_ctl=pg_ctl)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL 15 per test session (see the module docstring)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()
