"""The mysql target against a real MariaDB: the shared contract for the strategies MariaDB has, plus the dual
refusal, the shared role, hashed passwords in the general log, and the error classes."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rotator_mysql import MysqlConfig, MysqlTarget
from rotator_mysql._hashes import native_hash, stored_matches
from rotator_mysql._server import Server

from rotator.errors import CredentialRefused, ExitCode, OperationFailed, TargetDenied, TargetUnavailable
from rotator.target import Binding, Capability, Credential, Strategy, load_target_class
from rotator.testing.target_contract import TargetContract, new_credential
from tests.mariadb_server import MariadbServer
from tests.pg_server import free_port


def _unique(prefix: str = "app") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def make_target(server: MariadbServer, *admins: Credential, port: int | None = None) -> MysqlTarget:
    chosen = list(admins) or [Credential({"username": server.superuser, "password": server.password})]
    config = MysqlConfig(host=server.host, port=port or server.port, connect_timeout=5)
    return MysqlTarget(name="app-db", config=config, base_dir=Path("."), admin=lambda: chosen)


@pytest.fixture
def target(mariadb_server: MariadbServer) -> Iterator[MysqlTarget]:
    """A target whose declared capabilities are narrowed to what this MariaDB supports (no dual)."""
    probe = make_target(mariadb_server)
    supported = probe.supported()
    probe.close()
    cls = type("MariadbTarget", (MysqlTarget,), {"capabilities": supported})
    tgt = cls(name="app-db", config=MysqlConfig(host=mariadb_server.host, port=mariadb_server.port),
              base_dir=Path("."), admin=lambda: [Credential({"username": "root", "password": mariadb_server.password})])
    yield tgt
    tgt.close()


@pytest.fixture
def make_binding() -> Callable[[Strategy], Binding]:
    def make(strategy: Strategy) -> Binding:
        return Binding(secret="app-db/app", target="app-db", username=_unique(), strategy=strategy)

    return make


@pytest.fixture
def unreachable_target(mariadb_server: MariadbServer) -> Iterator[MysqlTarget]:
    tgt = make_target(mariadb_server, port=free_port())
    yield tgt
    tgt.close()


@pytest.fixture
def denied_target(mariadb_server: MariadbServer) -> Iterator[MysqlTarget]:
    tgt = make_target(mariadb_server, Credential({"username": "root", "password": "wrong-" + "x" * 12}))
    yield tgt
    tgt.close()


class TestMariadbContract(TargetContract):
    """The shared target contract on a real MariaDB (dual is skipped: MariaDB has none, tested below)."""


def test_entry_point_loads_the_class() -> None:
    """`type: mysql` resolves through the rotator.targets entry point; the class declares dual."""
    assert load_target_class("mysql") is MysqlTarget
    assert Capability.DUAL in MysqlTarget.capabilities


def test_server_detection() -> None:
    """VERSION() strings: MariaDB never has dual; MySQL from 8.0.14 does."""
    assert not Server.parse("10.11.19-MariaDB-0+deb12u1").dual
    assert not Server.parse("8.0.13").dual
    assert Server.parse("8.0.36").dual
    assert Server.parse("8.4.3-commercial").dual
    assert Server.parse("5.7.44-log").label == "MySQL 5.7.44"


def test_dual_on_mariadb_is_refused_naming_the_target(mariadb_server: MariadbServer) -> None:
    """A dual binding on MariaDB fails before any change with one line naming the target, the secret and the
    server, and suggesting alternating."""
    tgt = make_target(mariadb_server)
    binding = Binding("app-db/app", "app-db", _unique(), Strategy.DUAL)
    try:
        assert Capability.DUAL not in tgt.supported()
        for step in (lambda: tgt.prepare(binding),
                     lambda: tgt.enable(binding, Credential({"username": binding.username, "password": "p" * 20}))):
            with pytest.raises(OperationFailed) as info:
                step()
            message = str(info.value)
            assert "target 'app-db'" in message
            assert "secret 'app-db/app'" in message
            assert "MariaDB 10." in message
            assert "alternating" in (info.value.hint or "")
            assert info.value.exit_code == ExitCode.FAILED
    finally:
        tgt.close()
    assert mariadb_server.sql("SELECT COUNT(*) FROM mysql.user WHERE User = %s", binding.username) == [(0,)]


def test_role_privileges_reach_both_identities(mariadb_server: MariadbServer) -> None:
    """alternating: a grant made to the shared role works for app and app_clone; a table app creates is
    writable by app_clone."""
    tgt = make_target(mariadb_server)
    binding = Binding("s", "app-db", _unique(), Strategy.ALTERNATING)
    primary, clone = binding.identities()
    role, db = tgt.role_of(binding), _unique("db")
    mariadb_server.sql(f"CREATE DATABASE {db}")
    try:
        tgt.prepare(binding)
        tgt.prepare(binding)  # idempotent
        mariadb_server.sql(f"GRANT ALL ON {db}.* TO {role}")
        one, two = new_credential(tgt, binding, primary), new_credential(tgt, binding, clone)
        tgt.enable(binding, one)
        tgt.enable(binding, two)
    finally:
        tgt.close()
    first = mariadb_server.connect(primary, one.secret)
    with first.cursor() as cur:
        cur.execute(f"CREATE TABLE {db}.t (v INT)")
    first.close()
    second = mariadb_server.connect(clone, two.secret)
    with second.cursor() as cur:
        cur.execute(f"INSERT INTO {db}.t VALUES (1)")  # noqa: S608 (generated names)
        cur.execute("SELECT CURRENT_ROLE()")
        assert cur.fetchone() == (role,)
    second.close()


def test_mariadb_never_receives_the_plaintext(mariadb_server: MariadbServer) -> None:
    """The general query log holds the mysql_native_password hash at most, never a password."""
    tgt = make_target(mariadb_server)
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
    log = mariadb_server.log_text()
    assert f"ALTER USER '{binding.username}'@'%' IDENTIFIED BY PASSWORD '*" in log
    assert all(password not in log for password in passwords)


def test_account_host_is_configurable(mariadb_server: MariadbServer) -> None:
    """options.host sets the account's host part ('app'@'127.0.0.1' instead of '%')."""
    tgt = make_target(mariadb_server)
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE, options={"host": "127.0.0.1"})
    try:
        tgt.prepare(binding)
        cred = new_credential(tgt, binding)
        tgt.enable(binding, cred)
        tgt.login(binding, cred)
    finally:
        tgt.close()
    assert mariadb_server.sql("SELECT Host FROM mysql.user WHERE User = %s", binding.username) == [("127.0.0.1",)]


