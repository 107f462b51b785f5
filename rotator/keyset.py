"""The keyset: every version of one managed secret, each in one state, and the legal moves between them.

States (DESIGN.md section 1)::

    pending ──promote──▶ current ──promote(next)──▶ previous ──retire──▶ retired ──purge──▶ (gone)
       │                    ▲  │                        │                   │
       └──discard──▶ (gone) │  └─promote(revoke)──▶ revoked ──purge──▶ (gone)
                            └──────────rollback─────────┴───────────────────┘

``revoked`` is terminal: a value revoked in an incident (it leaked) is never made current again, not by
rollback and not by ``auto_rollback``. A keyset may hold several previous versions, each with its own grace
deadline (as a JWKS or a Tink keyset does), up to the ``keep_previous`` a promote is given; the oldest beyond
that is retired as superseded.

Each function below is a pure transition: it takes a keyset and returns the new keyset, or raises
:class:`~rotator.errors.IllegalTransition`. Providers persist the result with ONE conditional write, so the
stored keyset is always one of these states whoever crashes when.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from rotator.errors import IllegalTransition
from rotator.meta import frozen

__all__ = [
    "KeyVersion",
    "Keyset",
    "SecretValue",
    "State",
    "discard",
    "promote",
    "purge",
    "retire",
    "revoke",
    "rollback",
    "stage",
    "superseded_by_promote",
    "version_from_json",
    "version_to_json",
    "with_meta",
]


class State(StrEnum):
    """Lifecycle state of one key version."""

    PENDING = "pending"
    CURRENT = "current"
    PREVIOUS = "previous"
    RETIRED = "retired"
    REVOKED = "revoked"


class SecretValue:
    """A secret string that never shows itself in ``repr``, ``str``, logs or tracebacks.

    Call :meth:`reveal` at the one place the plain value is needed (a backend write, a hook's stdin).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the plain value."""
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('**redacted**')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        import hmac

        if not isinstance(other, SecretValue):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("SecretValue", len(self._value)))

    def __reduce__(self) -> Any:
        raise TypeError("SecretValue cannot be pickled")


@dataclass(frozen=True, slots=True)
class KeyVersion:
    """One version of a secret. ``value`` is ``None`` when the backend no longer holds it."""

    id: str
    state: State
    created_at: datetime
    value: SecretValue | None = field(default=None, compare=False)
    promoted_at: datetime | None = None
    expires_at: datetime | None = None  # previous: end of the grace period
    retired_at: datetime | None = None
    reason: str | None = None  # why it was retired / rolled back
    attempt: str | None = None  # token of the attempt that staged it
    actor: str | None = None
    public: Mapping[str, Any] | None = None  # public key as a JWK, for signing keys

    def replace(self, **changes: Any) -> KeyVersion:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, slots=True)
class Keyset:
    """All versions of one secret plus bookkeeping, as read from the backend at ``revision``.

    ``revision`` is the provider's opaque compare-and-set token (an integer row version, a KV version, a
    hash of AWS staging labels). ``managed`` is False for a value that exists but was not written by
    rotator (it can be adopted). ``meta`` holds JSON-able bookkeeping such as notices sent and failures, as
    stored (an immutable mapping); read it typed with :meth:`rotator.meta.KeysetMeta.of`.
    """

    name: str
    revision: str
    versions: tuple[KeyVersion, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    managed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "meta", frozen(self.meta))  # nobody mutates a keyset's bookkeeping by accident

    def _one(self, state: State) -> KeyVersion | None:
        for version in self.versions:
            if version.state is state:
                return version
        return None

    @property
    def current(self) -> KeyVersion | None:
        return self._one(State.CURRENT)

    @property
    def previous(self) -> KeyVersion | None:
        """The newest previous version (the one a rollback restores)."""
        found = self.previous_versions
        return found[0] if found else None

    @property
    def previous_versions(self) -> tuple[KeyVersion, ...]:
        """Every version still in its grace period, newest first."""
        old = [v for v in self.versions if v.state is State.PREVIOUS]
        return tuple(sorted(old, key=lambda v: (v.promoted_at or v.created_at, v.id), reverse=True))

    @property
    def revoked(self) -> tuple[KeyVersion, ...]:
        """Versions revoked in an incident (terminal: never current again)."""
        return tuple(v for v in self.versions if v.state is State.REVOKED)

    @property
    def pending(self) -> KeyVersion | None:
        return self._one(State.PENDING)

    @property
    def retired(self) -> tuple[KeyVersion, ...]:
        """Retired versions, newest retirement first."""
        old = [v for v in self.versions if v.state is State.RETIRED]
        epoch = datetime.min.replace(tzinfo=self.versions[0].created_at.tzinfo) if self.versions else None
        return tuple(sorted(old, key=lambda v: v.retired_at or epoch or v.created_at, reverse=True))

    def accepted(self) -> tuple[KeyVersion, ...]:
        """Versions verifiers accept now: current, every previous in grace (newest first), pending."""
        current, pending = self._one(State.CURRENT), self._one(State.PENDING)
        return (*(() if current is None else (current,)), *self.previous_versions,
                *(() if pending is None else (pending,)))

    def get(self, version_id: str) -> KeyVersion:
        """The version with ``version_id``; raises IllegalTransition if it is not in the keyset."""
        for version in self.versions:
            if version.id == version_id:
                return version
        raise IllegalTransition(f"{self.name}: no version {version_id}")

    def __iter__(self) -> Iterator[KeyVersion]:
        return iter(self.versions)

    def replace(self, **changes: Any) -> Keyset:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def _swap(self, *updated: KeyVersion, drop: frozenset[str] = frozenset()) -> Keyset:
        by_id = {v.id: v for v in updated}
        return self.replace(versions=tuple(by_id.get(v.id, v) for v in self.versions if v.id not in drop))


