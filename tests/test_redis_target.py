"""The redis target against a real redis-server: the shared target contract plus Redis-specific behaviour."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rotator_redis import RedisTarget, RedisTargetConfig
from rotator_redis._acl import password_hash

from rotator.errors import CredentialRefused, OperationFailed, TargetDenied, TargetUnavailable
from rotator.target import Binding, Credential, Strategy, load_target_class
from rotator.testing.target_contract import TargetContract
from tests.redis_server import RedisServer, free_port, write_certificates


def _target(server: RedisServer | None, *, persist: str = "acl_save", password: str | None = None,
            port: int | None = None, name: str = "cache", tls: dict[str, Any] | None = None) -> RedisTarget:
    user = server.admin_user if server else "rotator"
    secret = password if password is not None else (server.admin_password if server else "x" * 24)
    admin = [Credential({"username": user, "password": secret})]
    config = RedisTargetConfig(port=port or (server.port if server else free_port()), persist=persist,
                               connect_timeout=2, timeout=5, tls=tls)
    return RedisTarget(name=name, config=config, base_dir=Path("."), admin=lambda: admin)


def _binding(strategy: Strategy) -> Binding:
    user = f"u{uuid.uuid4().hex[:10]}"
    return Binding(secret=f"cache/{user}", target="cache", username=user, strategy=strategy)


def _password(user: str) -> Credential:
    return Credential({"username": user, "password": secrets.token_urlsafe(24)})


def _raw_admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, username=server.admin_user, password=server.admin_password)


@pytest.fixture
def target(redis_server: RedisServer) -> Iterator[RedisTarget]:
    t = _target(redis_server)
    yield t
    t.close()


@pytest.fixture
def make_binding() -> Callable[[Strategy], Binding]:
    return _binding


@pytest.fixture
def unreachable_target() -> RedisTarget:
    return _target(None)


@pytest.fixture
def denied_target(redis_server: RedisServer) -> RedisTarget:
    return _target(redis_server, password=secrets.token_urlsafe(24))


class TestRedisContract(TargetContract):
    """The shared target contract on a real redis-server with an aclfile."""


def test_registered_as_entry_point() -> None:
    """`type: redis` resolves through the rotator.targets entry-point group."""
    assert load_target_class("redis") is RedisTarget


def test_no_plaintext_password_reaches_the_server(target: RedisTarget, redis_server: RedisServer) -> None:
    """The server keeps only the SHA-256 of each password, and the ACL file on disk holds no plaintext."""
    binding = _binding(Strategy.DUAL)
    credential = _password(binding.username)
    target.enable(binding, credential)
    info = _raw_admin(redis_server).acl_getuser(binding.username)
    assert [p.decode() if isinstance(p, bytes) else p for p in info["passwords"]] == [
        password_hash(credential.secret)]
    assert credential.secret not in (redis_server.root / "users.acl").read_text()


def test_acl_save_survives_a_restart(target: RedisTarget, redis_server: RedisServer) -> None:
    """persist: acl_save writes the aclfile, so enabled and disabled passwords are the same after a restart."""
    binding = _binding(Strategy.DUAL)
    old, new = _password(binding.username), _password(binding.username)
    target.enable(binding, old)
    target.enable(binding, new)
    target.disable(binding, old)
    target.close()
    redis_server.restart()
    target.login(binding, new)
    with pytest.raises(CredentialRefused):
        target.login(binding, old)


def test_config_rewrite_survives_a_restart(redis_conf_server: RedisServer) -> None:
    """persist: config_rewrite writes users into redis.conf, so they survive a restart."""
    t = _target(redis_conf_server, persist="config_rewrite")
    binding = _binding(Strategy.SINGLE)
    credential = _password(binding.username)
    t.enable(binding, credential)
    t.close()
    redis_conf_server.restart()
    t.login(binding, credential)
    assert credential.secret not in redis_conf_server.conf.read_text()


def test_persist_none_is_lost_at_restart(redis_conf_server: RedisServer) -> None:
    """persist: none changes memory only: documented, and visible here as a user gone after a restart."""
    t = _target(redis_conf_server, persist="none")
    binding = _binding(Strategy.SINGLE)
    credential = _password(binding.username)
    t.enable(binding, credential)
    t.login(binding, credential)
    t.close()
    redis_conf_server.restart()
    with pytest.raises(CredentialRefused):
        t.login(binding, credential)


def test_acl_save_without_aclfile_says_which_persist_fits(redis_conf_server: RedisServer) -> None:
    """persist: acl_save on a server without aclfile fails with a hint naming config_rewrite; no rule quoted."""
    t = _target(redis_conf_server, persist="acl_save")
    binding = _binding(Strategy.SINGLE)
    credential = _password(binding.username)
    with pytest.raises(TargetDenied):  # the least-privilege admin of that server may not even run ACL SAVE
        t.enable(binding, credential)


def test_acl_save_without_aclfile_hint(redis_conf_server: RedisServer) -> None:
    """With a privileged admin, ACL SAVE's "no aclfile" error becomes OperationFailed naming config_rewrite."""
    admin_pw = secrets.token_urlsafe(24)
    admin = _raw_admin(redis_conf_server)
    admin.execute_command("ACL", "SETUSER", "superadmin", "on", f"#{password_hash(admin_pw)}", "+@all", "~*")
    t = _target(redis_conf_server, persist="acl_save")
    t._admin = lambda: [Credential({"username": "superadmin", "password": admin_pw})]
    binding = _binding(Strategy.SINGLE)
    credential = _password(binding.username)
    with pytest.raises(OperationFailed) as info:
        t.enable(binding, credential)
    assert "not persisted" in info.value.message
    assert "config_rewrite" in (info.value.hint or "")
    assert password_hash(credential.secret) not in str(info.value) + (info.value.hint or "")
    t._run("ACL DELUSER", lambda c: c.execute_command("ACL", "DELUSER", "superadmin"))
    t.close()


