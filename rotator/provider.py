"""The store protocol (one backend = one provider) and the entry-point registry that finds providers.

Error contract: every method raises only these (translate vendor exceptions at the boundary with
``raise ... from exc``):

- :class:`~rotator.errors.ConflictError`: the keyset changed since ``expected`` was read (or already exists
  for a :class:`~rotator.transitions.Create`). Nothing was written. The caller re-reads and decides.
- :class:`~rotator.errors.SecretNotFound`: nothing at the secret's path where something was expected.
- :class:`~rotator.errors.AccessDenied`: the credentials lack permission; the message names the path/action.
- :class:`~rotator.errors.BackendUnavailable`: down, sealed, timed out, or stored data cannot be decrypted.
- :class:`~rotator.errors.IllegalTransition`: the step is not allowed from the keyset's states.

The protocol is small: ``read``, ``read_state``, ``read_value``, ``apply``, ``list``, ``check``, ``close`` and a
declared ``capabilities`` set. Every step is a transition value (:mod:`rotator.transitions`) given to
:meth:`Provider.apply`, which makes ONE conditional write against ``expected.revision`` and returns the
keyset as stored after it. A document store's ``apply`` is ``write(expected, t.apply(expected))``
(:class:`DocumentProvider`); AWS Secrets Manager matches on the transition and maps it to its calls.
:class:`StepMethods` gives every provider the convenience methods ``stage``, ``promote``, ... built on ``apply``.

Capabilities (:class:`~rotator.target.Capability`) replace probing with ``getattr``:

- ``STATE_READ``: ``read_state`` may leave out values the backend would need extra requests for (the engine
  decides and steps with it; keyrings and JWKS use ``read``). Steps return the values their ``expected`` carried.
- ``ASSIGNS_VERSION_IDS``: a :class:`~rotator.transitions.Stage` stores the version under an id of its own (AWS:
  a token every racer derives alike); the staged version is the returned keyset's ``pending``.
- ``MULTI_PREVIOUS``: the store can hold several previous versions, each in its own grace period.
- ``NO_RETRY``: a transient failure is not fixed by waiting (in-process stores): do not retry.

Providers are constructed without touching the network (``Cls(*, name, config, base_dir)``), connect on first
use and must be safe to call from several threads. Built-in and third-party providers register the same way,
in the ``rotator.providers`` entry-point group (``local = "rotator.localstore:LocalProvider"``); they are
imported only when a manifest uses them.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from rotator._plugins import installed, load_plugin
from rotator.circuit import Breakers
from rotator.errors import IllegalTransition, ManifestError
from rotator.keyset import Keyset, KeyVersion, SecretValue
from rotator.target import Capability
from rotator.transitions import (
    Adopt,
    Create,
    Discard,
    Promote,
    Purge,
    Retire,
    Rollback,
    Stage,
    Transition,
    UpdateMeta,
)

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = [
    "ENTRY_POINT_GROUP",
    "DocumentProvider",
    "Provider",
    "ProviderSet",
    "SecretRef",
    "StepMethods",
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
    """What a store must do. See the module docstring for the error contract and the capabilities."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    capabilities: ClassVar[frozenset[Capability]]

    def read(self, ref: SecretRef) -> Keyset | None:
        """The keyset at ``ref``; ``None`` if nothing is stored; ``managed=False`` for a foreign value."""

    def read_state(self, ref: SecretRef) -> Keyset | None:
        """Like :meth:`read`; with ``STATE_READ`` some values may be ``None`` (enough to decide and step)."""

    def read_value(self, ref: SecretRef, version_id: str) -> SecretValue | None:
        """The stored value of one version, read from the backend (the read-back of verify); None if gone."""

    def apply(self, ref: SecretRef, expected: Keyset | None, transition: Transition | Create) -> Keyset:
        """Persist ``transition`` with one conditional write on ``expected`` (``None`` only for ``Create``)."""

    def list(self) -> list[str]:
        """Paths of the keysets this provider holds."""

    def check(self) -> None:
        """Raise BackendUnavailable / AccessDenied if the backend cannot be used now."""

    def close(self) -> None:
        """Release connections."""


