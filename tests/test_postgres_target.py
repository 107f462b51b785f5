"""The postgres target against a real PostgreSQL 15: the shared contract, plus what only PostgreSQL shows
(SCRAM verifiers never plaintext, the group role's ownership, adoption, admin fallback, error classes)."""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rotator_postgres import PostgresConfig, PostgresTarget

from rotator.errors import CredentialRefused, ExitCode, OperationFailed, TargetDenied, TargetUnavailable
from rotator.target import Binding, Credential, Strategy, load_target_class
from rotator.testing.target_contract import TargetContract, new_credential
from tests.pg_server import PgServer, free_port

ADMIN_KINDS = ("superuser", "createrole")


def _unique(prefix: str = "app") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def make_target(server: PgServer, *admins: Credential, port: int | None = None) -> PostgresTarget:
    """A target on ``server`` whose admin callable returns ``admins`` (default: the superuser)."""
    chosen = list(admins) or [Credential({"username": server.superuser, "password": server.password})]
    config = PostgresConfig(host=server.host, port=port or server.port, database="postgres", connect_timeout=5)
    return PostgresTarget(name="app-db", config=config, base_dir=Path("."), admin=lambda: chosen)


@pytest.fixture(scope="module")
def createrole_admin(pg_server: PgServer) -> Credential:
    """A non-superuser admin with CREATEROLE (what a managed database gives rotator)."""
    name, password = _unique("rotator_admin"), secrets.token_urlsafe(18)
    pg_server.sql(f"CREATE ROLE {name} LOGIN CREATEROLE PASSWORD '{password}'")
    return Credential({"username": name, "password": password})


@pytest.fixture(params=ADMIN_KINDS)
def target(request: pytest.FixtureRequest, pg_server: PgServer, createrole_admin: Credential
           ) -> Iterator[PostgresTarget]:
    """The target with a superuser admin (reads pg_authid) and with a CREATEROLE admin (cannot)."""
    tgt = make_target(pg_server, createrole_admin) if request.param == "createrole" else make_target(pg_server)
    yield tgt
    tgt.close()


@pytest.fixture
def make_binding() -> Callable[[Strategy], Binding]:
    def make(strategy: Strategy) -> Binding:
        return Binding(secret="app-db/app", target="app-db", username=_unique(), strategy=strategy)

    return make


@pytest.fixture
def unreachable_target(pg_server: PgServer) -> Iterator[PostgresTarget]:
    tgt = make_target(pg_server, port=free_port())
    yield tgt
    tgt.close()


@pytest.fixture
def denied_target(pg_server: PgServer) -> Iterator[PostgresTarget]:
    tgt = make_target(pg_server, Credential({"username": "postgres", "password": "wrong-" + "x" * 12}))
    yield tgt
    tgt.close()


class TestPostgresContract(TargetContract):
    """The shared target contract (rotator.testing.target_contract) on a real PostgreSQL 15."""


def test_entry_point_loads_the_class() -> None:
    """`type: postgres` resolves through the rotator.targets entry point to PostgresTarget."""
    assert load_target_class("postgres") is PostgresTarget


def test_config_rejects_unknown_keys() -> None:
    """A typo in targets.<name> is refused by the config model (extra=forbid)."""
    with pytest.raises(ValueError, match="passwrd"):
        PostgresConfig.model_validate({"host": "h", "passwrd": "x"})