def test_clone_copies_the_primary_permissions(target: RedisTarget, redis_server: RedisServer) -> None:
    """alternating: a new clone gets the primary's command/key/channel rules, never its passwords."""
    binding = _binding(Strategy.ALTERNATING)
    raw = _raw_admin(redis_server)
    primary_pw = _password(binding.username)
    raw.execute_command("ACL", "SETUSER", binding.username, "on", f"#{password_hash(primary_pw.secret)}",
                        "~app:*", "%R~shared:*", "resetchannels", "&events", "-@all", "+get", "+set", "+ping",
                        "(~sel:* +hget)")
    target.prepare(binding)
    clone = binding.identities()[1]
    first, second = raw.acl_getuser(binding.username), raw.acl_getuser(clone)
    for key in ("commands", "keys", "channels", "selectors"):
        assert second[key] == first[key], key
    assert second["passwords"] == []
    two = _password(clone)
    target.enable(binding, two)
    client = redis.Redis(port=redis_server.port, username=clone, password=two.secret)
    client.set("app:x", "1")
    client.hget("sel:h", "f")  # granted by the copied selector
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.set("other", "1")
    client.close()


def test_enable_never_changes_permissions(target: RedisTarget, redis_server: RedisServer) -> None:
    """enable and disable touch passwords only: the user's rules stay exactly as the operator set them."""
    binding = _binding(Strategy.SINGLE)
    raw = _raw_admin(redis_server)
    raw.execute_command("ACL", "SETUSER", binding.username, "~k:*", "+get")
    before = raw.acl_getuser(binding.username)
    credential = _password(binding.username)
    target.enable(binding, credential)
    target.disable(binding, credential)
    after = raw.acl_getuser(binding.username)
    assert {k: after[k] for k in ("commands", "keys", "channels")} == {
        k: before[k] for k in ("commands", "keys", "channels")}


def test_disable_of_an_absent_user_creates_nothing(target: RedisTarget, redis_server: RedisServer) -> None:
    """disable for a user that does not exist is a no-op (``!hash`` would otherwise create the user)."""
    binding = _binding(Strategy.DUAL)
    target.disable(binding, _password(binding.username))
    assert _raw_admin(redis_server).acl_getuser(binding.username) is None


def test_foreign_identity_is_refused(target: RedisTarget) -> None:
    """A credential for a user outside the binding's identities is never applied."""
    binding = _binding(Strategy.SINGLE)
    with pytest.raises(OperationFailed, match="not an identity"):
        target.enable(binding, _password("rotator"))


def test_admin_falls_back_to_the_next_credential(redis_server: RedisServer) -> None:
    """The admin callable's later credentials are tried when the first is refused (admin mid-rotation)."""
    t = _target(redis_server)
    good = Credential({"username": redis_server.admin_user, "password": redis_server.admin_password})
    t._admin = lambda: [Credential({"username": redis_server.admin_user, "password": "wrong" * 5}), good]
    t.check()
    t.close()


def test_wrong_admin_message_names_target_not_password(redis_server: RedisServer) -> None:
    """TargetDenied names the target and admin user, never the password tried."""
    wrong = secrets.token_urlsafe(24)
    with pytest.raises(TargetDenied) as info:
        _target(redis_server, password=wrong).check()
    assert "cache" in str(info.value)
    assert redis_server.admin_user in str(info.value)
    assert wrong not in str(info.value) + repr(info.value)


def test_tls_with_a_verified_certificate(redis_tls_server: RedisServer) -> None:
    """tls.ca_file: admin and login connections verify the server's certificate and work over TLS."""
    t = _target(redis_tls_server, tls={"ca_file": str(redis_tls_server.ca_file)})
    binding = _binding(Strategy.SINGLE)
    credential = _password(binding.username)
    t.enable(binding, credential)
    t.login(binding, credential)
    assert t.fields(binding)["tls"] is True
    t.close()


def test_tls_with_an_unknown_ca_is_unavailable(redis_tls_server: RedisServer, tmp_path: Path) -> None:
    """A certificate from a CA the target does not trust is refused: TargetUnavailable, nothing changed."""
    other_ca, _, _ = write_certificates(tmp_path)
    t = _target(redis_tls_server, tls={"ca_file": str(other_ca)})
    with pytest.raises(TargetUnavailable, match="cannot reach redis target cache"):
        t.check()


def test_admin_rotates_its_own_password(target: RedisTarget, redis_server: RedisServer) -> None:
    """strategy single on rotator's own admin user: after enable, a fresh target logs in with [old, new] admin
    credentials (the old is refused, the new is tried next) and keeps administering."""
    from tests.redis_server import ADMIN_RULES_ACL_SAVE

    admin = f"admin{uuid.uuid4().hex[:8]}"
    old = _password(admin)
    target._run("ACL SETUSER", lambda c: c.execute_command(
        "ACL", "SETUSER", admin, "on", f"#{password_hash(old.secret)}", *ADMIN_RULES_ACL_SAVE.split()))
    own = _target(redis_server)
    own._admin = lambda: [old]
    binding = Binding(secret="cache/admin", target="cache", username=admin, strategy=Strategy.SINGLE)
    new = _password(admin)
    own.enable(binding, new)
    own.close()
    with pytest.raises(CredentialRefused):
        own.login(binding, old)
    own._admin = lambda: [old, new]
    own.check()
    app = _binding(Strategy.SINGLE)
    own.enable(app, _password(app.username))
    own.close()
