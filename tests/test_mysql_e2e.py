"""The real CLI rotating real MariaDB accounts: alternating through create, grace, rollback and revoke, and a
dual secret refused with one line that names the target and suggests alternating."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from rotator.keyset import State
from tests.conftest import Workspace
from tests.mariadb_server import MariadbServer

MANIFEST = """
version: 1
defaults: {{provider: local, every: 30d, grace: 1d}}
providers:
  local: {{type: local, path: .rotator/store.db}}
targets:
  shop-db:
    type: mysql
    host: 127.0.0.1
    port: {port}
    admin: {{username: root, password: "${{MYSQL_ADMIN_PASSWORD}}"}}
secrets:
  - name: shop-db/app
    kind: password
    target: {{name: shop-db, username: {app}, strategy: {strategy}}}
"""


def _setup(server: MariadbServer, ws: Workspace, strategy: str) -> str:
    app = f"shop_{uuid.uuid4().hex[:8]}"
    ws.env["MYSQL_ADMIN_PASSWORD"] = server.password
    ws.extra_values.append(server.password)
    ws.write_manifest(MANIFEST.format(port=server.port, app=app, strategy=strategy))
    return app


def _docs(ws: Workspace) -> dict[State, list[dict[str, Any]]]:
    from rotator.localstore import LocalConfig, LocalProvider
    from rotator.provider import SecretRef

    provider = LocalProvider(name="scan", config=LocalConfig(type="local", path=".rotator/store.db"),
                             base_dir=ws.root)
    try:
        keyset = provider.read(SecretRef("shop-db/app", "shop-db/app"))
    finally:
        provider.close()
    found: dict[State, list[dict[str, Any]]] = {}
    for version in keyset.versions if keyset else ():
        if version.value is not None:
            doc = json.loads(version.value.reveal())
            found.setdefault(version.state, []).append(doc)
            ws.extra_values.append(doc["password"])
    return found


def _logs_in(server: MariadbServer, doc: dict[str, Any]) -> bool:
    import pymysql

    try:
        server.connect(doc["username"], doc["password"]).close()
    except pymysql.err.OperationalError as exc:
        if exc.args[0] in (1045, 4151):
            return False
        raise
    return True


def test_alternating_create_rotate_rollback_revoke(mariadb_server: MariadbServer, workspace: Workspace) -> None:
    """After create the stored current logs in; during grace the previous does too; rollback restores a
    login; --revoke-previous refuses the old one at once; no password in any output or the general log."""
    app = _setup(mariadb_server, workspace, "alternating")
    result = workspace.cli("run")
    assert result.code == 0, result.out + result.err
    first = _docs(workspace)[State.CURRENT][0]
    assert first["username"] == app
    assert _logs_in(mariadb_server, first)
    assert workspace.cli("rotate", "shop-db/app", "--now").code == 0
    second = _docs(workspace)[State.CURRENT][0]
    assert second["username"] == f"{app}_clone"
    assert _logs_in(mariadb_server, second)
    assert _logs_in(mariadb_server, first)
    assert workspace.cli("rollback", "shop-db/app").code == 0
    restored = _docs(workspace)[State.CURRENT][0]
    assert restored["password"] == first["password"]
    assert _logs_in(mariadb_server, restored)
    assert workspace.cli("rotate", "shop-db/app", "--now", "--revoke-previous").code == 0
    latest = _docs(workspace)[State.CURRENT][0]
    assert _logs_in(mariadb_server, latest)
    assert not _logs_in(mariadb_server, restored)
    log = mariadb_server.log_text()
    assert all(doc["password"] not in log for doc in (first, second, latest))


@pytest.mark.parametrize("command", [("run",), ("rotate", "shop-db/app", "--now")])
def test_dual_on_mariadb_fails_with_one_clear_line(mariadb_server: MariadbServer, workspace: Workspace,
                                                   command: tuple[str, ...]) -> None:
    """strategy dual on MariaDB: exit 1, one FAILED line naming the secret and the target and suggesting
    alternating; nothing stored, no account created."""
    app = _setup(mariadb_server, workspace, "dual")
    result = workspace.cli(*command)
    assert result.code == 1, result.out + result.err
    failed = [line for line in (result.out + result.err).splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1, result.out + result.err
    assert "target 'shop-db'" in failed[0]
    assert "MariaDB" in failed[0]
    assert "alternating" in result.out + result.err
    assert _docs(workspace) == {}
    assert mariadb_server.sql("SELECT COUNT(*) FROM mysql.user WHERE User = %s", app) == [(0,)]