def test_new_account_cannot_log_in_before_enable(target: MysqlTarget) -> None:
    """prepare creates accounts locked, so an account without a password never accepts an empty one."""
    binding = Binding("s", "app-db", _unique(), Strategy.SINGLE)
    target.prepare(binding)
    with pytest.raises(CredentialRefused):
        target.login(binding, Credential({"username": binding.username, "password": ""}))


def test_disable_leaves_a_newer_password_alone(target: MysqlTarget) -> None:
    """disable of a password the account no longer holds is a no-op."""
    binding = Binding("s", "app-db", _unique(), Strategy.ALTERNATING)
    target.prepare(binding)
    old, new = new_credential(target, binding), new_credential(target, binding)
    target.enable(binding, old)
    target.enable(binding, new)
    target.disable(binding, old)
    target.login(binding, new)


def test_admin_mid_rotation_falls_back(mariadb_server: MariadbServer) -> None:
    """A refused first admin credential is skipped for the next; the admin can rotate its own password."""
    name, old = _unique("rotator_admin"), secrets.token_urlsafe(18)
    mariadb_server.sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", old)
    mariadb_server.sql(f"GRANT ALL PRIVILEGES ON *.* TO '{name}'@'%' WITH GRANT OPTION")
    good = Credential({"username": name, "password": old})
    tgt = make_target(mariadb_server, good.with_fields(password=secrets.token_urlsafe(18)), good)
    binding = Binding("app-db/admin", "app-db", name, Strategy.SINGLE)
    try:
        tgt.check()
        new = good.with_fields(password=secrets.token_urlsafe(18))
        tgt.enable(binding, new)
        tgt.login(binding, new)
        with pytest.raises(CredentialRefused):
            tgt.login(binding, good)
    finally:
        tgt.close()


def test_errors_map_to_exit_codes(mariadb_server: MariadbServer, unreachable_target: MysqlTarget,
                                  denied_target: MysqlTarget) -> None:
    """Unreachable and a wrong admin are exit 4 naming the target; a weak admin is TargetDenied naming the
    statement; no password in any message."""
    with pytest.raises(TargetUnavailable) as down:
        unreachable_target.check()
    with pytest.raises(TargetDenied) as denied:
        denied_target.check()
    assert down.value.exit_code == ExitCode.BACKEND
    assert "target 'app-db'" in str(down.value)
    assert denied.value.exit_code == ExitCode.BACKEND
    assert "x" * 12 not in str(denied.value)
    weak, password = _unique("weak"), secrets.token_urlsafe(18)
    mariadb_server.sql(f"CREATE USER '{weak}'@'%%' IDENTIFIED BY %s", password)
    tgt = make_target(mariadb_server, Credential({"username": weak, "password": password}))
    try:
        with pytest.raises(TargetDenied, match="lacks CREATE USER"):
            tgt.check()
        with pytest.raises(TargetDenied, match="may not run CREATE"):
            tgt.prepare(Binding("s", "app-db", _unique(), Strategy.ALTERNATING))
    finally:
        tgt.close()


def test_hashes_match_the_server() -> None:
    """native_hash is MariaDB's PASSWORD(); stored_matches checks it and says None for unknown plugins."""
    assert native_hash("secret") == "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
    assert stored_matches("mysql_native_password", native_hash("pw"), "pw") is True
    assert stored_matches("mysql_native_password", native_hash("pw"), "other") is False
    assert stored_matches("ed25519", "abc", "pw") is None


def test_caching_sha2_check_uses_sha256_crypt() -> None:
    """The caching_sha2_password format ($A$005$<salt><digest>) is checked with SHA-256-crypt, whose output
    for a 16-byte salt is glibc's published test vector."""
    from rotator_mysql._hashes import sha256_crypt

    assert sha256_crypt(b"Hello world!", b"saltstring") == "5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5"
    salt = b"A" * 20
    stored = b"$A$005$" + salt + sha256_crypt(b"pw", salt).encode()
    assert stored_matches("caching_sha2_password", stored, "pw") is True
    assert stored_matches("caching_sha2_password", stored, "px") is False