# --- transitions ---------------------------------------------------------------------------------------


def stage(keyset: Keyset, version: KeyVersion) -> Keyset:
    """Add ``version`` as pending. A keyset holds at most one pending version."""
    if keyset.pending is not None:
        raise IllegalTransition(f"{keyset.name}: a pending version {keyset.pending.id} already exists")
    if version.state is not State.PENDING:
        raise IllegalTransition(f"{keyset.name}: a staged version must be pending, not {version.state}")
    if any(v.id == version.id for v in keyset.versions):
        raise IllegalTransition(f"{keyset.name}: version id {version.id} is already used")
    return keyset.replace(versions=(*keyset.versions, version), managed=True)


def promote(keyset: Keyset, version_id: str, now: datetime, grace: timedelta, reason: str | None = None, *,
            revoke: bool = False, keep_previous: int = 1) -> Keyset:
    """Pending ``version_id`` becomes current; the old current becomes previous until ``now + grace``.

    ``revoke`` (an incident: the old value leaked) makes the old current ``revoked`` at once; ``grace`` of zero
    without ``revoke`` retires it. Earlier previous versions keep their own deadlines while at most
    ``keep_previous`` previous versions remain; the oldest beyond that, and any whose grace has ended, retire.
    """
    pending = keyset.get(version_id)
    if pending.state is not State.PENDING:
        raise IllegalTransition(f"{keyset.name}: cannot promote version {version_id}: it is {pending.state}")
    changed = [pending.replace(state=State.CURRENT, promoted_at=now)]
    demoted: KeyVersion | None = None
    if (old := keyset.current) is not None:
        if revoke:
            changed.append(_revoked(old, now, reason or "revoked"))
        elif grace > timedelta(0):
            demoted = old.replace(state=State.PREVIOUS, expires_at=now + grace)
            changed.append(demoted)
        else:
            changed.append(_retired(old, now, reason or "grace 0"))
    room = max(keep_previous, 0) - (1 if demoted is not None else 0)
    for older in keyset.previous_versions:  # newest first
        if revoke:  # an incident: every older value stops being accepted now
            changed.append(_revoked(older, now, reason or "revoked"))
        elif older.expires_at is not None and older.expires_at <= now:
            changed.append(_retired(older, now, "grace period ended"))
        elif room > 0:
            room -= 1
        else:
            changed.append(_retired(older, now, "superseded"))
    return keyset._swap(*changed)


def superseded_by_promote(keyset: Keyset, now: datetime, grace: timedelta, *, keep_previous: int = 1) -> tuple[
        KeyVersion, ...]:
    """Previous versions still in grace that a promote with ``keep_previous`` would retire early."""
    room = max(keep_previous, 0) - (1 if keyset.current is not None and grace > timedelta(0) else 0)
    cut = []
    for older in keyset.previous_versions:
        if older.expires_at is not None and older.expires_at <= now:
            continue
        if room > 0:
            room -= 1
        else:
            cut.append(older)
    return tuple(cut)


def retire(keyset: Keyset, version_id: str, now: datetime, reason: str = "grace period ended") -> Keyset:
    """Previous ``version_id`` stops being accepted."""
    version = keyset.get(version_id)
    if version.state is not State.PREVIOUS:
        raise IllegalTransition(f"{keyset.name}: cannot retire version {version_id}: it is {version.state}")
    return keyset._swap(_retired(version, now, reason))


