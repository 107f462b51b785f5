"""A typed, read-only view of a keyset's bookkeeping (:class:`KeysetMeta`) and the changes the engine writes.

The backends store the bookkeeping as one JSON-able mapping with string keys (a SQLite row, a Vault document,
AWS tags), and that format does not change: :meth:`KeysetMeta.of` parses the stored mapping, and
:meth:`KeysetMeta.to_mapping` gives it back key for key, in the same order and with the same spelling of
every value it did not change, so a stored mapping round-trips byte-identically. Keys rotator does not know,
and values of known keys that do not parse (a hand-edited document), are kept verbatim in :attr:`extra`: nothing
stored is ever dropped. Writes stay partial merges (:class:`rotator.transitions.UpdateMeta`); the classmethods
below build the change mappings the engine writes, so every key is spelled in this one module.

Stored keys::

    failures         int    consecutive failed rotation attempts (the backoff exponent)
    last_failure     str    why the last attempt failed (at most 200 characters)
    last_failure_at  time   when it failed (ISO 8601)
    notices          {"cycle": <current version id>, "sent": [<lead key>, ...]}  notices sent this cycle
    acks             {"<version id>": {"<consumer>": "<ISO time>"}}              consumer acknowledgements
    next_due         time   when the staged value's rotation falls due
    revoking         time   an incident revoke began (a crash before promote still finishes it as a revoke)
    audit_anchors    {"<log id>": [seq, hash, time]}                             heads of the audit logs
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rotator.keyset import Keyset

__all__ = ["FAILURE_TEXT_MAX", "KeysetMeta", "Notices", "frozen"]

FAILURE_TEXT_MAX = 200
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def frozen(meta: Mapping[str, Any]) -> Mapping[str, Any]:
    """``meta`` as an immutable mapping (a read-only proxy over a private copy; values are left as stored)."""
    return meta if isinstance(meta, MappingProxyType) else MappingProxyType(dict(meta))


@dataclass(frozen=True, slots=True)
class Notices:
    """The lead times already announced (``sent``) in the cycle of current version ``cycle``."""

    cycle: str
    sent: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return {"cycle": self.cycle, "sent": sorted(self.sent)}


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("not an integer")
    return int(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not text")
    return value


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(_text(value))


def _notices(value: Any) -> Notices:
    if not isinstance(value, Mapping) or not isinstance(value.get("cycle"), str):
        raise ValueError("not a notices record")
    sent = value.get("sent", [])
    if not isinstance(sent, list | tuple) or not all(isinstance(s, str) for s in sent):
        raise ValueError("not a list of lead keys")
    return Notices(value["cycle"], frozenset(sent))


def _acks(value: Any) -> Mapping[str, Mapping[str, str]]:
    if not isinstance(value, Mapping):
        raise ValueError("not an acks record")
    # a version whose record is not a mapping counts as no acknowledgements (as it always did)
    return MappingProxyType({str(k): MappingProxyType({str(c): str(t) for c, t in v.items()})
                             for k, v in value.items() if isinstance(v, Mapping)})


def _anchors(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("not an anchors record")
    return MappingProxyType(dict(value))


def _iso(value: datetime) -> str:
    return value.isoformat()


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(v) if isinstance(v, Mapping) else v for k, v in value.items()}


# stored key -> (parse, serialise, value meaning "absent")
_FIELDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], Any]] = {
    "failures": (_int, lambda v: v, 0),
    "last_failure": (_text, lambda v: v, None),
    "last_failure_at": (_time, _iso, None),
    "notices": (_notices, Notices.to_json, None),
    "acks": (_acks, _plain, None),
    "next_due": (_time, _iso, None),
    "revoking": (_time, _iso, None),
    "audit_anchors": (_anchors, _plain, None),
}


@dataclass(frozen=True, slots=True)
class KeysetMeta:
    """The bookkeeping of one keyset, typed. Build it with :meth:`of` or :meth:`parse`; it never changes."""

    failures: int = 0
    last_failure: str | None = None
    last_failure_at: datetime | None = None
    notices: Notices | None = None
    acks: Mapping[str, Mapping[str, str]] | None = None
    next_due: datetime | None = None
    revoking: datetime | None = None
    audit_anchors: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    # the mapping this was parsed from: keeps key order and the exact spelling of unchanged values
    _stored: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, repr=False, compare=False)

    @classmethod
    def of(cls, keyset: Keyset | None) -> KeysetMeta:
        """The typed bookkeeping of ``keyset`` (empty for ``None``)."""
        return cls.parse(keyset.meta if keyset is not None else _EMPTY)

    @classmethod
    def parse(cls, stored: Mapping[str, Any]) -> KeysetMeta:
        """Parse a stored mapping; unknown keys and unparseable values go to :attr:`extra` unchanged."""
        typed: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in stored.items():
            spec = _FIELDS.get(key)
            if spec is None or value is None:
                extra[key] = value
                continue
            try:
                typed[key] = spec[0](value)
            except (ValueError, TypeError, AttributeError):
                extra[key] = value
        return cls(**typed, extra=MappingProxyType(extra), _stored=frozen(stored))

    def to_mapping(self) -> dict[str, Any]:
        """The stored form: the mapping this was parsed from, key order and spelling kept where unchanged."""
        fresh: dict[str, Any] = {}
        for key, (parse, serialise, absent) in _FIELDS.items():
            value = getattr(self, key)
            old = self._stored.get(key, _EMPTY)
            try:
                same = old is not _EMPTY and old is not None and parse(old) == value
            except (ValueError, TypeError, AttributeError):
                same = False
            if same:
                fresh[key] = old
            elif value != absent:
                fresh[key] = serialise(value)
        fresh.update((k, v) for k, v in self.extra.items() if k not in fresh)
        ordered = {k: fresh[k] for k in self._stored if k in fresh}
        ordered.update((k, v) for k, v in fresh.items() if k not in ordered)
        return ordered

    # --- reads -------------------------------------------------------------------------------------------

    def notices_sent(self, cycle: str | None) -> frozenset[str]:
        """Lead keys already announced in the cycle of version ``cycle`` (none for another cycle)."""
        if self.notices is None or cycle is None or self.notices.cycle != cycle:
            return frozenset()
        return self.notices.sent

    def acknowledged(self, version_id: str) -> dict[str, str]:
        """Consumers that acknowledged ``version_id``, with the time each did."""
        found = (self.acks or _EMPTY).get(version_id)
        return dict(found) if found is not None else {}

    # --- the changes the engine writes (mappings for UpdateMeta / Stage; ``None`` removes a key) -------------

    @staticmethod
    def failure(failures: int, why: str, at: datetime) -> dict[str, Any]:
        """Record attempt number ``failures`` failing for ``why`` at ``at`` (the backoff reads these)."""
        return {"failures": failures, "last_failure": why[:FAILURE_TEXT_MAX], "last_failure_at": at.isoformat()}

    def cleared(self) -> dict[str, Any]:
        """Remove the failure record and the revoke marker after a promote (only keys that are stored)."""
        return {k: None for k in ("failures", "last_failure_at", "last_failure", "revoking") if k in self._stored}

    @staticmethod
    def noticed(cycle: str, sent: set[str] | frozenset[str]) -> dict[str, Any]:
        """Record the lead keys ``sent`` in the cycle of current version ``cycle``."""
        return {"notices": Notices(cycle, frozenset(sent)).to_json()}

    @staticmethod
    def staged(next_due: datetime, revoking: datetime | None = None) -> dict[str, Any]:
        """The bookkeeping a stage writes: when the new value falls due, and whether this is a revoke."""
        out: dict[str, Any] = {"next_due": next_due.isoformat()}
        if revoking is not None:
            out["revoking"] = revoking.isoformat()
        return out
