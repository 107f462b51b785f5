"""The MySQL / MariaDB target: accounts ``'user'@'host'`` whose passwords rotator sets and checks.

Strategies and primitives:

=========== =================================================================================================
single      prepare: ``CREATE USER IF NOT EXISTS ... ACCOUNT LOCK`` (a new account never has an empty
            password that would log in); enable: set the password and ``ACCOUNT UNLOCK``; disable (only when
            the account still holds it): an unknown random password.
alternating both identities are members of one role (``<username>_role``, ``CREATE ROLE``) that holds the
            privileges, set as their default role: grants made to the role reach both at once, so nothing is
            copied with ``SHOW GRANTS`` and nothing drifts. disable: random password and ``ACCOUNT LOCK``.
dual        MySQL >= 8.0.14 only (decided per server, :mod:`rotator_mysql._server`): enable
            ``IDENTIFIED BY 'new' RETAIN CURRENT PASSWORD``; disable of the retained one
            ``DISCARD OLD PASSWORD``. MariaDB refuses with an error suggesting ``alternating``.
=========== =================================================================================================

On MariaDB the password never leaves this machine: rotator sends the ``mysql_native_password`` hash
(``IDENTIFIED BY PASSWORD '*...'``). MySQL 8 has no such form for ``caching_sha2_password``, so the password
goes over the connection (use TLS: ``ssl_ca``); MySQL rewrites it out of its own logs.
"""

from __future__ import annotations

import logging
import secrets
import ssl
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeAlias, TypeVar

import pymysql
from pydantic import BaseModel, ConfigDict, Field

from rotator.spi import (
    AdminCredentials,
    Binding,
    Capability,
    Credential,
    CredentialRefused,
    OperationFailed,
    Strategy,
    TargetDenied,
)
from rotator_mysql import _errors
from rotator_mysql._hashes import native_hash, stored_matches
from rotator_mysql._server import Server

__all__ = ["MysqlBindingOptions", "MysqlConfig", "MysqlTarget"]

_log = logging.getLogger("rotator.targets.mysql")
_T = TypeVar("_T")
_Conn: TypeAlias = "pymysql.connections.Connection[Any]"
_LOST = frozenset({2006, 2013, 2055})
_CORE_OPTIONS = frozenset({"url"})  # keys of a secret's target: block that the core itself uses


def _own_options(binding: Binding) -> dict[str, Any]:
    """The binding options meant for this plugin (the core's own keys, such as ``url``, left out)."""
    return {k: v for k, v in binding.options.items() if k not in _CORE_OPTIONS}


