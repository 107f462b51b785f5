"""The audit key: HMAC keys for the audit chain, kept as one keyset in a provider, plus the logs' anchors.

The keyset lives at a reserved path (``audit.key_path``, default ``_rotator/audit-key``) in the manifest's
default provider (or ``audit.key_provider``), never next to the log, so a writer with access to the log file
alone cannot recompute the chain. Its current value is a JSON bundle of *every* audit key ever used, oldest
first (``{"v": 1, "keys": [[kid, base64 key], ...]}``); the newest one signs. Rotating the key stages a bundle
with one more key and promotes it, so no old key is ever lost even on backends that purge old versions
(AWS keeps one retired version) and old records stay verifiable forever. Each key carries its creation
time: a record signed with a key more than ``KEY_LAG`` after its successor was created is refused by verify,
so a leaked old key cannot forge records written after a rotation (writers re-read keys every ``REFRESH``).

The keyset's metadata holds ``audit_anchors``: for each of the most recently written logs (``_MAX_ANCHORS``)
the head (``seq``, the first 32 hex digits of its hash) at the end of the last run or daemon pass. Writing
it costs one backend write, so it is done at most once per run/pass (:meth:`AuditKeys.anchor`).
Only the normal provider protocol is used: ``read`` and ``apply`` with ``Create``, ``Stage``, ``Promote``,
``Discard`` and ``UpdateMeta`` transitions.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from rotator._audit_chain import KEY_LAG
from rotator.clock import Clock, utcnow
from rotator.errors import BackendUnavailable, ConflictError, ManifestError, UsageError
from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.provider import Provider, SecretRef
from rotator.transitions import Create, Discard, Promote, Stage, UpdateMeta

__all__ = ["DEFAULT_KEY_PATH", "KEY_LAG", "REFRESH", "Anchor", "AuditKeys", "audit_keys_for"]

DEFAULT_KEY_PATH = "_rotator/audit-key"
ANCHORS = "audit_anchors"
_MAX_ANCHORS = 8
_ANCHOR_HASH = 32  # hex digits kept per anchor: 128 bits, short enough for AWS tags
_RETRIES = 5
REFRESH = timedelta(hours=1)  # writers re-read the keys at least this often


@dataclass(frozen=True, slots=True)
class Anchor:
    """A log's head as recorded in the backend: record ``seq`` had a hash starting with ``hash``."""

    seq: int
    hash: str
    at: str

    def matches(self, full_hash: str) -> bool:
        return full_hash.startswith(self.hash) and len(self.hash) >= 16


_Entry = tuple[str, bytes, str]  # key id, key, creation time (ISO)


def _bundle(keyset: Keyset | None) -> list[_Entry]:
    """Every key of every version's bundle, oldest first; the current version's order wins."""
    if keyset is None:
        return []
    order: dict[str, _Entry] = {}
    ranked = sorted(keyset.versions, key=lambda v: v.state is not State.CURRENT)
    for version in ranked:
        if version.value is None:
            continue
        try:
            data = json.loads(version.value.reveal())
            entries = [(str(kid), base64.b64decode(key, validate=True), str(created))
                       for kid, key, created in data["keys"]]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise BackendUnavailable(f"{keyset.name}: the stored value is not a rotator audit key bundle",
                                     transient=False) from exc
        for entry in entries:
            order.setdefault(entry[0], entry)
    return list(order.values())


def _encode_bundle(keys: list[_Entry]) -> SecretValue:
    body = {"v": 1, "keys": [[kid, base64.b64encode(k).decode(), created] for kid, k, created in keys]}
    return SecretValue(json.dumps(body, separators=(",", ":")))


def _new_kid(count: int) -> str:
    return f"k{count + 1}-{secrets.token_hex(3)}"