def test_no_plaintext_password_reaches_the_server(pg_server: PgServer, createrole_admin: Credential) -> None:
    """With log_statement=all, the server log holds the SCRAM verifier at most, never a password; the
    catalog stores a SCRAM-SHA-256 verifier."""
    tgt = make_target(pg_server, createrole_admin)  # a CREATEROLE admin cannot silence its statement log
    binding = Binding("s", "app-db", _unique(), Strategy.ALTERNATING)
    passwords = []
    try:
        tgt.prepare(binding)
        for user in binding.identities():
            cred = new_credential(tgt, binding, user)
            passwords.append(cred.secret)
            tgt.enable(binding, cred)
            tgt.login(binding, cred)
            tgt.disable(binding, cred)
    finally:
        tgt.close()
    log = pg_server.log_text()
    assert f'ALTER ROLE "{binding.username}" WITH LOGIN PASSWORD \'SCRAM-SHA-256$4096:' in log
    assert all(password not in log for password in passwords)
    stored = pg_server.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", binding.username)
    assert stored == [(None,)]  # disabled: PASSWORD NULL


def test_superuser_admin_silences_the_statement_log(pg_server: PgServer) -> None:
    """A superuser admin turns log_statement off for its session, so not even the verifier is logged."""
    tgt = make_target(pg_server)
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE)
    try:
        tgt.prepare(binding)
        cred = new_credential(tgt, binding)
        tgt.enable(binding, cred)
        verifier = pg_server.sql("SELECT rolpassword FROM pg_authid WHERE rolname = %s", binding.username)[0][0]
    finally:
        tgt.close()
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert verifier not in pg_server.log_text()
    assert cred.secret not in pg_server.log_text()


def test_group_role_owns_what_either_identity_creates(pg_server: PgServer) -> None:
    """alternating: a table created by app is owned by the group and writable by app_clone, and back."""
    tgt = make_target(pg_server)
    binding = Binding("s", "app-db", _unique(), Strategy.ALTERNATING)
    primary, clone = binding.identities()
    group = tgt.group_of(binding)
    try:
        tgt.prepare(binding)
        pg_server.sql(f"GRANT CREATE ON SCHEMA public TO {group}")
        one, two = new_credential(tgt, binding, primary), new_credential(tgt, binding, clone)
        tgt.enable(binding, one)
        tgt.enable(binding, two)
    finally:
        tgt.close()
    with pg_server.connect(primary, one.secret) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (group,)
        conn.execute(f"CREATE TABLE t_{primary} (v int)")
    with pg_server.connect(clone, two.secret) as conn:
        conn.execute(f"INSERT INTO t_{primary} VALUES (1)")  # noqa: S608 (generated names)
        conn.execute(f"CREATE TABLE t_{clone} (v int)")
    with pg_server.connect(primary, one.secret) as conn:
        conn.execute(f"INSERT INTO t_{clone} VALUES (2)")  # noqa: S608 (generated names)
    owners = pg_server.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE tablename IN (%s, %s)",
                           f"t_{primary}", f"t_{clone}")
    assert owners == [(group,)]
    catalog = pg_server.sql("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", group)
    assert catalog == [(False,)]