class MysqlConfig(BaseModel):
    """``targets.<name>`` for ``type: mysql`` (MySQL or MariaDB; without ``type`` and ``admin``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(3306, ge=1, le=65535)
    database: str | None = None
    account_host: str = "%"  # the host part of the accounts rotator manages ('user'@'<account_host>')
    connect_timeout: int = Field(10, ge=1, le=600)
    statement_timeout: int = Field(30, ge=1, le=3600)  # seconds: lock_wait_timeout and the socket read timeout
    ssl_ca: str | None = None  # a CA bundle: TLS with certificate and host-name checks (relative to the manifest)


class MysqlBindingOptions(BaseModel):
    """Extra keys a secret's ``target:`` block may carry for a mysql target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = None  # this secret's account host part (default: the target's account_host)
    role: str | None = None  # alternating: the role holding the privileges (default ``<username>_role``)


class MysqlTarget:
    """A MySQL or MariaDB server whose accounts rotator manages (see the module docstring)."""

    type_name: ClassVar[str] = "mysql"
    config_model: ClassVar[type[BaseModel]] = MysqlConfig
    binding_model: ClassVar[type[BaseModel]] = MysqlBindingOptions
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SINGLE, Capability.ALTERNATING, Capability.DUAL})

    def __init__(self, *, name: str, config: MysqlConfig, base_dir: Path, admin: AdminCredentials) -> None:
        self.name, self.config, self._admin_credentials = name, config, admin
        self._ssl_ca = None if config.ssl_ca is None else str(
            Path(config.ssl_ca) if Path(config.ssl_ca).is_absolute() else base_dir / config.ssl_ca)
        self._lock = threading.Lock()
        self._conn: _Conn | None = None
        self._server: Server | None = None

    def __repr__(self) -> str:
        return f"MysqlTarget(name={self.name!r}, host={self.config.host!r}, port={self.config.port})"

    # --- the Target protocol ---------------------------------------------------------------------------

    def fields(self, binding: Binding) -> dict[str, Any]:
        """``engine``, ``host``, ``port`` and (when configured) ``database``."""
        doc: dict[str, Any] = {"engine": "mysql", "host": self.config.host, "port": self.config.port}
        if self.config.database:
            doc["database"] = self.config.database
        return doc

    def server(self) -> Server:
        """The server's flavour and version (one ``SELECT VERSION()`` per admin connection)."""
        return self._with_admin(lambda conn: self._server or Server.parse("0"))

    def supported(self) -> frozenset[Capability]:
        """The strategies this server really offers (``dual`` only on MySQL >= 8.0.14)."""
        return self.capabilities if self.server().dual else self.capabilities - {Capability.DUAL}

    def prepare(self, binding: Binding) -> None:
        """Create what the binding needs; every statement is idempotent, so a re-run after a crash heals."""
        self._need_dual(binding)
        host = self._account_host(binding)

        def run(conn: _Conn) -> None:
            server = self._server or Server.parse("0")
            role = self.role_of(binding)
            if binding.strategy is Strategy.ALTERNATING:
                self._run(conn, f"CREATE ROLE {role}", f"CREATE ROLE IF NOT EXISTS {_ident(role)}")
            for user in binding.identities():
                account = _account(conn, user, host)
                self._run(conn, f"CREATE USER {user}", f"CREATE USER IF NOT EXISTS {account} ACCOUNT LOCK")
                if binding.strategy is not Strategy.ALTERNATING:
                    continue
                self._run(conn, f"GRANT {role} TO {user}", f"GRANT {_ident(role)} TO {account}")
                current = self._query(conn, server.default_role_of(), (user, host))
                if current and current[0][0] not in (role, "", None):
                    _log.warning("target %s: %s already has default role %s; leaving it (grant %s to it instead)",
                                 self.name, user, current[0][0], role)
                    continue
                self._run(conn, f"SET DEFAULT ROLE {role} FOR {user}", server.default_role(_ident(role), account))

        self._with_admin(run)

    def issue(self, binding: Binding, username: str, keep: Sequence[Credential]) -> Credential:
        """Not supported: rotator generates database passwords itself (no ``ISSUES`` capability)."""
        raise OperationFailed(f"target '{self.name}': mysql targets do not issue credentials")

    def enable(self, binding: Binding, credential: Credential) -> None:
        """Make the credential log in: set the password (dual: retaining the current one) and unlock."""
        user = self._identity(binding, credential)
        self._need_dual(binding)
        if binding.strategy is Strategy.DUAL and self._logs_in(binding, credential):
            return  # already one of the two passwords: a second RETAIN would push the other one out
        retain = binding.strategy is Strategy.DUAL and self._has_password(binding, user)
        lock = "" if binding.strategy is Strategy.DUAL else " ACCOUNT UNLOCK"
        self._set_password(binding, user, credential.secret, retain=retain, suffix=lock)

    def disable(self, binding: Binding, credential: Credential) -> None:
        """Stop ``credential`` logging in if the account still holds it; other credentials are untouched."""
        user = self._identity(binding, credential)
        self._need_dual(binding)
        if not self._holds(binding, credential):
            return
        if binding.strategy is Strategy.DUAL:
            plugin, primary, retained = self._auth(binding, user)
            if retained and stored_matches(plugin, primary, credential.secret) is False:
                account = self._with_admin(lambda conn: _account(conn, user, self._account_host(binding)))
                self._with_admin(lambda conn: self._run(conn, f"ALTER USER {user} DISCARD OLD PASSWORD",
                                                        f"ALTER USER {account} DISCARD OLD PASSWORD"))
                return
            if retained:
                raise OperationFailed(
                    f"target '{self.name}': cannot remove the current password of '{user}' while keeping its "
                    "retained one (MySQL cannot promote a retained password)",
                    hint="let the rotation finish (retire drops the retained password) or use alternating")
        suffix = " ACCOUNT LOCK" if binding.strategy is Strategy.ALTERNATING else ""
        self._set_password(binding, user, secrets.token_urlsafe(32), retain=False, suffix=suffix)

    def login(self, binding: Binding, credential: Credential) -> None:
        """Connect as the credential and run ``SELECT 1``; CredentialRefused when the server says no."""
        user = self._identity(binding, credential)
        try:
            conn = self._connect(user, credential.secret)
        except pymysql.err.MySQLError as exc:
            raise _errors.connect_error(self.name, user, exc, admin=False) from None
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        except pymysql.err.MySQLError as exc:
            raise _errors.connect_error(self.name, user, exc, admin=False) from None
        finally:
            conn.close()

    def check(self) -> None:
        """Log in as the admin and confirm it may manage accounts (``CREATE USER``)."""
        rows = self._with_admin(lambda conn: self._query(conn, "SHOW GRANTS", ()))
        grants = " ".join(str(r[0]).upper() for r in rows)
        if "ALL PRIVILEGES ON *.*" not in grants and "CREATE USER" not in grants:
            raise TargetDenied(f"target '{self.name}': the admin lacks CREATE USER",
                               hint="GRANT CREATE USER ON *.* TO <admin> (and the privileges it hands on)")

    def close(self) -> None:
        """Close the admin connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- helpers ---------------------------------------------------------------------------------------

    def role_of(self, binding: Binding) -> str:
        """The role of an alternating binding: ``options.role`` or ``<username>_role``."""
        return MysqlBindingOptions.model_validate(_own_options(binding)).role or f"{binding.username}_role"

    def _account_host(self, binding: Binding) -> str:
        return MysqlBindingOptions.model_validate(_own_options(binding)).host or self.config.account_host

    def _need_dual(self, binding: Binding) -> None:
        if binding.strategy is Strategy.DUAL:
            server = self.server()
            if not server.dual:
                raise OperationFailed(
                    f"target '{self.name}': secret '{binding.secret}' uses strategy dual, but {server.label} has "
                    "no dual passwords (RETAIN CURRENT PASSWORD needs MySQL >= 8.0.14); use strategy: alternating",
                    hint="use strategy: alternating (two accounts sharing one role)")

    def _identity(self, binding: Binding, credential: Credential) -> str:
        user = credential.username
        if user not in binding.identities():
            raise OperationFailed(f"target '{self.name}': credential for '{user}' is not an identity of "
                                  f"secret '{binding.secret}' ({', '.join(binding.identities())})")
        return user

    def _set_password(self, binding: Binding, user: str, password: str, *, retain: bool, suffix: str) -> None:
        host = self._account_host(binding)

        def run(conn: _Conn) -> None:
            server = self._server or Server.parse("0")
            account = _account(conn, user, host)
            if server.mariadb:
                value = native_hash(password)
                statement = f"ALTER USER {account} IDENTIFIED BY PASSWORD {conn.escape(value)}{suffix}"
            else:
                value = password
                keep = " RETAIN CURRENT PASSWORD" if retain else ""
                statement = f"ALTER USER {account} IDENTIFIED BY {conn.escape(value)}{keep}{suffix}"
            self._run(conn, f"ALTER USER {user} IDENTIFIED BY ...", statement, redact=(value, password))

        self._with_admin(run)

    def _auth(self, binding: Binding, user: str) -> tuple[str, Any, Any]:
        host = self._account_host(binding)
        rows = self._with_admin(lambda conn: self._query(
            conn, (self._server or Server.parse("0")).auth_query(), (user, host)))
        if not rows:
            return "", None, None
        return str(rows[0][0]), rows[0][1], rows[0][2]

    def _has_password(self, binding: Binding, user: str) -> bool:
        return bool(self._auth(binding, user)[1])

    def _holds(self, binding: Binding, credential: Credential) -> bool:
        """Does the account still hold ``credential``? Its hash when this machine can check it (single and
        alternating), else a login attempt."""
        if binding.strategy is not Strategy.DUAL:
            plugin, primary, _ = self._auth(binding, credential.username)
            if primary is None and not plugin:
                return False  # no such account
            matches = stored_matches(plugin, primary, credential.secret)
            if matches is not None:
                return matches  # locked or not: locking again and a new random password are harmless
        return self._logs_in(binding, credential)

    def _logs_in(self, binding: Binding, credential: Credential) -> bool:
        try:
            self.login(binding, credential)
        except CredentialRefused:
            return False
        return True

    def _connect(self, user: str, password: str) -> _Conn:
        ctx = ssl.create_default_context(cafile=self._ssl_ca) if self._ssl_ca else None
        return pymysql.connect(host=self.config.host, port=self.config.port, user=user, password=password,
                               database=self.config.database, connect_timeout=self.config.connect_timeout,
                               read_timeout=self.config.statement_timeout + 5, autocommit=True, ssl=ctx,
                               charset="utf8mb4", program_name="rotator")

    def _open_admin(self) -> _Conn:
        """Log in with the first admin credential the server accepts (tried in order, for an admin that is
        itself mid-rotation), and learn which server this is."""
        candidates = list(self._admin_credentials())
        if not candidates:
            raise TargetDenied(f"target '{self.name}': no admin credential is configured")
        refused: Exception | None = None
        for candidate in candidates:
            try:
                conn = self._connect(candidate.username, candidate.secret)
            except pymysql.err.MySQLError as exc:
                error = _errors.connect_error(self.name, candidate.username, exc, admin=True)
                if not isinstance(error, TargetDenied):
                    raise error from None
                refused = refused or error
                continue
            try:
                self._server = Server.parse(str(self._query(conn, "SELECT VERSION()", ())[0][0]))
                self._query(conn, "SET SESSION lock_wait_timeout = %s", (self.config.statement_timeout,))
            except _Lost as lost:
                conn.close()
                raise lost.error from None
            except Exception:
                conn.close()
                raise
            return conn
        assert refused is not None
        raise refused

    def _with_admin(self, work: Callable[[_Conn], _T]) -> _T:
        """Run ``work`` on the admin connection; a kept connection that was lost is re-opened once."""
        with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None
                if self._conn is None:
                    self._conn = self._open_admin()
                try:
                    return work(self._conn)
                except _Lost as lost:
                    self._conn.close()
                    self._conn = None
                    if fresh or attempt == 2:
                        raise lost.error from None
            raise AssertionError("unreachable")

    def _run(self, conn: _Conn, label: str, statement: str, *, redact: tuple[str, ...] = ()) -> None:
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        except pymysql.err.MySQLError as exc:
            error = _errors.statement_error(self.name, label, exc, redact=redact)
            raise (_Lost(error) if _errors.code_of(exc) in _LOST else error) from None

    def _query(self, conn: _Conn, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with conn.cursor() as cur:
                cur.execute(query, params or None)
                return list(cur.fetchall())
        except pymysql.err.MySQLError as exc:
            error = _errors.statement_error(self.name, "a catalog query", exc)
            raise (_Lost(error) if _errors.code_of(exc) in _LOST else error) from None


class _Lost(Exception):
    """Internal: the admin connection was lost during a statement (carries the translated error)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _account(conn: _Conn, user: str, host: str) -> str:
    return f"{conn.escape(user)}@{conn.escape(host)}"
