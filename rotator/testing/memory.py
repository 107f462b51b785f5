"""An in-process provider for tests: keysets in a dict, under the same compare-and-set rules as real backends.

Instances created with the same provider ``name`` share one store for the life of the process (so an engine
and a test can each build their own instance and see the same data); :meth:`MemoryProvider.reset` empties it.
Keysets are stored in their JSON document form, exactly as document backends store them, so metadata that
would not survive a real backend (non-JSON meta, naive datetimes) does not survive here either.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from rotator.errors import ConflictError
from rotator.keyset import Keyset, KeyVersion, SecretValue, State, version_from_json, version_to_json
from rotator.provider import DocumentProvider, SecretRef
from rotator.target import Capability

__all__ = ["MemoryConfig", "MemoryProvider"]


class MemoryConfig(BaseModel):
    """Manifest configuration of the ``memory`` provider (it has no options)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["memory"] = "memory"


class _Stored:
    """One keyset as stored: its revision, its JSON document (no values) and the values by version id."""

    __slots__ = ("doc", "revision", "values")

    def __init__(self, revision: int, doc: str, values: dict[str, SecretValue]) -> None:
        self.revision = revision
        self.doc = doc
        self.values = values


class MemoryProvider(DocumentProvider):
    """Keysets in process memory, shared by every instance with the same ``name``; thread-safe."""

    type_name: ClassVar[str] = "memory"
    config_model: ClassVar[type[BaseModel]] = MemoryConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.MULTI_PREVIOUS,
        Capability.NO_RETRY,  # local failures are not fixed by waiting
    })

    _stores: ClassVar[dict[str, dict[str, _Stored]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, *, name: str = "memory", config: MemoryConfig | None = None, base_dir: Path | None = None
    ) -> None:
        self.name = name
        self.config = config if config is not None else MemoryConfig()
        with self._lock:
            self._stores.setdefault(name, {})

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget the keysets of provider ``name`` (of every memory provider when ``name`` is None)."""
        with cls._lock:
            if name is None:
                cls._stores.clear()
            else:
                cls._stores.pop(name, None)

    def read(self, ref: SecretRef) -> Keyset | None:
        with self._lock:
            stored = self._store().get(ref.path)
            if stored is None:
                return None
            revision, doc, values = stored.revision, stored.doc, dict(stored.values)
        data: dict[str, Any] = json.loads(doc)
        versions = tuple(version_from_json(item, values.get(item["id"])) for item in data["versions"])
        return Keyset(name=ref.name, revision=str(revision), versions=versions, meta=data["meta"],
                      managed=data.get("managed", True))

    def put_foreign(self, ref: SecretRef, value: str, created_at: datetime) -> None:
        """Store a value as if another tool had written it (not managed by rotator), for adoption tests."""
        version = KeyVersion(id="foreign", state=State.CURRENT, created_at=created_at)
        doc = json.dumps({"name": ref.name, "meta": {}, "versions": [version_to_json(version)], "managed": False})
        with self._lock:
            store = self._store()
            old = store.get(ref.path)
            store[ref.path] = _Stored((old.revision + 1) if old else 1, doc, {"foreign": SecretValue(value)})

    def write(self, ref: SecretRef, expected: Keyset | None, new: Keyset) -> Keyset:
        versions = [version_to_json(v) for v in new.versions]
        doc = json.dumps({"name": new.name, "meta": dict(new.meta), "versions": versions})
        values = {v.id: v.value for v in new.versions if v.value is not None}
        with self._lock:
            store = self._store()
            stored = store.get(ref.path)
            if expected is None:
                if stored is not None:
                    raise ConflictError(
                        f"{ref.name}: a keyset already exists at {ref.path} in memory provider '{self.name}'"
                    )
                revision = 1
            else:
                if stored is None or str(stored.revision) != expected.revision:
                    raise ConflictError(
                        f"{ref.name}: the keyset changed since revision {expected.revision} was read "
                        f"(memory provider '{self.name}', path {ref.path}); re-read and decide"
                    )
                revision = stored.revision + 1
            store[ref.path] = _Stored(revision, doc, values)
        return new.replace(revision=str(revision), managed=True)

    def list(self) -> list[str]:
        with self._lock:
            return sorted(self._store())

    def _store(self) -> dict[str, _Stored]:
        """This provider's shared store (re-created after a reset); call with the lock held."""
        return self._stores.setdefault(self.name, {})

    def __repr__(self) -> str:
        return f"MemoryProvider(name={self.name!r})"