class StepMethods:
    """Convenience methods over :meth:`Provider.apply`, one per transition, for callers and tests."""

    def apply(self, ref: SecretRef, expected: Keyset | None, transition: Transition | Create) -> Keyset:
        raise NotImplementedError

    def create(self, ref: SecretRef, version: KeyVersion, meta: Mapping[str, Any]) -> Keyset:
        """Store the first value of a new secret as current; ConflictError if anything exists."""
        return self.apply(ref, None, Create(version, meta))

    def adopt(self, ref: SecretRef, expected: Keyset) -> Keyset:
        return self.apply(ref, expected, Adopt())

    def stage(self, ref: SecretRef, expected: Keyset, version: KeyVersion) -> Keyset:
        return self.apply(ref, expected, Stage(version))

    def promote(
        self, ref: SecretRef, expected: Keyset, version_id: str, now: datetime, grace: timedelta,
        reason: str | None = None, *, revoke: bool = False, keep_previous: int = 1,
    ) -> Keyset:
        return self.apply(ref, expected, Promote(version_id, now, grace, reason, revoke, keep_previous))

    def retire(self, ref: SecretRef, expected: Keyset, version_id: str, now: datetime, reason: str) -> Keyset:
        return self.apply(ref, expected, Retire(version_id, now, reason))

    def rollback(self, ref: SecretRef, expected: Keyset, now: datetime, reason: str, window: timedelta) -> Keyset:
        return self.apply(ref, expected, Rollback(now, reason, window))

    def discard(self, ref: SecretRef, expected: Keyset, version_id: str) -> Keyset:
        return self.apply(ref, expected, Discard(version_id))

    def purge(self, ref: SecretRef, expected: Keyset, now: datetime, window: timedelta) -> Keyset:
        return self.apply(ref, expected, Purge(now, window))

    def update_meta(self, ref: SecretRef, expected: Keyset, changes: Mapping[str, Any]) -> Keyset:
        return self.apply(ref, expected, UpdateMeta(changes))


class DocumentProvider(StepMethods):
    """Base for backends that store a whole keyset as one document under a compare-and-set revision.

    Subclasses implement :meth:`read`, :meth:`write`, :meth:`list` (and optionally :meth:`check`,
    :meth:`close`); :meth:`apply` is ``write(expected, transition.apply(expected))``.
    Constructor convention for every provider: ``Cls(*, name, config, base_dir)`` where ``config`` is an
    instance of ``config_model`` and ``base_dir`` is the manifest's folder (relative paths resolve there).
    """

    type_name: ClassVar[str]
    config_model: ClassVar[type[BaseModel]]
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.MULTI_PREVIOUS})

    def read(self, ref: SecretRef) -> Keyset | None:
        raise NotImplementedError

    def read_state(self, ref: SecretRef) -> Keyset | None:
        return self.read(ref)

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

    def apply(self, ref: SecretRef, expected: Keyset | None, transition: Transition | Create) -> Keyset:
        if isinstance(transition, Create):
            return self.write(ref, None, transition.apply(None, ref.name))
        if expected is None:
            raise IllegalTransition(f"{ref.name}: {type(transition).__name__} needs the keyset it applies to")
        if isinstance(transition, Stage):
            pending = expected.pending
            attempt = transition.version.attempt
            if pending is not None and attempt is not None and pending.attempt == attempt:
                return expected  # the same attempt staged again (a retried request): nothing to do
        new = transition.apply(expected)
        if new is expected:  # nothing to change (a purge with nothing past the window)
            return expected
        return self.write(ref, expected, new)


# --- registry ------------------------------------------------------------------------------------------


def installed_providers() -> dict[str, EntryPoint]:
    """Provider type names that are installed, mapped to their (not yet loaded) entry points."""
    return installed(ENTRY_POINT_GROUP)


def load_provider_class(type_name: str) -> type[Provider]:
    """Import the provider class registered as ``type_name``; a clear error names what is installed."""
    cls: type[Provider] = load_plugin(ENTRY_POINT_GROUP, type_name, "provider", hints=_INSTALL_HINTS,
                                      attrs=("config_model",), error=ManifestError)
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
