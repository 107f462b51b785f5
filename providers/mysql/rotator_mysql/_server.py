"""What the server is (``SELECT VERSION()``) and the SQL that differs between MySQL and MariaDB.

``dual`` is decided here, at run time: the class declares ``Capability.DUAL`` because MySQL >= 8.0.14 has it
(``RETAIN CURRENT PASSWORD`` / ``DISCARD OLD PASSWORD``), and every dual step first checks the server it is
talking to; on MariaDB (which has no dual passwords) or an older MySQL it fails with one line naming the target
and suggesting ``strategy: alternating``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Server"]


@dataclass(frozen=True, slots=True)
class Server:
    """The flavour and version of one server."""

    version: str
    mariadb: bool
    numbers: tuple[int, ...]

    @classmethod
    def parse(cls, version: str) -> Server:
        """From ``SELECT VERSION()``: ``10.11.19-MariaDB-0+deb12u1`` or ``8.0.36``."""
        numbers = tuple(int(n) for n in re.findall(r"\d+", version.split("-", 1)[0])[:3])
        return cls(version=version, mariadb="mariadb" in version.lower(), numbers=numbers)

    @property
    def dual(self) -> bool:
        """Whether the server keeps a retained second password (MySQL >= 8.0.14)."""
        return not self.mariadb and self.numbers >= (8, 0, 14)

    @property
    def label(self) -> str:
        return f"{'MariaDB' if self.mariadb else 'MySQL'} {'.'.join(map(str, self.numbers))}"

    def default_role(self, role: str, account: str) -> str:
        """``SET DEFAULT ROLE``: ``FOR`` on MariaDB, ``TO`` on MySQL."""
        return f"SET DEFAULT ROLE {role} {'FOR' if self.mariadb else 'TO'} {account}"

    def role_exists(self) -> str:
        """A query with one ``%s`` (the role name) returning a row when the role exists."""
        if self.mariadb:
            return "SELECT 1 FROM mysql.user WHERE User = %s AND is_role = 'Y'"
        return "SELECT 1 FROM mysql.user WHERE User = %s AND Host = '%%'"

    def default_role_of(self) -> str:
        """A query with ``%s`` user and host returning the account's default role, if any."""
        if self.mariadb:
            return "SELECT default_role FROM mysql.user WHERE User = %s AND Host = %s AND default_role <> ''"
        return "SELECT DEFAULT_ROLE_USER FROM mysql.default_roles WHERE USER = %s AND HOST = %s"

    def auth_query(self) -> str:
        """A query with ``%s`` user and host: plugin, primary authentication string, retained (dual) one."""
        if self.mariadb:
            return "SELECT plugin, authentication_string, NULL FROM mysql.user WHERE User = %s AND Host = %s"
        return ("SELECT plugin, authentication_string, "
                "JSON_UNQUOTE(JSON_EXTRACT(User_attributes, '$.additional_password')) "
                "FROM mysql.user WHERE User = %s AND Host = %s")
