"""The provider protocol (one backend = one provider) and the entry-point registry that finds providers.

Error contract: every method raises only these (translate vendor exceptions at the boundary with
``raise ... from exc``):

- :class:`~rotator.errors.ConflictError`: the keyset changed since ``expected`` was read (or already exists
  for :meth:`Provider.create`). Nothing was written. The caller re-reads and decides.
- :class:`~rotator.errors.SecretNotFound`: nothing at the secret's path where something was expected.
- :class:`~rotator.errors.AccessDenied`: the credentials lack permission; the message names the path/action.
- :class:`~rotator.errors.BackendUnavailable`: down, sealed, timed out, or stored data cannot be decrypted.
- :class:`~rotator.errors.IllegalTransition`: the step is not allowed from the keyset's states.

Every mutating method is ONE conditional write against ``expected.revision`` and returns the keyset as
stored after it. Document providers also store ``expected.meta`` with the step as given (the engine lets
``next_due`` ride on the stage write); others may keep their own bookkeeping, so anything that must persist
goes through :meth:`Provider.update_meta`. Providers are constructed without
touching the network; they connect on first use and must be safe to call from several threads.

Two optional members, for backends that keep each version apart (AWS Secrets Manager):

- ``read_state(ref)``: like :meth:`Provider.read`, but a value the backend would need an extra request for
  may be ``None`` (the engine decides and steps with it; keyrings and JWKS use :meth:`Provider.read`).
  Steps return the values their ``expected`` carried.
- ``assigns_version_ids = True``: :meth:`Provider.stage` stores the version under an id of its own (AWS: a
  token every racer derives alike, which makes the put itself the compare-and-set); the staged version is
  the returned keyset's ``pending``, and its ``attempt``, ``actor`` and ``public`` may not be kept.

Built-in and third-party providers register the same way, in the ``rotator.providers`` entry-point group
(``local = "rotator.localstore:LocalProvider"``); they are imported only when a manifest uses them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from rotator import keyset as ks
from rotator.circuit import Breakers
from rotator.errors import ManifestError
from rotator.keyset import Keyset, KeyVersion, SecretValue

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "DocumentProvider",
    "Provider",
    "ProviderSet",
    "SecretRef",
    "installed_providers",
    "load_provider_class",
]

ENTRY_POINT_GROUP = "rotator.providers"
_INSTALL_HINTS = {
    "vault": "pip install 'rotator[vault]'  (or: pip install -e providers/vault)",
    "aws": "pip install 'rotator[aws]'  (or: pip install -e providers/aws)",
}


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where a secret lives in its backend, plus what a backend may record beside it."""

    name: str
    path: str
    labels: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None