class AuditKeys:
    """Loads, creates and rotates the audit keys and reads/writes the backend anchors. Thread-safe."""

    def __init__(self, provider: Provider, ref: SecretRef, where: str, *, clock: Clock = utcnow) -> None:
        self.provider, self.ref, self.where, self.clock = provider, ref, where, clock
        self._lock = threading.Lock()
        self._keyset: Keyset | None = None
        self._keys: dict[str, bytes] = {}
        self._superseded: dict[str, str] = {}
        self._loaded, self._loaded_at = False, 0.0

    # --- reading ----------------------------------------------------------------------------------------

    def _set(self, keyset: Keyset | None) -> None:
        entries = _bundle(keyset)
        self._keyset, self._loaded, self._loaded_at = keyset, True, time.monotonic()
        self._keys = {kid: key for kid, key, _ in entries}
        self._superseded = {old[0]: new[2] for old, new in itertools.pairwise(entries)}

    def refresh(self) -> None:
        """Read the keyset again (another process may have rotated the key)."""
        with self._lock:
            self._set(self.provider.read(self.ref))

    def known(self) -> dict[str, bytes]:
        """Every audit key by id, oldest first; empty when none was ever created."""
        with self._lock:
            if not self._loaded:
                self._set(self.provider.read(self.ref))
            return dict(self._keys)

    def superseded(self) -> dict[str, datetime]:
        """For each key that is no longer the newest: when its successor was created."""
        self.known()
        with self._lock:
            return {kid: datetime.fromisoformat(at) for kid, at in self._superseded.items()}

    def signing(self, *, create: bool) -> tuple[str, bytes]:
        """The newest key (id, bytes); created on first use when ``create``, else missing is an error.

        Re-read at least every ``REFRESH`` so a key rotated by another process is picked up well inside
        ``KEY_LAG`` (after which verify refuses records signed with the old key).
        """
        if self._loaded and time.monotonic() - self._loaded_at > REFRESH.total_seconds():
            self.refresh()
        keys = self.known()
        if not keys:
            if not create:
                raise BackendUnavailable(
                    f"the audit key is missing from {self.where} although the audit log is keyed",
                    hint="restore the keyset from the backend's backup; rotator will not create a new key "
                         "for a keyed log (that would hide a deleted key)", transient=False)
            keys = self._create()
        kid = next(reversed(keys))
        return kid, keys[kid]

    def _create(self) -> dict[str, bytes]:
        now = self.clock()
        first = [(_new_kid(0), secrets.token_bytes(32), now.isoformat())]
        version = KeyVersion(id=uuid.uuid4().hex, state=State.CURRENT, created_at=now, promoted_at=now,
                             value=_encode_bundle(first), actor="rotator-audit")
        try:
            created = self.provider.apply(self.ref, None, Create(version, {}))
            with self._lock:
                self._set(created if created.current is not None and created.current.value is not None
                          else self.provider.read(self.ref))
        except ConflictError:  # another process created it first: use theirs
            self.refresh()
        return self.known()

    # --- rotation ---------------------------------------------------------------------------------------

    def rotate(self) -> str:
        """Add a new key to the bundle and make it the signing key; return its id. Old keys stay."""
        for _ in range(_RETRIES):
            keyset = self.provider.read(self.ref)
            if keyset is None or not _bundle(keyset):
                raise UsageError(f"no audit key at {self.where} to rotate: the first audit record creates it")
            try:
                if keyset.pending is not None:  # an interrupted rotation: its key was never used
                    keyset = self.provider.apply(self.ref, keyset, Discard(keyset.pending.id))
                keys = _bundle(keyset)
                kid = _new_kid(len(keys))
                now = self.clock()
                version = KeyVersion(id=uuid.uuid4().hex, state=State.PENDING, created_at=now,
                                     value=_encode_bundle([*keys, (kid, secrets.token_bytes(32), now.isoformat())]),
                                     attempt=uuid.uuid4().hex, actor="rotator-audit")
                staged = self.provider.apply(self.ref, keyset, Stage(version))
                pending = staged.pending
                if pending is None:
                    raise BackendUnavailable(f"{self.where}: the staged audit key vanished", transient=True)
                promote = Promote(pending.id, now, timedelta(0), "audit key rotated")
                done = self.provider.apply(self.ref, staged, promote)
            except ConflictError:
                continue
            with self._lock:
                self._set(done if done.current is not None and done.current.value is not None
                          else self.provider.read(self.ref))
            return kid
        raise ConflictError(f"{self.where}: the audit key kept changing while rotating it; try again")

    # --- anchors ----------------------------------------------------------------------------------------

    def anchors(self) -> dict[str, Anchor]:
        """The backend anchor of each recently written log, by log id (read fresh)."""
        keyset = self.provider.read(self.ref)
        with self._lock:
            self._set(keyset)
        return _anchors(keyset.meta if keyset is not None else {})

    def anchor(self, log: str, seq: int, full_hash: str) -> None:
        """Record ``seq``/``full_hash`` as the head of log ``log`` (one conditional write; retried on races).

        Also picks up a key rotated by another process, so the next record is signed with the newest key.
        """
        keyset = self._keyset
        for attempt in range(_RETRIES):
            if keyset is None or attempt:
                keyset = self.provider.read(self.ref)
            if keyset is None:
                raise BackendUnavailable(f"the audit key is missing from {self.where}", transient=False)
            found = _anchors(keyset.meta)
            old = found.get(log)
            if old is not None and old.seq >= seq:
                return  # someone anchored this log as far already
            found.pop(log, None)
            others = sorted(found.items(), key=lambda kv: kv[1].at, reverse=True)[: _MAX_ANCHORS - 1]
            kept = {log: Anchor(seq, full_hash[:_ANCHOR_HASH], self.clock().isoformat(timespec="seconds")),
                    **dict(others)}  # this log, then the most recently anchored others
            value = {k: [a.seq, a.hash, a.at] for k, a in kept.items()}
            try:
                stored = self.provider.apply(self.ref, keyset, UpdateMeta({ANCHORS: value}))
            except ConflictError:
                continue
            with self._lock:
                if stored.current is not None and stored.current.value is not None:
                    self._set(stored)
                else:
                    self._set(self.provider.read(self.ref))
            return
        raise ConflictError(f"{self.where}: the audit anchors kept changing; the next run anchors again")


