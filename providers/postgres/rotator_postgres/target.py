"""The PostgreSQL target: makes a rotated password true on the server, without ever sending it in plaintext.

Strategies: ``single`` and ``alternating`` (PostgreSQL has no dual passwords). Per primitive:

========== ===================================================================================================
prepare    single: ``CREATE ROLE u LOGIN`` if missing. alternating: the group role and both identities
           (:mod:`rotator_postgres._roles`), in one transaction; nothing when already in place (one query).
enable     ``ALTER ROLE u [LOGIN] PASSWORD '<SCRAM verifier>'``; the verifier is computed client-side by libpq
           (``PQencryptPasswordConn``), so only the verifier reaches the server and its log.
disable    only when the role still holds this password (checked against ``pg_authid`` when the admin is a
           superuser, else by a login attempt): alternating ``ALTER ROLE u NOLOGIN PASSWORD NULL``; single
           ``ALTER ROLE u PASSWORD NULL``. A password the role no longer holds is already disabled: no-op.
login      a new connection as the credential, then ``SELECT 1``.
========== ===================================================================================================

One admin connection is kept (behind a lock) and re-opened once if it broke. The admin credentials are tried
in order on an authentication failure, so an admin that is itself mid-rotation (``strategy: single`` on its own
role) keeps working. Where the admin may, it turns off statement logging for its own session
(``SET log_statement = 'none'``), so not even the verifier reaches the server log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import psycopg
from psycopg import sql
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
from rotator_postgres import _errors, _roles
from rotator_postgres._scram import verifier_matches

__all__ = ["PostgresBindingOptions", "PostgresConfig", "PostgresTarget"]

_log = logging.getLogger("rotator.targets.postgres")
_T = TypeVar("_T")
_MAX_NAME = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer names silently, so rotator refuses them
_CORE_OPTIONS = frozenset({"url"})  # keys of a secret's target: block that the core itself uses


def _own_options(binding: Binding) -> dict[str, Any]:
    """The binding options meant for this plugin (the core's own keys, such as ``url``, left out)."""
    return {k: v for k, v in binding.options.items() if k not in _CORE_OPTIONS}


class PostgresConfig(BaseModel):
    """``targets.<name>`` for ``type: postgres`` (without ``type`` and ``admin``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    database: str = "postgres"
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    connect_timeout: int = Field(10, ge=1, le=600)
    statement_timeout: int = Field(30, ge=1, le=3600)  # seconds for an admin statement (and its lock wait)


class PostgresBindingOptions(BaseModel):
    """Extra keys a secret's ``target:`` block may carry for a postgres target."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    group: str | None = None  # alternating: the NOLOGIN role holding grants (default ``<username>_group``)


class PostgresTarget:
    """A PostgreSQL server whose roles rotator manages (see the module docstring)."""

    type_name: ClassVar[str] = "postgres"
    config_model: ClassVar[type[BaseModel]] = PostgresConfig
    binding_model: ClassVar[type[BaseModel]] = PostgresBindingOptions
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SINGLE, Capability.ALTERNATING})

    def __init__(self, *, name: str, config: PostgresConfig, base_dir: Path, admin: AdminCredentials) -> None:
        self.name, self.config, self._admin_credentials = name, config, admin
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._admin_user = ""
        self._authid_readable: bool | None = None

    def __repr__(self) -> str:
        return f"PostgresTarget(name={self.name!r}, host={self.config.host!r}, port={self.config.port})"

    # --- the Target protocol ---------------------------------------------------------------------------

    def fields(self, binding: Binding) -> dict[str, Any]:
        """``host``, ``port``, ``database`` and ``engine`` (the field names of AWS's RDS secrets)."""
        return {"engine": "postgres", "host": self.config.host, "port": self.config.port,
                "database": self.config.database}

    def prepare(self, binding: Binding) -> None:
        """Create what the binding needs (idempotent: one read-only query when everything exists)."""
        names = self._names(binding)
        group = self.group_of(binding)

        def run(conn: psycopg.Connection[Any]) -> None:
            roles = _roles.read_roles(conn, [*names, group])
            if binding.strategy is Strategy.ALTERNATING:
                primary, clone = names
                steps = _roles.plan_alternating(primary, clone, group, roles)
                if primary in roles and roles[primary].session_role() != group:
                    _log.warning("target %s: role %s existed before rotator; it joined %s but keeps its own "
                                 "session role until its grants move to %s (see the README)",
                                 self.name, primary, group, group)
            else:
                steps = _roles.plan_single(names[0], roles)
            if steps:
                with conn.transaction():
                    for label, statement in steps:
                        self._execute(conn, label, statement)

        self._with_admin(run)

    def issue(self, binding: Binding, username: str, keep: Sequence[Credential]) -> Credential:
        """Not supported: rotator generates database passwords itself (no ``ISSUES`` capability)."""
        raise OperationFailed(f"target '{self.name}': postgres targets do not issue credentials")

    def enable(self, binding: Binding, credential: Credential) -> None:
        """Set the role's password to the credential's (as a SCRAM verifier); alternating also sets LOGIN."""
        user = self._identity(binding, credential)
        login = sql.SQL("LOGIN ") if binding.strategy is Strategy.ALTERNATING else sql.SQL("")

        def run(conn: psycopg.Connection[Any]) -> None:
            verifier = self._verifier(conn, user, credential.secret)
            statement = sql.SQL("ALTER ROLE {} WITH {}PASSWORD {}").format(
                sql.Identifier(user), login, sql.Literal(verifier))
            self._execute(conn, f"ALTER ROLE {user} PASSWORD", statement)

        self._with_admin(run)

    def disable(self, binding: Binding, credential: Credential) -> None:
        """Stop ``credential`` from logging in if the role still holds it; otherwise nothing to do."""
        user = self._identity(binding, credential)
        if not self._holds(binding, credential):
            return
        if binding.strategy is Strategy.ALTERNATING:
            statement = sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD NULL").format(sql.Identifier(user))
        else:
            statement = sql.SQL("ALTER ROLE {} WITH PASSWORD NULL").format(sql.Identifier(user))
        self._with_admin(lambda conn: self._execute(conn, f"ALTER ROLE {user} PASSWORD NULL", statement))

    def login(self, binding: Binding, credential: Credential) -> None:
        """Connect as the credential and run ``SELECT 1``; CredentialRefused when the server says no."""
        user = self._identity(binding, credential)
        try:
            with self._connect(user, credential.secret) as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            raise _errors.connect_error(self.name, user, exc, admin=False) from None

    def check(self) -> None:
        """Log in as the admin and confirm it may manage roles (superuser or CREATEROLE)."""
        row = self._with_admin(lambda conn: conn.execute(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone())
        if not row or not row[0]:
            raise TargetDenied(f"target '{self.name}': admin '{self._admin_user}' lacks CREATEROLE",
                               hint=f"ALTER ROLE {self._admin_user} CREATEROLE (as a superuser)")

    def close(self) -> None:
        """Close the admin connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- helpers ---------------------------------------------------------------------------------------

    def group_of(self, binding: Binding) -> str:
        """The group role of an alternating binding: ``options.group`` or ``<username>_group``."""
        options = PostgresBindingOptions.model_validate(_own_options(binding))
        group = options.group or f"{binding.username}_group"
        self._check_name(binding, group)
        return group

    def _names(self, binding: Binding) -> tuple[str, ...]:
        names = binding.identities()
        for name in names:
            self._check_name(binding, name)
        return names

    def _check_name(self, binding: Binding, name: str) -> None:
        if not name or len(name.encode()) > _MAX_NAME:
            raise OperationFailed(f"target '{self.name}': role name '{name[:70]}' of secret '{binding.secret}' "
                                  f"must be 1 to {_MAX_NAME} bytes (PostgreSQL would truncate it)")

    def _identity(self, binding: Binding, credential: Credential) -> str:
        user = credential.username
        if user not in self._names(binding):
            raise OperationFailed(f"target '{self.name}': credential for '{user}' is not an identity of "
                                  f"secret '{binding.secret}' ({', '.join(binding.identities())})")
        return user

    def _connect(self, user: str, password: str) -> psycopg.Connection[Any]:
        c = self.config
        return psycopg.connect(host=c.host, port=c.port, dbname=c.database, user=user, password=password,
                               sslmode=c.sslmode, connect_timeout=c.connect_timeout,
                               application_name="rotator", autocommit=True)

    def _open_admin(self) -> psycopg.Connection[Any]:
        """Log in with the first admin credential the server accepts (see the module docstring)."""
        candidates = list(self._admin_credentials())
        if not candidates:
            raise TargetDenied(f"target '{self.name}': no admin credential is configured")
        refused: Exception | None = None
        for candidate in candidates:
            try:
                conn = self._connect(candidate.username, candidate.secret)
            except psycopg.Error as exc:
                error = _errors.connect_error(self.name, candidate.username, exc, admin=True)
                if not isinstance(error, TargetDenied):
                    raise error from None
                refused = refused or error
                continue
            self._admin_user = candidate.username
            seconds = self.config.statement_timeout
            try:
                conn.execute(f"SET statement_timeout = '{seconds}s'; SET lock_timeout = '{seconds}s'")
                try:
                    conn.execute("SET log_statement = 'none'")
                except psycopg.errors.InsufficientPrivilege:
                    _log.debug("target %s: admin may not lower log_statement; the log sees verifiers only",
                               self.name)
            except psycopg.Error as exc:
                conn.close()
                raise _errors.statement_error(self.name, "the admin session set-up", exc) from None
            return conn
        assert refused is not None
        if len(candidates) > 1:
            refused = TargetDenied(f"{refused} (tried {len(candidates)} admin credentials)", hint=getattr(
                refused, "hint", None))
        raise refused

    def _with_admin(self, work: Callable[[psycopg.Connection[Any]], _T]) -> _T:
        """Run ``work`` on the admin connection; a kept connection that broke is re-opened once."""
        with self._lock:
            for attempt in (1, 2):
                fresh = self._conn is None or self._conn.closed
                if self._conn is None or self._conn.closed:
                    self._conn = self._open_admin()
                conn = self._conn
                try:
                    return work(conn)
                except psycopg.Error as exc:
                    if not conn.broken:
                        raise _errors.statement_error(self.name, "a catalog query", exc) from None
                    conn.close()
                    self._conn = None
                    if fresh or attempt == 2:
                        raise _errors.statement_error(self.name, "a statement", exc) from None
            raise AssertionError("unreachable")

    def _execute(self, conn: psycopg.Connection[Any], label: str, statement: sql.Composed) -> None:
        """Run one admin statement; ``label`` names it in errors (it never contains a value)."""
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            if conn.broken:
                raise  # _with_admin re-opens the connection and retries the idempotent step
            raise _errors.statement_error(self.name, label, exc) from None

    def _verifier(self, conn: psycopg.Connection[Any], user: str, password: str) -> str:
        """The SCRAM-SHA-256 verifier of ``password``, computed by libpq on this machine."""
        return conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()

    def _holds(self, binding: Binding, credential: Credential) -> bool:
        """Does the role still accept ``credential``? pg_authid when readable, else a login attempt."""
        user = credential.username
        if self._authid_readable is not False:
            row = self._with_admin(lambda conn: self._read_authid(conn, user))
            if row is not None:
                can_login, verifier = row
                if not can_login:
                    return False
                matches = verifier_matches(verifier, credential.secret)
                if matches is not None:
                    return matches
        try:
            self.login(binding, credential)
        except CredentialRefused:
            return False
        return True

    def _read_authid(self, conn: psycopg.Connection[Any], user: str) -> tuple[bool, str | None] | None:
        try:
            row = conn.execute("SELECT rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s",
                               (user,)).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            self._authid_readable = False
            return None
        except psycopg.Error as exc:
            raise _errors.statement_error(self.name, "SELECT FROM pg_authid", exc) from None
        self._authid_readable = True
        return (False, None) if row is None else (bool(row[0]), row[1])
