"""The real CLI rotating real PostgreSQL roles: create, rotate with grace, rollback, revoke, and the failure
exit codes, with every password scanned for in all output, the audit log and the server's statement log."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from rotator.keyset import State
from tests.conftest import Workspace
from tests.pg_server import PgServer, free_port

MANIFEST = """
version: 1
defaults: {{provider: local, every: 30d, grace: 1d}}
providers:
  local: {{type: local, path: .rotator/store.db}}
targets:
  bootstrap:
    type: postgres
    host: 127.0.0.1
    port: {boot_port}
    database: postgres
    admin: {{username: postgres, password: "${{PGADMIN_PASSWORD}}"}}
  app-db:
    type: postgres
    host: 127.0.0.1
    port: {port}
    database: postgres
    admin: {{secret: app-db/admin}}
    url: "postgresql://{{username}}:{{password}}@{{host}}:{{port}}/{{database}}"
secrets:
  - name: app-db/admin
    kind: password
    grace: 0s
    target: {{name: bootstrap, username: {admin}, strategy: single}}
  - name: app-db/app
    kind: password
    length: 32
    target: {{name: app-db, username: {app}, strategy: alternating}}
"""


class Db:
    """One test's roles on the shared server, and what the workspace's store says about them."""

    def __init__(self, pg: PgServer, ws: Workspace) -> None:
        self.pg, self.ws = pg, ws
        suffix = uuid.uuid4().hex[:8]
        self.admin, self.app = f"rotator_admin_{suffix}", f"app_{suffix}"
        pg.sql(f"CREATE ROLE {self.admin} LOGIN CREATEROLE")  # step 1 of the README walkthrough
        ws.env["PGADMIN_PASSWORD"] = pg.password
        ws.extra_values.append(pg.password)
        self.write()

    @classmethod
    def reader(cls, pg: PgServer, ws: Workspace) -> Db:
        """Only the store and login helpers, for a test that writes its own manifest."""
        db = cls.__new__(cls)
        db.pg, db.ws = pg, ws
        return db

    def write(self, *, boot_port: int | None = None, port: int | None = None) -> None:
        self.ws.write_manifest(MANIFEST.format(boot_port=boot_port or self.pg.port, port=port or self.pg.port,
                                               admin=self.admin, app=self.app))

    def docs(self, name: str) -> dict[State, list[dict[str, Any]]]:
        """The credential documents of ``name`` by state, read from the local store."""
        from rotator.localstore import LocalConfig, LocalProvider
        from rotator.provider import SecretRef

        provider = LocalProvider(name="scan", config=LocalConfig(type="local", path=".rotator/store.db"),
                                 base_dir=self.ws.root)
        try:
            keyset = provider.read(SecretRef(name, name))
        finally:
            provider.close()
        assert keyset is not None
        found: dict[State, list[dict[str, Any]]] = {}
        for version in keyset.versions:
            if version.value is not None:
                doc = json.loads(version.value.reveal())
                found.setdefault(version.state, []).append(doc)
                self.ws.extra_values.append(doc["password"])
        return found

    def current(self, name: str = "app-db/app") -> dict[str, Any]:
        return self.docs(name)[State.CURRENT][0]

    def logs_in(self, doc: dict[str, Any]) -> bool:
        import psycopg

        try:
            with psycopg.connect(doc.get("url") or _url(doc), connect_timeout=10) as conn:
                conn.execute("SELECT 1")
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc) or "not permitted to log in" in str(exc):
                return False
            raise
        return True


@pytest.fixture
def db(pg_server: PgServer, workspace: Workspace) -> Db:
    return Db(pg_server, workspace)


def _ok(result: Any) -> None:
    assert result.code == 0, result.out + result.err


def test_create_rotate_rollback_revoke(db: Db, workspace: Workspace, pg_server: PgServer) -> None:
    """The README walkthrough on a real server: after create the stored current logs in; during grace the
    previous does too; rollback restores a credential that logs in; --revoke-previous refuses the old one at
    once. No password appears in any output, the audit log or PostgreSQL's statement log."""
    _ok(workspace.cli("run", "--concurrency", "1"))
    first = db.current()
    assert first["username"] == db.app
    assert set(first) >= {"username", "password", "host", "port", "database", "url"}
    assert db.logs_in(first)
    members = pg_server.sql("SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                            "JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = %s ORDER BY 1", f"{db.app}_group")
    assert members == [(db.app,), (f"{db.app}_clone",)]

    _ok(workspace.cli("rotate", "app-db/app", "--now"))
    second = db.current()
    assert second["username"] == f"{db.app}_clone"
    assert db.logs_in(second)
    assert db.logs_in(first)  # grace: the previous identity still logs in

    _ok(workspace.cli("rollback", "app-db/app"))
    restored = db.current()
    assert restored["password"] == first["password"]
    assert db.logs_in(restored)

    _ok(workspace.cli("rotate", "app-db/app", "--now", "--revoke-previous"))
    latest = db.current()
    assert db.logs_in(latest)
    assert not db.logs_in(restored)  # revoked at once, not at the end of the grace
    log = pg_server.log_text()
    for doc in (first, second, latest):
        assert doc["password"] not in log


def test_admin_secret_rotates_and_keeps_administering(db: Db, workspace: Workspace) -> None:
    """The admin credential is itself a managed secret (strategy single): after rotating it, the app-db
    target logs in with the new admin password and rotates the app."""
    _ok(workspace.cli("run", "--concurrency", "1"))
    old_admin = db.current("app-db/admin")
    _ok(workspace.cli("rotate", "app-db/admin", "--now"))
    new_admin = db.current("app-db/admin")
    assert new_admin["password"] != old_admin["password"]
    assert not db.logs_in(old_admin)
    _ok(workspace.cli("rotate", "app-db/app", "--now"))
    assert db.logs_in(db.current())


def _url(doc: dict[str, Any]) -> str:
    from urllib.parse import quote

    return (f"postgresql://{quote(doc['username'], safe='')}:{quote(doc['password'], safe='')}"
            f"@{doc['host']}:{doc['port']}/{doc['database']}")


@pytest.mark.parametrize("failure", ["unreachable", "wrong-admin"])
def test_failures_exit_4_naming_the_target_and_leave_the_store(db: Db, workspace: Workspace,
                                                               failure: str) -> None:
    """A target that is down, or a wrong admin password: exit 4, one line naming the target, the store
    unchanged and the stored credential still logging in; once fixed, the rotation goes through."""
    _ok(workspace.cli("run", "--concurrency", "1"))
    before = db.docs("app-db/admin")
    if failure == "unreachable":
        db.write(boot_port=free_port())
        result = workspace.cli("rotate", "app-db/admin", "--now")
    else:
        result = workspace.cli("rotate", "app-db/admin", "--now", env={"PGADMIN_PASSWORD": "wrong-admin-pw-123"})
    assert result.code == 4, result.out + result.err
    assert "bootstrap" in result.out + result.err
    lines = [line for line in (result.out + result.err).splitlines() if line.startswith("FAILED")]
    assert len(lines) == 1
    assert "target 'bootstrap'" in lines[0]
    assert db.docs("app-db/admin") == before  # nothing staged, nothing lost
    assert db.logs_in(before[State.CURRENT][0])
    db.write()
    _ok(workspace.cli("rotate", "app-db/admin", "--now"))  # once fixed, the rotation goes through
    assert db.current("app-db/admin") != before[State.CURRENT][0]
    assert db.logs_in(db.current("app-db/admin"))


def test_kill_9_during_rotate_then_run_keeps_logins_working(db: Db, workspace: Workspace) -> None:
    """10 `rotate --now` processes killed at random moments, each followed by `rotator run`: the stored
    current always logs in, every previous still in grace does too, and nothing is left pending."""
    import random
    import signal
    import time

    _ok(workspace.cli("run", "--concurrency", "1"))
    rng = random.Random(20261204)
    killed = 0
    for _ in range(10):
        proc = workspace.spawn("rotate", "app-db/app", "--now")
        time.sleep(rng.uniform(0.3, 1.6))
        proc.send_signal(signal.SIGKILL)
        workspace.collect(proc)
        killed += proc.returncode == -signal.SIGKILL
        _ok(workspace.cli("run", "--concurrency", "1"))
        docs = db.docs("app-db/app")
        assert State.PENDING not in docs
        assert len(docs[State.CURRENT]) == 1
        assert db.logs_in(docs[State.CURRENT][0])
        for previous in docs.get(State.PREVIOUS, []):
            assert db.logs_in(previous)
    assert killed >= 3, killed
    _ok(workspace.cli("audit", "verify"))


SELF_ADMIN = """
version: 1
defaults: {{provider: local, every: 30d, grace: 1d}}
providers:
  local: {{type: local, path: .rotator/store.db}}
targets:
  app-db:
    type: postgres
    host: 127.0.0.1
    port: {port}
    database: postgres
    admin: {admin}
secrets:
  - name: app-db/admin
    kind: password
    grace: 0s
    target: {{name: app-db, username: {user}, strategy: single}}
  - name: app-db/app
    kind: password
    target: {{name: app-db, username: {app}, strategy: alternating}}
"""


def test_admin_rotates_its_own_password(pg_server: PgServer, workspace: Workspace) -> None:
    """The README's bootstrap: the first run uses the admin password given once (from the environment) and
    replaces it with a managed one (ALTER ROLE on itself); then `admin: {secret: ...}` administers the target,
    and rotating the admin secret keeps working. The bootstrap password is refused afterwards."""
    import secrets as pysecrets

    user, app = f"rotator_admin_{uuid.uuid4().hex[:8]}", f"app_{uuid.uuid4().hex[:8]}"
    bootstrap = pysecrets.token_urlsafe(18)
    pg_server.sql(f"CREATE ROLE {user} LOGIN CREATEROLE PASSWORD '{bootstrap}'")
    workspace.env["PGADMIN_PASSWORD"] = bootstrap
    workspace.extra_values.append(bootstrap)
    given = '{username: ' + user + ', password: "${PGADMIN_PASSWORD}"}'
    workspace.write_manifest(SELF_ADMIN.format(port=pg_server.port, admin=given, user=user, app=app))
    _ok(workspace.cli("run", "--concurrency", "1"))
    db = Db.reader(pg_server, workspace)
    first = db.current("app-db/admin")
    assert not db.logs_in({**first, "password": bootstrap})
    workspace.write_manifest(SELF_ADMIN.format(port=pg_server.port, admin="{secret: app-db/admin}", user=user,
                                               app=app))
    _ok(workspace.cli("rotate", "app-db/admin", "--now"))
    second = db.current("app-db/admin")
    assert second["password"] != first["password"]
    assert db.logs_in(second)
    assert not db.logs_in(first)
    _ok(workspace.cli("rotate", "app-db/app", "--now"))
    assert db.logs_in(db.current())