def _anchors(meta: Mapping[str, Any]) -> dict[str, Anchor]:
    raw = meta.get(ANCHORS)
    found: dict[str, Anchor] = {}
    if isinstance(raw, Mapping):
        for log, entry in raw.items():
            if isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is int:
                found[str(log)] = Anchor(entry[0], str(entry[1]), str(entry[2]))
    return found


def audit_keys_for(manifest: Any, providers: Any, *, clock: Clock = utcnow) -> AuditKeys:
    """The audit keys of ``manifest`` (a :class:`rotator.manifest.Manifest`) in ``providers``."""
    config = manifest.model.audit
    explicit = getattr(config, "key_provider", None)
    name = explicit or manifest.model.defaults.provider or "local"
    path = getattr(config, "key_path", None) or DEFAULT_KEY_PATH
    if not explicit and name not in manifest.provider_configs and len(manifest.provider_configs) == 1:
        name = next(iter(manifest.provider_configs))  # the manifest's only store holds the audit key too
    if name not in manifest.provider_configs:
        known = ", ".join(manifest.provider_configs) or "none"
        raise ManifestError(f"{manifest.path.name}: audit.key_provider: unknown provider '{name}' (defined: {known})",
                            hint="set audit.key_provider to the store that should keep the audit HMAC keys")
    for policy in manifest.secrets.values():
        if policy.provider == name and policy.ref.path == path:
            raise ManifestError(f"{manifest.path.name}: secret '{policy.name}' uses {name}:{path}, the path reserved "
                                "for the audit key", hint="rename the secret or set audit.key_path")
    ref = SecretRef(name=path, path=path, description="rotator audit HMAC keys: never delete")
    return AuditKeys(providers.get(name), ref, f"{name}:{path}", clock=clock)
