"""An in-process target for tests (rotator's and users'): identities holding passwords, with real refusals.

Registered as ``memory`` in the ``rotator.targets`` entry points. Targets with the same ``name`` share their
identities in one process, as :class:`~rotator.testing.memory.MemoryProvider` shares keysets. ``down`` and
``deny`` switch the whole target to "unreachable" or "admin refused", for failure tests.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from rotator.errors import CredentialRefused, TargetDenied, TargetUnavailable
from rotator.target import AdminCredentials, Binding, Capability, Credential, Strategy

__all__ = ["MemoryTarget", "MemoryTargetConfig"]


class MemoryTargetConfig(BaseModel):
    """``targets.<name>: {type: memory, host: ...}``; ``host`` only shows up in the credential document."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "memory"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class MemoryTarget:
    """Identities -> accepted password digests; ``dual`` keeps two per identity, the others one."""

    type_name: ClassVar[str] = "memory"
    config_model: ClassVar[type[BaseModel]] = MemoryTargetConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.SINGLE, Capability.DUAL, Capability.ALTERNATING})

    _identities: ClassVar[dict[str, dict[str, list[str]]]] = {}
    _switches: ClassVar[dict[str, set[str]]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, name: str = "memory", config: MemoryTargetConfig | None = None,
                 base_dir: Path | None = None, admin: AdminCredentials = lambda: ()) -> None:
        self.name = name
        self.config = config if config is not None else MemoryTargetConfig()
        self._admin = admin
        with self._lock:
            self._identities.setdefault(name, {})
            self._switches.setdefault(name, set())

    def __repr__(self) -> str:
        return f"MemoryTarget(name={self.name!r})"

    # --- test controls ---------------------------------------------------------------------------------

    @classmethod
    def reset(cls, name: str | None = None) -> None:
        """Forget identities and switches of target ``name`` (of all when None)."""
        with cls._lock:
            for store in (cls._identities, cls._switches):
                if name is None:
                    store.clear()
                else:
                    store.pop(name, None)

    @classmethod
    def switch(cls, name: str, what: str, on: bool = True) -> None:
        """Turn ``down`` (unreachable) or ``deny`` (admin refused) on or off for target ``name``."""
        with cls._lock:
            found = cls._switches.setdefault(name, set())
            (found.add if on else found.discard)(what)

    @classmethod
    def identities(cls, name: str) -> dict[str, int]:
        """How many passwords each identity of target ``name`` holds (no values)."""
        with cls._lock:
            return {user: len(digests) for user, digests in cls._identities.get(name, {}).items()}

    # --- Target protocol -------------------------------------------------------------------------------

    def fields(self, binding: Binding) -> dict[str, Any]:
        return {"host": self.config.host}

    def prepare(self, binding: Binding) -> None:
        with self._admin_session() as users:
            for identity in binding.identities():
                users.setdefault(identity, [])

    def issue(self, binding: Binding, username: str, keep: Sequence[Credential]) -> Credential:
        raise NotImplementedError("the memory target does not issue credentials")

    def enable(self, binding: Binding, credential: Credential) -> None:
        digest = _digest(credential.secret)
        with self._admin_session() as users:
            held = users.setdefault(credential.username, [])
            if digest in held:
                return
            if binding.strategy is Strategy.DUAL:
                held.append(digest)
                del held[:-2]  # two credentials at most, as IAM and MySQL's retained password
            else:
                held[:] = [digest]

    def disable(self, binding: Binding, credential: Credential) -> None:
        digest = _digest(credential.secret)
        with self._admin_session() as users:
            held = users.get(credential.username, [])
            if digest in held:
                held.remove(digest)

    def login(self, binding: Binding, credential: Credential) -> None:
        with self._lock:
            self._reachable()
            held = self._identities[self.name].get(credential.username, [])
            if _digest(credential.secret) not in held:
                raise CredentialRefused(f"target {self.name}: login as {credential.username!r} refused")

    def check(self) -> None:
        with self._admin_session():
            pass

    def close(self) -> None:
        return None

    # --- helpers ---------------------------------------------------------------------------------------

    def _reachable(self) -> None:
        if "down" in self._switches.get(self.name, set()):
            raise TargetUnavailable(f"target {self.name}: unreachable (memory target switched down)")

    class _Session:
        def __init__(self, target: MemoryTarget) -> None:
            self.target = target

        def __enter__(self) -> dict[str, list[str]]:
            MemoryTarget._lock.acquire()
            try:
                self.target._reachable()
                if "deny" in MemoryTarget._switches.get(self.target.name, set()):
                    raise TargetDenied(f"target {self.target.name}: admin credential refused")
            except BaseException:
                MemoryTarget._lock.release()
                raise
            return MemoryTarget._identities.setdefault(self.target.name, {})

        def __exit__(self, *exc: object) -> None:
            MemoryTarget._lock.release()

    def _admin_session(self) -> MemoryTarget._Session:
        return MemoryTarget._Session(self)