def test_custom_group_name_and_prepare_is_one_query_when_done(pg_server: PgServer) -> None:
    """options.group names the group role; a second prepare changes nothing."""
    tgt = make_target(pg_server)
    group = _unique("grp")
    binding = Binding("s", "app-db", _unique(), Strategy.ALTERNATING, clone=_unique("blue"),
                      options={"group": group, "url": "postgresql://{username}@{host}"})  # url: the core's
    try:
        tgt.prepare(binding)
        before = pg_server.sql("SELECT rolname, rolconfig FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                               [*binding.identities(), group])
        tgt.prepare(binding)
        after = pg_server.sql("SELECT rolname, rolconfig FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                              [*binding.identities(), group])
    finally:
        tgt.close()
    assert before == after
    assert len(before) == 3
    assert {tuple(cfg or ()) for name, cfg in before if name != group} == {(f"role={group}",)}


def test_adopting_an_existing_role_keeps_its_privileges(pg_server: PgServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """An app role that existed before rotator joins the group but keeps its own session role (its direct
    grants still work); the clone runs as the group; a warning points at the README."""
    app = _unique()
    pg_server.sql(f"CREATE ROLE {app} LOGIN PASSWORD NULL")
    pg_server.sql(f"CREATE TABLE own_{app} (v int)")
    pg_server.sql(f"GRANT ALL ON own_{app} TO {app}")
    tgt = make_target(pg_server)
    binding = Binding("s", "app-db", app, Strategy.ALTERNATING)
    try:
        with caplog.at_level(logging.WARNING, logger="rotator.targets.postgres"):
            tgt.prepare(binding)
        cred = new_credential(tgt, binding)
        tgt.enable(binding, cred)
    finally:
        tgt.close()
    assert "keeps its own session role" in caplog.text
    with pg_server.connect(app, cred.secret) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (app,)
        conn.execute(f"INSERT INTO own_{app} VALUES (1)")  # noqa: S608 (generated names)
    members = pg_server.sql("SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                            "JOIN pg_roles g ON g.oid = m.roleid WHERE g.rolname = %s ORDER BY 1", f"{app}_group")
    assert members == [(app,), (f"{app}_clone",)]


def test_disable_leaves_a_newer_password_alone(target: PostgresTarget) -> None:
    """disable of a credential the role no longer holds is a no-op: the newer password still logs in."""
    binding = Binding("s", "app-db", _unique(), Strategy.ALTERNATING)
    target.prepare(binding)
    old, new = new_credential(target, binding), new_credential(target, binding)
    target.enable(binding, old)
    target.enable(binding, new)
    target.disable(binding, old)
    target.login(binding, new)


def test_single_disable_removes_the_password(target: PostgresTarget) -> None:
    """single: disabling the password the role holds sets PASSWORD NULL (LOGIN stays, for its next enable)."""
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE)
    target.prepare(binding)
    cred = new_credential(target, binding)
    target.enable(binding, cred)
    target.disable(binding, cred)
    with pytest.raises(CredentialRefused):
        target.login(binding, cred)
    target.enable(binding, cred)
    target.login(binding, cred)


def test_admin_mid_rotation_falls_back_to_the_next_credential(pg_server: PgServer) -> None:
    """The admin callable lists current, pending, previous: a refused first one is skipped, and an admin with
    strategy single can rotate its own password."""
    name, old = _unique("rotator_admin"), secrets.token_urlsafe(18)
    pg_server.sql(f"CREATE ROLE {name} LOGIN CREATEROLE PASSWORD '{old}'")
    stale = Credential({"username": name, "password": secrets.token_urlsafe(18)})
    good = Credential({"username": name, "password": old})
    tgt = make_target(pg_server, stale, good)
    binding = Binding("app-db/admin", "app-db", name, Strategy.SINGLE)
    try:
        tgt.check()
        new = good.with_fields(password=secrets.token_urlsafe(18))
        tgt.enable(binding, new)  # ALTER ROLE on itself
        tgt.login(binding, new)
        with pytest.raises(CredentialRefused):
            tgt.login(binding, good)
    finally:
        tgt.close()
    after = make_target(pg_server, good, new)
    try:
        after.check()  # the old one is refused, the new one is tried next
    finally:
        after.close()


def test_errors_name_the_target_and_map_to_exit_codes(pg_server: PgServer,
                                                      unreachable_target: PostgresTarget,
                                                      denied_target: PostgresTarget) -> None:
    """Unreachable and wrong-admin are exit 4 naming the target; a refused login is exit 1; no password in
    any message."""
    with pytest.raises(TargetUnavailable) as down:
        unreachable_target.check()
    with pytest.raises(TargetDenied) as denied:
        denied_target.check()
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE)
    tgt = make_target(pg_server)
    try:
        with pytest.raises(CredentialRefused) as refused:
            tgt.login(binding, Credential({"username": binding.username, "password": "nope-" + "y" * 12}))
    finally:
        tgt.close()
    assert down.value.exit_code == ExitCode.BACKEND
    assert "target 'app-db'" in str(down.value)
    assert denied.value.exit_code == ExitCode.BACKEND
    assert "admin login as 'postgres'" in str(denied.value)
    assert refused.value.exit_code == ExitCode.FAILED
    assert binding.username in str(refused.value)
    assert all("x" * 12 not in str(e.value) and "y" * 12 not in str(e.value) for e in (down, denied, refused))


def test_missing_privilege_is_target_denied_naming_the_statement(pg_server: PgServer) -> None:
    """An admin without CREATEROLE: check says so, and prepare fails with TargetDenied naming CREATE ROLE."""
    name, password = _unique("weak"), secrets.token_urlsafe(18)
    pg_server.sql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
    tgt = make_target(pg_server, Credential({"username": name, "password": password}))
    binding = Binding("s", "app-db", _unique(), Strategy.ALTERNATING)
    try:
        with pytest.raises(TargetDenied, match="lacks CREATEROLE"):
            tgt.check()
        with pytest.raises(TargetDenied, match=r"may not run CREATE ROLE"):
            tgt.prepare(binding)
    finally:
        tgt.close()
    assert pg_server.sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE %s", binding.username + "%") == [(0,)]


def test_bad_identity_names_are_refused(target: PostgresTarget) -> None:
    """A role name PostgreSQL would truncate, or a credential for a foreign identity, fails before SQL."""
    with pytest.raises(OperationFailed, match="1 to 63 bytes"):
        target.prepare(Binding("s", "app-db", "a" * 64, Strategy.SINGLE))
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE)
    with pytest.raises(OperationFailed, match="not an identity"):
        target.enable(binding, Credential({"username": "postgres", "password": "z" * 20}))


def test_admin_connection_is_reopened_after_it_broke(pg_server: PgServer) -> None:
    """A kept admin connection killed by the server (restart, failover) is re-opened once, transparently."""
    tgt = make_target(pg_server)
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE)
    try:
        tgt.prepare(binding)
        pg_server.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE application_name = 'rotator' AND usename = 'postgres'")
        cred = new_credential(tgt, binding)
        tgt.enable(binding, cred)
        tgt.login(binding, cred)
    finally:
        tgt.close()


