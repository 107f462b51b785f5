"""Translating psycopg errors into rotator's error tree (the only place that reads libpq's messages).

libpq reports a failed *connection* without a SQLSTATE (``psycopg.OperationalError.sqlstate`` is ``None``),
so connection failures are classified by the server's message text. The server writes those messages in its
``lc_messages`` language; the patterns below are PostgreSQL's English ones (the default and what managed
services use). An unrecognised connection failure is treated as *unavailable* (exit 4, retried), never as a
refused credential, so a localised server cannot make rotator believe a good password is bad.

Statement errors do carry a SQLSTATE: 42501 (insufficient privilege) becomes TargetDenied naming the
statement, 28P01/28000 a refused login, everything else OperationFailed with the server's primary message.
"""

from __future__ import annotations

from enum import Enum

import psycopg

from rotator.spi import CredentialRefused, OperationFailed, TargetDenied, TargetUnavailable

__all__ = ["ConnectFailure", "classify_connect", "connect_error", "reason", "statement_error"]


class ConnectFailure(Enum):
    """Why a connection attempt failed."""

    REFUSED = "refused"  # the server rejected the credential (wrong password, NOLOGIN, no such role, pg_hba)
    UNREACHABLE = "unreachable"  # nothing answered, or the server cannot take connections now
    NO_DATABASE = "no_database"  # the configured database does not exist


_REFUSED = (
    "password authentication failed",
    "is not permitted to log in",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects",
    "authentication failed",
    "no password supplied",
    "password is required",
    "password has expired",
)
_NO_DATABASE = ('database "',)


def reason(exc: BaseException) -> str:
    """The useful last part of a libpq message (``FATAL:  password authentication failed for user "x"``)."""
    text = str(exc)
    for marker in ("FATAL:", "ERROR:", "failed:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
            break
    first = next((line for line in text.splitlines() if line.strip()), text)
    return " ".join(first.split())[:300]


def classify_connect(exc: psycopg.Error) -> ConnectFailure:
    """Classify a failed ``psycopg.connect`` (see the module docstring)."""
    if exc.sqlstate in ("28P01", "28000"):
        return ConnectFailure.REFUSED
    if exc.sqlstate == "3D000":
        return ConnectFailure.NO_DATABASE
    text = str(exc)
    if any(p in text for p in _NO_DATABASE) and "does not exist" in text:
        return ConnectFailure.NO_DATABASE
    if any(p in text for p in _REFUSED) or ('role "' in text and "does not exist" in text):
        return ConnectFailure.REFUSED
    return ConnectFailure.UNREACHABLE


def connect_error(target: str, who: str, exc: psycopg.Error, *, admin: bool) -> Exception:
    """The rotator error for a failed connection as ``who`` (the admin, or a credential under test)."""
    kind = classify_connect(exc)
    why = reason(exc)
    if kind is ConnectFailure.REFUSED:
        if admin:
            return TargetDenied(f"target '{target}': the admin login as '{who}' was refused ({why})",
                                hint="check the target's admin credential (targets.<name>.admin)")
        return CredentialRefused(f"target '{target}': login as '{who}' was refused ({why})")
    if kind is ConnectFailure.NO_DATABASE:
        return OperationFailed(f"target '{target}': {why}", hint="check targets.<name>.database")
    return TargetUnavailable(f"target '{target}': cannot connect ({why})")


def statement_error(target: str, statement: str, exc: psycopg.Error) -> Exception:
    """The rotator error for a failed admin statement; ``statement`` is a label without any value in it."""
    primary = exc.diag.message_primary if exc.diag and exc.diag.message_primary else reason(exc)
    if exc.sqlstate == "42501":
        return TargetDenied(f"target '{target}': the admin may not run {statement} ({primary})",
                            hint="grant the admin CREATEROLE (or ADMIN OPTION on the roles it manages)")
    if exc.sqlstate in ("57014", "55P03"):  # statement_timeout / lock_timeout: busy now, retry later
        return TargetUnavailable(f"target '{target}': {statement} timed out ({primary})")
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return TargetUnavailable(f"target '{target}': connection lost during {statement} ({primary})")
    return OperationFailed(f"target '{target}': {statement} failed [{exc.sqlstate}] ({primary})")