def rollback(keyset: Keyset, now: datetime, reason: str, window: timedelta) -> Keyset:
    """The previous value (or the newest retired one still held, within ``window``) becomes current again.

    The value rolled back from is retired with ``reason``. A revoked value is never a candidate: if the newest
    value that could be restored was revoked, this raises :class:`IllegalTransition` naming the incident.
    """
    newest_revoked = max(keyset.revoked, key=lambda v: v.retired_at or v.created_at, default=None)
    target = keyset.previous
    if target is None:
        target = next(
            (
                v
                for v in keyset.retired
                if v.value is not None and v.retired_at is not None and now - v.retired_at <= window
                and v.promoted_at is not None
            ),
            None,
        )
    current = keyset.current
    if newest_revoked is not None and (target is None or (newest_revoked.retired_at or now) >= (
            target.retired_at or target.expires_at or target.promoted_at or target.created_at)):
        raise IllegalTransition(
            f"{keyset.name}: refusing to roll back: the value before the current one, {newest_revoked.id[:8]}, "
            f"was revoked ({newest_revoked.reason or 'revoked'}); a revoked value is never made current again")
    if target is None or current is None:
        raise IllegalTransition(
            f"{keyset.name}: nothing to roll back to (no previous version, and no retired one within "
            f"the rollback window of {window})"
        )
    # promoted_at is when it became current again; its age still counts from created_at (rotator.plan)
    restored = target.replace(state=State.CURRENT, expires_at=None, retired_at=None, reason=None, promoted_at=now)
    return keyset._swap(restored, _retired(current, now, f"rolled back: {reason}"))


def revoke(keyset: Keyset, version_ids: tuple[str, ...], now: datetime, reason: str) -> Keyset:
    """Previous (or retired) versions become ``revoked``: an incident found them leaked after another actor
    had already rotated the secret."""
    changed = []
    for version_id in version_ids:
        version = keyset.get(version_id)
        if version.state not in (State.PREVIOUS, State.RETIRED):
            raise IllegalTransition(f"{keyset.name}: cannot revoke version {version_id}: it is {version.state}")
        changed.append(_revoked(version, now, reason))
    return keyset._swap(*changed)


def discard(keyset: Keyset, version_id: str) -> Keyset:
    """Remove pending ``version_id`` (a failed or stale attempt)."""
    version = keyset.get(version_id)
    if version.state is not State.PENDING:
        raise IllegalTransition(f"{keyset.name}: cannot discard version {version_id}: it is {version.state}")
    return keyset._swap(drop=frozenset({version_id}))


def purge(keyset: Keyset, now: datetime, window: timedelta) -> Keyset:
    """Drop retired and revoked versions whose rollback window has passed."""
    gone = frozenset(
        v.id for v in (*keyset.retired, *keyset.revoked) if v.retired_at is not None and now - v.retired_at > window
    )
    return keyset._swap(drop=gone) if gone else keyset


def with_meta(keyset: Keyset, **changes: Any) -> Keyset:
    """Merge ``changes`` into the bookkeeping; a value of ``None`` removes the key."""
    meta = {k: v for k, v in {**keyset.meta, **changes}.items() if v is not None}
    return keyset.replace(meta=meta)


def _retired(version: KeyVersion, now: datetime, reason: str) -> KeyVersion:
    return version.replace(state=State.RETIRED, retired_at=now, expires_at=None, reason=reason)


def _revoked(version: KeyVersion, now: datetime, reason: str) -> KeyVersion:
    return version.replace(state=State.REVOKED, retired_at=now, expires_at=None, reason=reason)


# --- JSON form of version metadata (no values), shared by document-style providers ------------------------

_TIMES = ("created_at", "promoted_at", "expires_at", "retired_at")


def version_to_json(version: KeyVersion) -> dict[str, Any]:
    """Version metadata as JSON-able dict, without the value."""
    out: dict[str, Any] = {"id": version.id, "state": str(version.state)}
    for name in _TIMES:
        if (when := getattr(version, name)) is not None:
            out[name] = when.isoformat()
    for name in ("reason", "attempt", "actor"):
        if (text := getattr(version, name)) is not None:
            out[name] = text
    if version.public is not None:
        out["public"] = dict(version.public)
    return out


def version_from_json(data: Mapping[str, Any], value: SecretValue | None) -> KeyVersion:
    """Inverse of :func:`version_to_json`, with the value supplied by the provider."""
    times = {name: datetime.fromisoformat(data[name]) for name in _TIMES if data.get(name)}
    return KeyVersion(
        id=str(data["id"]),
        state=State(data["state"]),
        value=value,
        reason=data.get("reason"),
        attempt=data.get("attempt"),
        actor=data.get("actor"),
        public=data.get("public"),
        **times,
    )
