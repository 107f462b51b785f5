"""Every step as a value: a frozen request object with a pure ``apply(keyset) -> keyset``.

Stores persist a transition with ONE conditional write (a document store: ``write(expected,
t.apply(expected))``; AWS Secrets Manager maps each kind onto its label moves), and targets act on the same
values (:mod:`rotator.targeting`). New fields get defaults, so a plugin written against an older rotator keeps
working (the request-object pattern of Vault's database plugin v5).

The state machine itself lives in :mod:`rotator.keyset`; these classes only name a step and its arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rotator import keyset as ks
from rotator.errors import IllegalTransition
from rotator.keyset import Keyset, KeyVersion

__all__ = [
    "Adopt",
    "Create",
    "Discard",
    "Promote",
    "Purge",
    "Retire",
    "Revoke",
    "Rollback",
    "Stage",
    "Transition",
    "UpdateMeta",
]


@dataclass(frozen=True, slots=True)
class Create:
    """Store the first value of a new secret as current; the store must hold nothing yet."""

    version: KeyVersion
    meta: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, keyset: Keyset | None, name: str = "") -> Keyset:
        if keyset is not None:
            raise IllegalTransition(f"{keyset.name}: already exists")
        return Keyset(name=name, revision="", versions=(self.version,), meta=dict(self.meta))


@dataclass(frozen=True, slots=True)
class Adopt:
    """Take over a value rotator did not write (``managed=False``) as the current version."""

    def apply(self, keyset: Keyset) -> Keyset:
        if keyset.current is None:
            raise IllegalTransition(f"{keyset.name}: nothing to adopt")
        return keyset.replace(managed=True)


@dataclass(frozen=True, slots=True)
class Stage:
    """Add ``version`` as pending; ``meta`` changes ride on the same write (``None`` removes a key)."""

    version: KeyVersion
    meta: Mapping[str, Any] = field(default_factory=dict)

    def apply(self, keyset: Keyset) -> Keyset:
        base = ks.with_meta(keyset, **self.meta) if self.meta else keyset
        return ks.stage(base, self.version)


@dataclass(frozen=True, slots=True)
class Promote:
    """Pending ``version_id`` becomes current; the old current enters grace (or is revoked: an incident)."""

    version_id: str
    now: datetime
    grace: timedelta
    reason: str | None = None
    revoke: bool = False
    keep_previous: int = 1

    def apply(self, keyset: Keyset) -> Keyset:
        promoted = ks.promote(keyset, self.version_id, self.now, self.grace, self.reason, revoke=self.revoke,
                              keep_previous=self.keep_previous)
        return ks.with_meta(promoted, revoking=None) if "revoking" in promoted.meta else promoted


@dataclass(frozen=True, slots=True)
class Retire:
    """Previous ``version_id`` stops being accepted."""

    version_id: str
    now: datetime
    reason: str = "grace period ended"

    def apply(self, keyset: Keyset) -> Keyset:
        return ks.retire(keyset, self.version_id, self.now, self.reason)


@dataclass(frozen=True, slots=True)
class Revoke:
    """Previous (or retired) versions become ``revoked`` (terminal): an incident after another actor rotated."""

    version_ids: tuple[str, ...]
    now: datetime
    reason: str

    def apply(self, keyset: Keyset) -> Keyset:
        return ks.revoke(keyset, self.version_ids, self.now, self.reason)


@dataclass(frozen=True, slots=True)
class Rollback:
    """The previous value (or a retired one within ``window``, never a revoked one) becomes current again."""

    now: datetime
    reason: str
    window: timedelta

    def apply(self, keyset: Keyset) -> Keyset:
        return ks.rollback(keyset, self.now, self.reason, self.window)


@dataclass(frozen=True, slots=True)
class Discard:
    """Remove pending ``version_id`` (a failed or stale attempt)."""

    version_id: str

    def apply(self, keyset: Keyset) -> Keyset:
        return ks.discard(keyset, self.version_id)


@dataclass(frozen=True, slots=True)
class Purge:
    """Forget retired and revoked values whose rollback window has passed."""

    now: datetime
    window: timedelta

    def apply(self, keyset: Keyset) -> Keyset:
        return ks.purge(keyset, self.now, self.window)


@dataclass(frozen=True, slots=True)
class UpdateMeta:
    """Merge bookkeeping (notices sent, failures, acknowledgements); ``None`` removes a key."""

    changes: Mapping[str, Any]

    def apply(self, keyset: Keyset) -> Keyset:
        return ks.with_meta(keyset, **self.changes)


Transition = Adopt | Stage | Promote | Retire | Revoke | Rollback | Discard | Purge | UpdateMeta
"""A step on an existing keyset (``Create`` is separate: it has no ``expected``)."""