@runtime_checkable
class Provider(Protocol):
    """What a backend must do. See the module docstring for the error contract."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def read(self, ref: SecretRef) -> Keyset | None:
        """The keyset at ``ref``; ``None`` if nothing is stored; ``managed=False`` for a foreign value."""

    def read_value(self, ref: SecretRef, version_id: str) -> SecretValue | None:
        """The stored value of one version, read from the backend (the read-back of verify); None if gone."""

    def create(self, ref: SecretRef, version: KeyVersion, meta: Mapping[str, Any]) -> Keyset:
        """Store the first value of a new secret as current; ConflictError if anything exists."""

    def adopt(self, ref: SecretRef, expected: Keyset) -> Keyset:
        """Take over an unmanaged value (``expected.managed`` is False) as the current version."""

    def stage(self, ref: SecretRef, expected: Keyset, version: KeyVersion) -> Keyset:
        """Store ``version`` as pending (idempotent for the same ``version.attempt`` or value)."""

    def promote(
        self, ref: SecretRef, expected: Keyset, version_id: str, now: datetime, grace: timedelta,
        reason: str | None = None,
    ) -> Keyset:
        """Pending -> current, current -> previous until ``now + grace`` (retired when grace is 0)."""

    def retire(self, ref: SecretRef, expected: Keyset, version_id: str, now: datetime, reason: str) -> Keyset:
        """Previous -> retired."""

    def rollback(self, ref: SecretRef, expected: Keyset, now: datetime, reason: str, window: timedelta) -> Keyset:
        """Previous (or a retired value within ``window``) -> current; current -> retired."""

    def discard(self, ref: SecretRef, expected: Keyset, version_id: str) -> Keyset:
        """Remove a pending version."""

    def purge(self, ref: SecretRef, expected: Keyset, now: datetime, window: timedelta) -> Keyset:
        """Forget retired values older than ``window`` (where the backend lets us)."""

    def update_meta(self, ref: SecretRef, expected: Keyset, changes: Mapping[str, Any]) -> Keyset:
        """Merge bookkeeping (notices sent, failures, acknowledgements); ``None`` removes a key."""

    def list(self) -> list[str]:
        """Paths of the keysets this provider holds."""

    def check(self) -> None:
        """Raise BackendUnavailable / AccessDenied if the backend cannot be used now."""

    def close(self) -> None:
        """Release connections."""


class DocumentProvider:
    """Base for backends that store a whole keyset as one document under a compare-and-set revision.

    Subclasses implement :meth:`read`, :meth:`write`, :meth:`list` (and optionally :meth:`check`,
    :meth:`close`); every step becomes a pure transition from :mod:`rotator.keyset` plus one ``write``.
    Constructor convention for every provider: ``Cls(*, name, config, base_dir)`` where ``config`` is an
    instance of ``config_model`` and ``base_dir`` is the manifest's folder (relative paths resolve there).
    """

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]

    def read(self, ref: SecretRef) -> Keyset | None:
        raise NotImplementedError

    def write(self, ref: SecretRef, expected: Keyset | None, new: Keyset) -> Keyset:
        """Store ``new`` if the stored revision still equals ``expected.revision`` (absent if None)."""
        raise NotImplementedError

    def list(self) -> list[str]:
        raise NotImplementedError

    def check(self) -> None:
        return None

    def close(self) -> None:
        return None

    def read_value(self, ref: SecretRef, version_id: str) -> SecretValue | None:
        keyset = self.read(ref)
        version = next((v for v in keyset.versions if v.id == version_id), None) if keyset else None
        return version.value if version is not None else None

    def create(self, ref: SecretRef, version: KeyVersion, meta: Mapping[str, Any]) -> Keyset:
        return self.write(ref, None, Keyset(name=ref.name, revision="", versions=(version,), meta=dict(meta)))

    def adopt(self, ref: SecretRef, expected: Keyset) -> Keyset:
        return self.write(ref, expected, expected.replace(managed=True))

    def stage(self, ref: SecretRef, expected: Keyset, version: KeyVersion) -> Keyset:
        pending = expected.pending
        if pending is not None and version.attempt is not None and pending.attempt == version.attempt:
            return expected  # the same attempt staged again (a retried request): nothing to do
        return self.write(ref, expected, ks.stage(expected, version))

    def promote(
        self, ref: SecretRef, expected: Keyset, version_id: str, now: datetime, grace: timedelta,
        reason: str | None = None,
    ) -> Keyset:
        return self.write(ref, expected, ks.promote(expected, version_id, now, grace, reason))

    def retire(self, ref: SecretRef, expected: Keyset, version_id: str, now: datetime, reason: str) -> Keyset:
        return self.write(ref, expected, ks.retire(expected, version_id, now, reason))

    def rollback(self, ref: SecretRef, expected: Keyset, now: datetime, reason: str, window: timedelta) -> Keyset:
        return self.write(ref, expected, ks.rollback(expected, now, reason, window))

    def discard(self, ref: SecretRef, expected: Keyset, version_id: str) -> Keyset:
        return self.write(ref, expected, ks.discard(expected, version_id))

    def purge(self, ref: SecretRef, expected: Keyset, now: datetime, window: timedelta) -> Keyset:
        new = ks.purge(expected, now, window)
        return expected if new is expected else self.write(ref, expected, new)

    def update_meta(self, ref: SecretRef, expected: Keyset, changes: Mapping[str, Any]) -> Keyset:
        return self.write(ref, expected, ks.with_meta(expected, **changes))


# --- registry ------------------------------------------------------------------------------------------


def installed_providers() -> dict[str, EntryPoint]:
    """Provider type names that are installed, mapped to their (not yet loaded) entry points."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_provider_class(type_name: str) -> type[Provider]:
    """Import the provider class registered as ``type_name``; a clear error names what is installed."""
    found = installed_providers()
    if type_name not in found:
        installed = ", ".join(sorted(found)) or "none"
        hint = _INSTALL_HINTS.get(type_name, f"install the package that provides the '{type_name}' provider")
        raise ManifestError(
            f"unknown provider type '{type_name}' (installed: {installed}); to add it: {hint}"
        )
    cls = found[type_name].load()
    if not isinstance(cls, type) or not hasattr(cls, "config_model"):
        raise ManifestError(f"entry point '{type_name}' in {ENTRY_POINT_GROUP} is not a provider class")
    return cls


class ProviderSet:
    """The providers a manifest names, built on first use and shared by every secret that uses them."""

    def __init__(self, configs: Mapping[str, tuple[type[Provider], Any]], base_dir: Path,
                 breakers: Breakers | None = None) -> None:
        self._configs = dict(configs)
        self._base_dir = base_dir
        self.breakers = breakers if breakers is not None else Breakers()  # one registry per runtime
        self._built: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Provider:
        """The provider instance called ``name`` in the manifest."""
        with self._lock:
            if name not in self._built:
                cls, config = self._configs[name]
                inner = cls(name=name, config=config, base_dir=self._base_dir)  # type: ignore[call-arg]
                self._built[name] = self.breakers.guard(name, inner)  # type: ignore[assignment]
            return self._built[name]

    def names(self) -> list[str]:
        return list(self._configs)

    def close(self) -> None:
        with self._lock:
            for provider in self._built.values():
                provider.close()
            self._built.clear()
