"""Targets: the systems that *check* a credential (a database role, a Redis ACL user, an IAM user, an API).

A store keeps the keyset; a target makes the keyset's values true where logins happen. A target plugin is a
small class with five primitives (:class:`Target`); the core maps every keyset transition onto them
(:mod:`rotator.targeting`), so a plugin never needs to know the rotation state machine. Every primitive
must be **idempotent**: the engine repeats a step after a crash, and a repeated call must leave the target
as one call would.

Error contract (translate driver exceptions at the boundary with ``raise ... from exc``):

- :class:`~rotator.errors.TargetUnavailable`: the target cannot be reached (connection refused, timeout).
- :class:`~rotator.errors.TargetDenied`: rotator's admin credential was refused or lacks a privilege.
- :class:`~rotator.errors.CredentialRefused`: :meth:`Target.login` was refused for the credential tested.
- :class:`~rotator.errors.OperationFailed`: anything else (bad configuration found at run time).

Messages name the target and the identity, never a password. Targets are constructed without touching the
network and must be safe to call from several threads (a lock or a connection per call is fine).

Strategies (chosen per secret, ``target: {strategy: ...}``):

- ``single``: one identity, one password; ``enable`` replaces it, so the old login stops at once.
- ``dual``: one identity holding two credentials natively (Redis ACL, IAM keys, MySQL 8 RETAIN CURRENT
  PASSWORD); ``enable`` adds, ``disable`` removes one.
- ``alternating``: two identities (``app`` and ``app_clone``); each rotation sets the password of the one not in
  use, so the previous login keeps working through grace. ``prepare`` creates both (and the shared group role
  that holds the grants).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from rotator._plugins import installed, load_plugin
from rotator.errors import ManifestError
from rotator.keyset import SecretValue

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "TARGET_ENTRY_POINT_GROUP",
    "AdminCredentials",
    "Binding",
    "Capability",
    "Credential",
    "Strategy",
    "Target",
    "installed_targets",
    "load_target_class",
]

TARGET_ENTRY_POINT_GROUP = "rotator.targets"
_INSTALL_HINTS = {
    "postgres": "pip install -e providers/postgres",
    "mysql": "pip install -e providers/mysql",
    "redis": "pip install -e providers/redis",
    "aws_iam": "pip install -e providers/aws",
}


class Strategy(StrEnum):
    """How a target keeps the grace promise (see the module docstring)."""

    SINGLE = "single"
    DUAL = "dual"
    ALTERNATING = "alternating"


class Capability(StrEnum):
    """What a store or a target declares it can do; the core reads these instead of probing with getattr."""

    # stores
    STATE_READ = "state_read"  # read_state() may leave out values that need extra requests
    ASSIGNS_VERSION_IDS = "assigns_version_ids"  # stage stores the version under an id of its own
    MULTI_PREVIOUS = "multi_previous"  # holds several previous versions, each with its own grace deadline
    NO_RETRY = "no_retry"  # transient failures are not fixed by waiting (in-process stores)
    # targets
    SINGLE = "single"
    DUAL = "dual"
    ALTERNATING = "alternating"
    ISSUES = "issues"  # the target issues the credential (IAM CreateAccessKey, a key-issuing API)


SECRET_FIELDS = frozenset({"password", "secret", "secret_access_key", "token", "api_key", "key", "url"})


class Credential(Mapping[str, Any]):
    """A structured credential document (``{username, password, host, port, database, ...}``, the shape of
    AWS's RDS secrets) that never shows its secret fields in ``repr``, logs or tracebacks.

    It is a read-only mapping; :meth:`to_value` gives the JSON a store keeps, :meth:`from_value` parses it.
    """

    __slots__ = ("_doc",)

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self._doc = dict(doc)

    @classmethod
    def from_value(cls, value: SecretValue) -> Credential:
        """Parse a stored value; a plain (non-JSON) value becomes ``{"password": value}``."""
        text = value.reveal()
        try:
            doc = json.loads(text)
        except ValueError:
            return cls({"password": text})
        return cls(doc) if isinstance(doc, dict) else cls({"password": text})

    def to_value(self) -> SecretValue:
        """The JSON document as stored (keys sorted, so equal documents are equal strings)."""
        return SecretValue(json.dumps(self._doc, sort_keys=True, separators=(",", ":")))

    @property
    def username(self) -> str:
        return str(self._doc.get("username", ""))

    @property
    def secret(self) -> str:
        """The secret part: ``password``, or ``secret_access_key`` for IAM-style documents."""
        for name in ("password", "secret_access_key", "secret", "token", "api_key", "key"):
            if name in self._doc:
                return str(self._doc[name])
        raise KeyError("credential has no secret field")

    def with_fields(self, **changes: Any) -> Credential:
        """A copy with ``changes`` applied (``None`` removes a field)."""
        doc = {k: v for k, v in {**self._doc, **changes}.items() if v is not None}
        return Credential(doc)

    def __getitem__(self, key: str) -> Any:
        return self._doc[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._doc)

    def __len__(self) -> int:
        return len(self._doc)

    def __repr__(self) -> str:
        shown = {k: ("**redacted**" if k in SECRET_FIELDS else v) for k, v in sorted(self._doc.items())}
        return f"Credential({shown!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credential):
            return NotImplemented
        return self.to_value() == other.to_value()

    def __hash__(self) -> int:
        return hash(("Credential", self.username))

    def __reduce__(self) -> Any:
        raise TypeError("Credential cannot be pickled")


@dataclass(frozen=True, slots=True)
class Binding:
    """One secret bound to a target: whose credential it is and how it rotates.

    ``username`` is the primary identity; ``clone`` the second identity of ``alternating`` (default
    ``<username>_clone``); ``options`` holds any further keys of the secret's ``target:`` block that the
    target's own ``binding_model`` accepted (e.g. ``group`` for PostgreSQL's group role).
    """

    secret: str
    target: str
    username: str
    strategy: Strategy
    clone: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def identities(self) -> tuple[str, ...]:
        """The identities this binding uses: one, or two for ``alternating``."""
        if self.strategy is Strategy.ALTERNATING:
            return (self.username, self.clone or f"{self.username}_clone")
        return (self.username,)

    def other(self, username: str) -> str:
        """For ``alternating``: the identity that is not ``username`` (the next rotation's)."""
        first, second = self.identities() if self.strategy is Strategy.ALTERNATING else (username, username)
        return second if username == first else first


AdminCredentials = Callable[[], Sequence[Credential]]
"""Returns rotator's admin credentials for a target, best first (current, then pending, then previous when the
admin secret is itself managed and mid-rotation). A target tries them in order on an authentication failure."""


@runtime_checkable
class Target(Protocol):
    """What a target plugin implements. See the module docstring for the error contract.

    Constructor convention: ``Cls(*, name, config, base_dir, admin)`` where ``config`` is an instance of
    ``config_model`` (the ``targets.<name>`` block of the manifest, minus ``type``, ``admin`` and ``url``) and
    ``admin`` is an :data:`AdminCredentials` callable. An optional ``binding_model`` class variable (a pydantic
    model) validates the extra keys of a secret's ``target:`` block at manifest load (exit 2 on a typo).
    """

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    capabilities: ClassVar[frozenset[Capability]]

    def fields(self, binding: Binding) -> dict[str, Any]:
        """Non-secret fields stored in the credential document beside username/password (host, port, ...)."""

    def prepare(self, binding: Binding) -> None:
        """Make the binding's identities exist (``alternating``: both, in the group role that holds grants)."""

    def issue(self, binding: Binding, username: str, keep: Sequence[Credential]) -> Credential:
        """``ISSUES`` targets only: create a new credential for ``username`` at the target and return it.

        ``keep`` lists the credentials the store still accepts; anything else the target holds for that identity
        is a leftover of a crashed attempt and may be deleted to make room (IAM's two-key limit)."""

    def enable(self, binding: Binding, credential: Credential) -> None:
        """Make ``credential`` log in (set, or for ``dual`` add, its secret for ``credential.username``)."""

    def disable(self, binding: Binding, credential: Credential) -> None:
        """Make ``credential`` stop logging in without touching any other credential; absent is fine."""

    def login(self, binding: Binding, credential: Credential) -> None:
        """Log in with ``credential`` over a real connection (plus a trivial query); CredentialRefused if refused."""

    def check(self) -> None:
        """Raise TargetUnavailable / TargetDenied if the target cannot be administered now."""

    def close(self) -> None:
        """Release connections."""


# --- registry ------------------------------------------------------------------------------------------


def installed_targets() -> dict[str, EntryPoint]:
    """Target type names that are installed, mapped to their (not yet loaded) entry points."""
    return installed(TARGET_ENTRY_POINT_GROUP)


def load_target_class(type_name: str) -> type[Target]:
    """Import the target class registered as ``type_name``; a clear error names what is installed."""
    cls: type[Target] = load_plugin(TARGET_ENTRY_POINT_GROUP, type_name, "target", hints=_INSTALL_HINTS,
                                    attrs=("config_model", "capabilities"), error=ManifestError)
    return cls