def test_verifier_check_agrees_with_libpq(pg_server: PgServer) -> None:
    """_scram.verifier_matches accepts libpq's verifier for the right password only, and declines to decide
    (None) for md5, NULL and non-ASCII passwords (SASLprep), so disable falls back to a login attempt."""
    from rotator_postgres._scram import verifier_matches

    with pg_server.connect() as conn:
        verifier = conn.pgconn.encrypt_password(b"right-password", b"u", b"scram-sha-256").decode()
    assert verifier_matches(verifier, "right-password") is True
    assert verifier_matches(verifier, "wrong-password") is False
    assert verifier_matches("md5" + "0" * 32, "right-password") is None
    assert verifier_matches(None, "right-password") is None
    assert verifier_matches(verifier, "pässword") is None


def test_a_blocked_statement_times_out_as_unavailable(pg_server: PgServer) -> None:
    """An ALTER ROLE stuck behind another transaction's lock gives up after statement_timeout with
    TargetUnavailable (exit 4, retried by the next run) instead of hanging the rotation."""
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE)
    config = PostgresConfig(host=pg_server.host, port=pg_server.port, statement_timeout=1)
    admin = Credential({"username": pg_server.superuser, "password": pg_server.password})
    tgt = PostgresTarget(name="app-db", config=config, base_dir=Path("."), admin=lambda: [admin])
    try:
        tgt.prepare(binding)
        with pg_server.connect() as blocker:
            blocker.autocommit = False
            blocker.execute(f'ALTER ROLE "{binding.username}" PASSWORD NULL')  # holds the row lock
            with pytest.raises(TargetUnavailable, match="timed out"):
                tgt.enable(binding, new_credential(tgt, binding))
            blocker.rollback()
        tgt.enable(binding, new_credential(tgt, binding))  # the next attempt goes through
    finally:
        tgt.close()
