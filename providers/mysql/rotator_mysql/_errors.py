"""Translating PyMySQL errors into rotator's error tree, by the server's numeric error code.

=========================================== ==================================================================
1045 access denied, 1044 no access to the   login of a credential under test: CredentialRefused;
database, 3118 / 4151 account locked        the admin's login: TargetDenied
2002 / 2003 / 2006 / 2013 / 1040 / 1129     TargetUnavailable (cannot connect, lost, too many connections)
1049 unknown database                       OperationFailed (fix ``targets.<name>.database``)
1227 / 1142 / 1044 / 1410 on a statement    TargetDenied naming the statement
anything else                               OperationFailed with the server's message
=========================================== ==================================================================
"""

from __future__ import annotations

from typing import Any

import pymysql

from rotator.spi import CredentialRefused, OperationFailed, TargetDenied, TargetUnavailable

__all__ = ["code_of", "connect_error", "statement_error"]

_REFUSED = frozenset({1045, 1044, 3118, 4151, 1698})
_UNREACHABLE = frozenset({2002, 2003, 2005, 2006, 2013, 2055, 1040, 1129, 1203})
_DENIED = frozenset({1227, 1142, 1044, 1410, 1045, 1370})


def code_of(exc: BaseException) -> int:
    """The MySQL error number of a PyMySQL exception (0 when there is none)."""
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else 0


def _message(exc: BaseException) -> str:
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    text = str(args[1]) if len(args) > 1 else str(exc)
    return " ".join(text.split())[:300]


def connect_error(target: str, who: str, exc: BaseException, *, admin: bool) -> Exception:
    """The rotator error for a failed connection as ``who`` (the admin, or a credential under test)."""
    code, why = code_of(exc), _message(exc)
    if code in _REFUSED:
        if admin:
            return TargetDenied(f"target '{target}': the admin login as '{who}' was refused ({why})",
                                hint="check the target's admin credential (targets.<name>.admin)")
        return CredentialRefused(f"target '{target}': login as '{who}' was refused ({why})")
    if code == 1049:
        return OperationFailed(f"target '{target}': {why}", hint="check targets.<name>.database")
    if code in _UNREACHABLE or not isinstance(exc, pymysql.err.MySQLError) or code == 0:
        return TargetUnavailable(f"target '{target}': cannot connect ({why})")
    return OperationFailed(f"target '{target}': connecting as '{who}' failed [{code}] ({why})")


def statement_error(target: str, statement: str, exc: BaseException, *, redact: tuple[str, ...] = ()) -> Exception:
    """The rotator error for a failed admin statement; ``statement`` is a label without any value in it, and
    every string in ``redact`` (the password or hash the statement carried) is cut out of the server's message
    (a syntax error quotes the statement "near ...")."""
    code, why = code_of(exc), _message(exc)
    if code == 1064 and " near " in why:
        why = why.split(" near ", 1)[0]
    for value in redact:
        if value:
            why = why.replace(value, "**redacted**")
    if code in _DENIED:
        return TargetDenied(f"target '{target}': the admin may not run {statement} ({why})",
                            hint="grant the admin CREATE USER (and the privileges it hands to roles, "
                                 "WITH GRANT OPTION)")
    if code in _UNREACHABLE:
        return TargetUnavailable(f"target '{target}': connection lost during {statement} ({why})")
    return OperationFailed(f"target '{target}': {statement} failed [{code}] ({why})")
