"""The ``redis`` target: Redis 6+/7 ACL users, with ``single``, ``dual`` and ``alternating`` strategies.

Every password goes over the wire as its SHA-256 (``#<hash>`` adds, ``!<hash>`` removes), so neither ``MONITOR``
nor a slow log ever shows one. Redis's ``<pw``/``!hash`` error when the password is absent, so :meth:`disable`
reads the user first and treats "not there" as done. Each change is made durable as the manifest says
(``persist``): ``ACL SAVE`` (server has an ``aclfile``), ``CONFIG REWRITE`` (users live in ``redis.conf``) or
``none`` (the operator accepts that a restart forgets the change).

Error translation (redis-py exceptions never leave this module)::

    AuthenticationError (admin)            -> TargetDenied      (tries the next admin credential first)
    AuthenticationError (login)            -> CredentialRefused
    NoPermissionError (NOPERM)             -> TargetDenied      naming the command the admin user needs
    ConnectionError, TimeoutError          -> TargetUnavailable naming host:port
    ResponseError (ACL SAVE without file)  -> OperationFailed   with the persist setting that fits
    other ResponseError / RedisError       -> OperationFailed   (the server's text is not quoted: it may echo rules)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import redis
from redis import exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from rotator.spi import (
    AdminCredentials,
    Binding,
    Capability,
    Credential,
    CredentialRefused,
    OperationFailed,
    Strategy,
    TargetDenied,
    TargetUnavailable,
)
from rotator_redis._acl import copied_rules, password_hash, passwords_of
from rotator_redis.config import RedisTargetConfig

__all__ = ["RedisTarget"]

log = logging.getLogger("rotator.targets.redis")
T = TypeVar("T")
_ADMIN_RULES = "+acl|setuser +acl|getuser +acl|save (or +config|rewrite) +ping"


class RedisTarget:
    """Manage the passwords of Redis ACL users; see the module docstring for the error contract."""

    type_name: ClassVar[str] = "redis"
    config_model: ClassVar[type[RedisTargetConfig]] = RedisTargetConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SINGLE, Capability.DUAL, Capability.ALTERNATING})

    def __init__(self, *, name: str, config: RedisTargetConfig, base_dir: Path, admin: AdminCredentials) -> None:
        self.name = name
        self.config = config
        self._admin = admin
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None

    def __repr__(self) -> str:
        return f"RedisTarget(name={self.name!r}, host={self.config.host!r}, port={self.config.port})"

    @property
    def _where(self) -> str:
        return f"redis target {self.name} ({self.config.host}:{self.config.port})"

    # --- the five primitives -------------------------------------------------------------------------------

    def fields(self, binding: Binding) -> dict[str, Any]:
        """``host``, ``port`` and ``db`` for the app's connection (``tls: true`` when TLS is configured)."""
        doc: dict[str, Any] = {"host": self.config.host, "port": self.config.port, "db": self.config.db}
        if self.config.tls is not None:
            doc["tls"] = True
        return doc

    def prepare(self, binding: Binding) -> None:
        """Create missing identities; a new clone copies the primary's permissions (never its passwords)."""
        for username in binding.identities():
            self._ensure_user(binding, username)

    def issue(self, binding: Binding, username: str, keep: Sequence[Credential]) -> Credential:
        """Not an ``ISSUES`` target: rotator generates Redis passwords itself."""
        raise OperationFailed(f"{self._where} does not issue credentials; rotator generates the password")

    def enable(self, binding: Binding, credential: Credential) -> None:
        """``dual``: add the password; ``single``/``alternating``: make it the identity's only password."""
        username = self._identity(binding, credential)
        digest = password_hash(credential.secret)
        self._ensure_user(binding, username)
        rules = ["on", f"#{digest}"] if binding.strategy is Strategy.DUAL else ["on", "resetpass", f"#{digest}"]
        self._run("ACL SETUSER", lambda c: _setuser(c, username, *rules))
        self._persist()
        log.info("redis password enabled", extra={"target": self.name, "username": username})

    def disable(self, binding: Binding, credential: Credential) -> None:
        """Remove the password (``!<hash>``); a missing user or password is already disabled (never created)."""
        username = self._identity(binding, credential)
        digest = password_hash(credential.secret)
        if digest in self._passwords(username):
            try:
                self._run("ACL SETUSER", lambda c: _setuser(c, username, f"!{digest}"))
            except OperationFailed:
                if digest in self._passwords(username):  # not a lost race with another remover: a real failure
                    raise
        self._persist()  # also when already gone: an earlier attempt may have removed it but failed to persist
        log.info("redis password disabled", extra={"target": self.name, "username": username})

    def login(self, binding: Binding, credential: Credential) -> None:
        """A new connection, ``AUTH username password`` and ``PING``."""
        client = self._connect(credential.username, credential.secret)
        try:
            client.ping()
        except rex.AuthenticationError as exc:
            raise CredentialRefused(f"{self._where} refused the login of user {credential.username} "
                                    "(wrong password or user disabled)") from exc
        except rex.NoPermissionError:
            return  # authenticated: the user just may not PING
        except (rex.ConnectionError, rex.TimeoutError) as exc:
            raise TargetUnavailable(f"cannot reach {self._where}: {type(exc).__name__}") from exc
        except rex.RedisError as exc:
            raise OperationFailed(f"{self._where}: login of {credential.username} failed: "
                                  f"{type(exc).__name__}") from exc
        finally:
            client.close()

    def check(self) -> None:
        """Connect as admin and read the admin's own ACL entry (proves ``+acl|getuser``)."""
        creds = self._admin()
        me = creds[0].username if creds else "default"
        self._run("ACL GETUSER", lambda c: c.acl_getuser(me or "default"))

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- helpers ----------------------------------------------------------------------------------------------

    def _identity(self, binding: Binding, credential: Credential) -> str:
        username = credential.username or binding.username
        if username not in binding.identities():
            raise OperationFailed(f"{self._where}: user {username} is not an identity of secret {binding.secret} "
                                  f"({', '.join(binding.identities())})")
        return username

    def _getuser(self, username: str) -> dict[str, Any] | None:
        info = self._run("ACL GETUSER", lambda c: c.acl_getuser(username))
        return dict(info) if info else None

    def _passwords(self, username: str) -> set[str]:
        info = self._getuser(username)
        return passwords_of(info) if info else set()

    def _ensure_user(self, binding: Binding, username: str) -> None:
        if self._getuser(username) is not None:
            return
        rules: list[str] = []
        if binding.strategy is Strategy.ALTERNATING and username != binding.username:
            primary = self._getuser(binding.username)
            if primary is None:
                self._ensure_user(binding, binding.username)
                primary = self._getuser(binding.username) or {}
            rules = copied_rules(primary)
        self._run("ACL SETUSER", lambda c: _setuser(c, username, "on", *rules))
        self._persist()
        if rules:
            log.info("redis user created with the permissions of its primary",
                     extra={"target": self.name, "username": username, "primary": binding.username})
        else:
            log.warning("redis user created without any permissions: grant them with ACL SETUSER",
                        extra={"target": self.name, "username": username})

    def _persist(self) -> None:
        mode = self.config.persist
        if mode == "none":
            return
        try:
            if mode == "acl_save":
                self._run("ACL SAVE", lambda c: c.acl_save())
            else:
                self._run("CONFIG REWRITE", lambda c: c.config_rewrite())
        except OperationFailed as exc:
            hint = ("the server has no aclfile: set `persist: config_rewrite` (users in redis.conf) or configure "
                    "`aclfile`" if mode == "acl_save" else
                    "the server runs without a config file: configure `aclfile` and set `persist: acl_save`")
            raise OperationFailed(f"{self._where}: the ACL change was applied in memory but not persisted "
                                  f"({exc.message})", hint=hint) from exc

    def _connect(self, username: str | None, password: str) -> redis.Redis:
        cfg, tls = self.config, self.config.tls
        kwargs: dict[str, Any] = {}
        if tls is not None:
            kwargs = {"ssl": True, "ssl_ca_certs": tls.ca_file, "ssl_certfile": tls.cert_file,
                      "ssl_keyfile": tls.key_file, "ssl_cert_reqs": "required" if tls.verify else "none",
                      "ssl_check_hostname": tls.verify}
        return redis.Redis(host=cfg.host, port=cfg.port,
                           username=username or None, password=password, socket_timeout=cfg.timeout,
                           socket_connect_timeout=cfg.connect_timeout,
                           protocol=2, retry=Retry(NoBackoff(), 0), **kwargs)  # the engine retries steps

    def _admin_client(self) -> redis.Redis:
        with self._lock:
            if self._client is not None:
                return self._client
            creds = self._admin()
            if not creds:
                raise TargetDenied(f"{self._where}: no admin credential configured")
            for cred in creds:
                client = self._connect(cred.username, cred.secret)
                try:
                    client.ping()
                except rex.AuthenticationError:
                    client.close()
                    continue
                except rex.NoPermissionError:
                    pass  # authenticated; a later command says what is missing
                except (rex.ConnectionError, rex.TimeoutError) as exc:
                    client.close()
                    raise TargetUnavailable(f"cannot reach {self._where}: {type(exc).__name__}",
                                            hint="check host, port, TLS settings and that Redis is running") from exc
                self._client = client
                return client
            users = ", ".join(sorted({c.username or "default" for c in creds}))
            raise TargetDenied(f"{self._where} refused rotator's admin credential (user {users})",
                               hint="check the admin secret; its user needs " + _ADMIN_RULES)

    def _run(self, command: str, call: Callable[[redis.Redis], T]) -> T:
        """Run ``call`` on the admin connection, once more with a fresh login if the admin password changed."""
        for attempt in (1, 2):
            client = self._admin_client()
            try:
                return call(client)
            except rex.AuthenticationError as exc:
                self.close()
                if attempt == 2:
                    raise TargetDenied(f"{self._where} refused rotator's admin credential during {command}",
                                       hint="check the admin secret") from exc
            except rex.NoPermissionError as exc:
                raise TargetDenied(f"{self._where}: the admin user may not run {command}",
                                   hint="grant it: ACL SETUSER <admin> " + _ADMIN_RULES) from exc
            except (rex.ConnectionError, rex.TimeoutError) as exc:
                self.close()
                raise TargetUnavailable(f"cannot reach {self._where} ({command}): {type(exc).__name__}") from exc
            except rex.ResponseError as exc:
                raise OperationFailed(f"{self._where}: {command} failed: "
                                      f"{_first_word(exc)}") from exc
            except rex.RedisError as exc:
                raise OperationFailed(f"{self._where}: {command} failed: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")  # pragma: no cover


def _setuser(client: redis.Redis, username: str, *rules: str) -> None:
    """``ACL SETUSER`` with rules exactly as given (redis-py's acl_setuser rebuilds them from keywords)."""
    client.execute_command("ACL", "SETUSER", username, *rules)  # type: ignore[no-untyped-call]


def _first_word(exc: Exception) -> str:
    """The error's code and first words, never the rule it may echo (``ERR This Redis instance is not ...``)."""
    text = str(exc).split("'")[0].split(":")[0]
    return " ".join(text.split()[:12])
