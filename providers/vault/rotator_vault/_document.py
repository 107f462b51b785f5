"""The KV v2 document that holds one keyset, and its translation to and from :class:`~rotator.keyset.Keyset`.

Layout (DESIGN.md section 2; consumers read ``current``, verifiers also ``previous`` and ``pending``)::

    {"current": "<value>", "previous": "<value>", "pending": "<value>",
     "_rotator": {"format": 1, "name": "...", "versions": [version_to_json(...), ...], "meta": {...},
                  "retired": {"<version id>": "<value>"}}}

Retired values stay under ``_rotator.retired`` until ``purge`` drops them after the rollback window, so a
rollback needs no read of old KV versions (which ``max_versions`` may already have pruned); the KV version
history is kept as the audit trail. A document without ``_rotator`` is a foreign value: it reads as
``managed=False`` with one current version.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rotator.errors import ProviderError
from rotator.keyset import Keyset, KeyVersion, SecretValue, State, version_from_json, version_to_json

__all__ = ["FORMAT", "decode", "encode", "mirror"]

FORMAT = 1
_LIVE = (State.CURRENT, State.PREVIOUS, State.PENDING)


def parse_time(text: str | None) -> datetime:
    """Vault's RFC 3339 time (nanoseconds are cut to microseconds); now when unset."""
    if not text:
        return datetime.now(UTC)
    return datetime.fromisoformat(text)


def encode(keyset: Keyset, where: str) -> dict[str, Any]:
    """The document to store for ``keyset``; refuses a keyset whose live versions lack a value."""
    doc: dict[str, Any] = {}
    retired: dict[str, str] = {}
    newest_previous = keyset.previous
    for version in keyset.versions:
        top = version.state in _LIVE and (version.state is not State.PREVIOUS or version is newest_previous)
        if top:  # consumers read current / previous / pending; older previous versions go by id, as retired do
            if version.value is None:
                raise ProviderError(
                    f"vault: cannot store {keyset.name} at {where}: its {version.state} version {version.id} "
                    "has no value (a foreign document must hold exactly one string field to be adopted)"
                )
            doc[str(version.state)] = version.value.reveal()
        elif version.value is not None:
            retired[version.id] = version.value.reveal()
    doc["_rotator"] = {
        "format": FORMAT,
        "name": keyset.name,
        "versions": [version_to_json(v) for v in keyset.versions],
        "meta": dict(keyset.meta),
        "retired": retired,
    }
    return doc


def decode(name: str, data: Mapping[str, Any], kv_meta: Mapping[str, Any], where: str) -> Keyset:
    """The keyset in a KV document ``data`` read at KV version ``kv_meta["version"]``."""
    revision = str(kv_meta["version"])
    own = data.get("_rotator")
    if own is None:
        return _foreign(name, data, kv_meta, revision)
    try:
        retired = own.get("retired") or {}
        versions = []
        for item in own["versions"]:
            state = State(item["state"])
            by_id = retired.get(str(item["id"]))
            raw = by_id if by_id is not None or state not in _LIVE else data.get(str(state))
            versions.append(version_from_json(item, SecretValue(raw) if isinstance(raw, str) else None))
        meta = dict(own.get("meta") or {})
        return Keyset(name=name, revision=revision, versions=tuple(versions), meta=meta)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ProviderError(
            f"vault: the _rotator section of {where} (KV version {revision}) is malformed "
            f"({type(exc).__name__}); fix or remove it by hand"
        ) from None


def _foreign(name: str, data: Mapping[str, Any], kv_meta: Mapping[str, Any], revision: str) -> Keyset:
    """A document rotator did not write: its only field, if a string, is the current value.

    Documents with several fields read with no value, so adopting one fails instead of dropping fields.
    """
    only = next(iter(data.values())) if len(data) == 1 else None
    raw = only if isinstance(only, str) else None
    version = KeyVersion(
        id=f"kv{revision}",
        state=State.CURRENT,
        created_at=parse_time(kv_meta.get("created_time")),
        value=SecretValue(raw) if raw is not None else None,
    )
    return Keyset(name=name, revision=revision, versions=(version,), managed=False)


def mirror(keyset: Keyset) -> dict[str, str]:
    """Human-readable ``custom_metadata`` (never read back for decisions), within Vault's size limits."""
    current = keyset.current
    out = {"rotator_state": "in-grace" if keyset.previous is not None else "active"}
    if current is not None:
        out["rotator_rotated_at"] = (current.promoted_at or current.created_at).isoformat()
    for key in ("next_due", "next_due_at"):
        if keyset.meta.get(key):
            out["rotator_next_due"] = str(keyset.meta[key])
            break
    # limits: 64 keys, key 1-128 bytes, value 1-512 bytes, printable
    return {k: v.encode()[:512].decode(errors="ignore") for k, v in out.items() if v and v.isprintable()}
