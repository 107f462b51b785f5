"""The rotation Lambda rotating an RDS-style PostgreSQL secret through the postgres target (issue 13 item 7):
moto for Secrets Manager, a real PostgreSQL 15 for the logins."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path

import boto3
import pytest
from rotator_aws.lambda_handler import STEPS, handler
from rotator_postgres import PostgresConfig, PostgresTarget

from rotator.errors import CredentialRefused, ManifestError
from rotator.target import Binding, Credential, Strategy
from tests.moto_server import GatedMotoServer, aws_env, moto
from tests.pg_server import PgServer
from tests.test_aws_lambda import REGION, begin_rotation, event, lam

__all__ = ["aws_env", "lam", "moto"]


def _client(server: GatedMotoServer) -> object:
    return boto3.client("secretsmanager", endpoint_url=server.endpoint, region_name=REGION)


def _target(pg: PgServer) -> PostgresTarget:
    admin = Credential({"username": pg.superuser, "password": pg.password})
    return PostgresTarget(name="t", config=PostgresConfig(host=pg.host, port=pg.port), base_dir=Path("."),
                          admin=lambda: [admin])


def _secret(server: GatedMotoServer, pg: PgServer, doc: dict[str, object], tags: dict[str, str]) -> str:
    name = f"rds/{uuid.uuid4().hex}"
    client = _client(server)
    client.create_secret(Name=name, SecretString=json.dumps(doc),  # type: ignore[attr-defined]
                         Tags=[{"Key": k, "Value": v} for k, v in {"rotator:kind": "password", **tags}.items()])
    return name


def _rotate(server: GatedMotoServer, name: str) -> dict[str, object]:
    """One full rotation, every step retried once (AWS retries); the new AWSCURRENT document."""
    token = uuid.uuid4().hex
    begin_rotation(name, token)
    for step in STEPS:
        handler(event(step, name, token), None)
        handler(event(step, name, token), None)
    client = _client(server)
    labels = client.describe_secret(SecretId=name)["VersionIdsToStages"]  # type: ignore[attr-defined]
    assert "AWSCURRENT" in labels[token]
    answer = client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")  # type: ignore[attr-defined]
    return dict(json.loads(answer["SecretString"]))


def _login(pg: PgServer, doc: dict[str, object]) -> None:
    with pg.connect(str(doc["username"]), str(doc["password"]), dbname=str(doc["dbname"])) as conn:
        conn.execute("SELECT 1")


def test_alternating_rotation_keeps_the_previous_login(lam: GatedMotoServer, pg_server: PgServer) -> None:
    """Two Lambda rotations alternate app -> app_clone -> app; after each, current and previous both log in,
    and every other field of the document (host, port, dbname, engine) is kept."""
    app = f"lam_{uuid.uuid4().hex[:8]}"
    target, binding = _target(pg_server), Binding("s", "t", app, Strategy.ALTERNATING)
    first = Credential({"username": app, "password": secrets.token_urlsafe(18)})
    target.prepare(binding)
    target.enable(binding, first)
    target.close()
    admin = _secret(lam, pg_server, {"username": pg_server.superuser, "password": pg_server.password}, {})
    doc = {"engine": "postgres", "host": pg_server.host, "port": pg_server.port, "dbname": "postgres",
           "username": app, "password": first["password"]}
    name = _secret(lam, pg_server, doc, {"rotator:target": "postgres", "rotator:strategy": "alternating",
                                         "rotator:admin-secret": admin})
    second = _rotate(lam, name)
    assert second["username"] == f"{app}_clone"
    assert {k: v for k, v in second.items() if k not in ("username", "password")} == \
        {k: v for k, v in doc.items() if k not in ("username", "password")}
    _login(pg_server, second)
    _login(pg_server, doc)  # the previous credential still works through grace
    third = _rotate(lam, name)
    assert third["username"] == app
    _login(pg_server, third)
    _login(pg_server, second)
    with pytest.raises(Exception, match="password authentication failed"):
        _login(pg_server, doc)
    log = pg_server.log_text()
    assert all(str(d["password"]) not in log for d in (doc, second, third))


def test_single_user_rotates_its_own_password(lam: GatedMotoServer, pg_server: PgServer) -> None:
    """Without rotator:admin-secret a single rotation logs in as the user itself (AWS's single-user
    template): the new password works, the old one is refused."""
    user, password = f"lam_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    pg_server.sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    doc = {"host": pg_server.host, "port": pg_server.port, "dbname": "postgres", "username": user,
           "password": password}
    name = _secret(lam, pg_server, doc, {"rotator:target": "postgres"})
    new = _rotate(lam, name)
    assert new["username"] == user
    _login(pg_server, new)
    with pytest.raises(Exception, match="password authentication failed"):
        _login(pg_server, doc)


def test_test_secret_refuses_a_pending_password_the_database_lacks(lam: GatedMotoServer,
                                                                   pg_server: PgServer) -> None:
    """testSecret logs in: if setSecret never ran, the pending password is refused and finish never runs."""
    user, password = f"lam_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    pg_server.sql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    doc = {"host": pg_server.host, "port": pg_server.port, "dbname": "postgres", "username": user,
           "password": password}
    name = _secret(lam, pg_server, doc, {"rotator:target": "postgres"})
    token = uuid.uuid4().hex
    begin_rotation(name, token)
    handler(event("createSecret", name, token), None)
    with pytest.raises(CredentialRefused, match=user):
        handler(event("testSecret", name, token), None)


def test_a_target_secret_must_hold_a_document(lam: GatedMotoServer, pg_server: PgServer) -> None:
    """A secret tagged rotator:target whose value is not an RDS-style document is refused with one line."""
    client = _client(lam)
    name = f"rds/{uuid.uuid4().hex}"
    client.create_secret(Name=name, SecretString="just-a-password",  # type: ignore[attr-defined]
                         Tags=[{"Key": "rotator:kind", "Value": "password"},
                               {"Key": "rotator:target", "Value": "postgres"}])
    token = uuid.uuid4().hex
    begin_rotation(name, token)
    with pytest.raises(ManifestError, match="not a JSON document"):
        handler(event("createSecret", name, token), None)
