"""The SQL of ``prepare``: the identities of a binding and, for ``alternating``, the group role.

The group-role pattern (AWS rotation-lambda issues #56/#175 show why plain ``GRANT app TO app_clone`` is not
enough): a NOLOGIN role ``<username>_group`` holds the grants and owns the objects; both LOGIN identities are
members created ``IN ROLE`` it and carry ``ALTER ROLE x SET role = '<group>'``, so every session of either
identity runs as the group (``current_user`` is the group): a table created by ``app`` is owned by the group
and writable by ``app_clone`` and back.

An *adopted* primary (a role that existed before rotator's first ``prepare``) is made a member of the group
but keeps its own session role, because switching it would hide the privileges granted to it directly; the
README says how to move those grants to the group and then set the session role.

Everything ``prepare`` changes runs in one transaction, so a crash leaves either nothing or the whole set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["RoleState", "plan_alternating", "plan_single", "read_roles"]

_STATE = sql.SQL(
    "SELECT r.rolname, r.rolcanlogin, r.rolconfig,"
    " ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = r.oid)"
    " FROM pg_roles r WHERE r.rolname = ANY(%s)"
)


@dataclass(frozen=True, slots=True)
class RoleState:
    """What ``pg_roles`` says about one role."""

    name: str
    can_login: bool
    config: tuple[str, ...]
    member_of: frozenset[str]

    def session_role(self) -> str | None:
        """The role's ``SET role`` default, if any."""
        for item in self.config:
            key, _, value = item.partition("=")
            if key == "role":
                return value
        return None


def read_roles(conn: psycopg.Connection[Any], names: list[str]) -> dict[str, RoleState]:
    """One query: the state of every role in ``names`` that exists."""
    rows = conn.execute(_STATE, (names,)).fetchall()
    return {row[0]: RoleState(row[0], bool(row[1]), tuple(row[2] or ()), frozenset(row[3] or ())) for row in rows}


def plan_single(username: str, roles: dict[str, RoleState]) -> list[tuple[str, sql.Composed]]:
    """``single``: create the role (LOGIN, no password yet) if it is missing; an existing role is left alone."""
    if username in roles:
        return []
    return [(f"CREATE ROLE {username}", sql.SQL("CREATE ROLE {} WITH LOGIN").format(sql.Identifier(username)))]


def plan_alternating(primary: str, clone: str, group: str,
                     roles: dict[str, RoleState]) -> list[tuple[str, sql.Composed]]:
    """The statements (label, SQL) that bring the pair and its group to the pattern; none when already there."""
    steps: list[tuple[str, sql.Composed]] = []
    g = sql.Identifier(group)
    if group not in roles:
        steps.append((f"CREATE ROLE {group}", sql.SQL("CREATE ROLE {} WITH NOLOGIN").format(g)))
    for name in (primary, clone):
        ident = sql.Identifier(name)
        state = roles.get(name)
        if state is None:
            steps.append((f"CREATE ROLE {name}",
                          sql.SQL("CREATE ROLE {} WITH NOLOGIN IN ROLE {}").format(ident, g)))
        elif group not in state.member_of:
            steps.append((f"GRANT {group} TO {name}", sql.SQL("GRANT {} TO {}").format(g, ident)))
        adopted = name == primary and state is not None and state.session_role() != group
        if not adopted and (state is None or state.session_role() != group):
            steps.append((f"ALTER ROLE {name} SET role",
                          sql.SQL("ALTER ROLE {} SET role = {}").format(ident, sql.Literal(group))))
    return steps
