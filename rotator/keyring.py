"""The consumer side: a cached, read-only view of one keyset for signing and verifying in application code.

::

    from rotator.keyring import Keyring

    keyring = Keyring.from_manifest("rotation.yaml", "payments/webhook-hmac")
    key_id, signature = keyring.sign(body)                  # HMAC-SHA256 with the current key
    keyring.verify(body, signature, key_id=key_id)          # current, previous in grace, or pending
    match = keyring.check(presented_api_key)                # KeyMatch(state=previous) -> warn the caller
    token = keyring.fernet().encrypt(data)                  # fernet: decrypt()/rotate() with any accepted key
    keyring.acknowledge("billing-worker")                   # "billing-worker now uses the current version"

**Cache.** The keyset is served from memory; after ``ttl`` (default 30 s) the next call starts a background
re-read and is served the cached keyset meanwhile. While the backend is down the last good keyset is served
(logged once per outage: ``serving cached keyset``), up to ``max_stale`` if set; a previous version still
stops being accepted at its ``expires_at``. An unknown ``key_id`` triggers one re-read (at most one per
``miss_refresh_interval`` for all callers), so a verifier accepts a key a fresher signer already uses.
Keep ``ttl`` well below the secret's ``grace``: a signer may sign with a just-replaced key for up to ``ttl``.

**Access.** Only ``Provider.read`` is called, plus ``Provider.update_meta`` by :meth:`Keyring.acknowledge`;
read-only credentials suffice for everything else. Values never appear in a ``repr``, log line or error.
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator._keys import CachedKey, KeyMatch, Snapshot
from rotator.acks import record_ack
from rotator.clock import utcnow
from rotator.errors import BackendUnavailable, OperationFailed, RotatorError, SecretNotFound, UsageError
from rotator.keyset import Keyset, KeyVersion, State
from rotator.logs import get_logger, register_secret
from rotator.provider import Provider, SecretRef, load_provider_class

if TYPE_CHECKING:
    from rotator.fernet import FernetRing
    from rotator.jwks import JwtSigner, JwtVerifier

__all__ = ["KeyMatch", "Keyring"]

log = get_logger("rotator.keyring")
_MAX_RETRY = 5.0  # seconds between re-reads while the backend is down


class Keyring:
    """A read-only, cached view of one secret's keyset. Thread-safe; see the module docstring."""

    def __init__(
        self, provider: Provider | Mapping[str, Any], secret: str | SecretRef, *, kind: str | None = None,
        ttl: float = 30.0, background: bool = True, max_stale: float | None = None,
        miss_refresh_interval: float = 1.0, clock: Callable[[], datetime] | None = None,
        base_dir: str | Path | None = None,
    ) -> None:
        if ttl <= 0:
            raise UsageError("ttl must be positive (seconds)")
        owned = isinstance(provider, Mapping)
        self._provider = _provider_from_config(provider, base_dir) if isinstance(provider, Mapping) else provider
        self.ref = secret if isinstance(secret, SecretRef) else SecretRef(secret, secret)
        self.kind, self.ttl, self.background, self.max_stale = kind, ttl, background, max_stale
        self.miss_refresh_interval = miss_refresh_interval
        self.grace: timedelta | None = None  # the secret's grace, when known (from_manifest)
        self._wall: Callable[[], datetime] = clock or utcnow
        self._now: Callable[[], float] = (lambda: clock().timestamp()) if clock is not None else time.monotonic
        self._retry = min(ttl, _MAX_RETRY)
        self._lock = threading.Lock()  # guards the fields below
        self._read_lock = threading.RLock()  # one backend read at a time
        self._miss_lock = threading.Lock()  # one key-id-miss re-read at a time
        self._snap: Snapshot | None = None
        self._next_refresh = -math.inf
        self._refreshing = False
        self._outage_since: float | None = None
        self._last_read = -math.inf  # time.monotonic() of the last backend read (rate limit)
        self._generation = 0
        self._closers: list[Callable[[], None]] = [self._provider.close] if owned else []

    @classmethod
    def from_manifest(cls, path: str | Path, name: str, **options: Any) -> Keyring:
        """A keyring for secret ``name`` of the manifest at ``path``, on the provider the manifest names."""
        from rotator.manifest import load_manifest

        manifest = load_manifest(path)
        policy = manifest.secret(name)
        if policy.spec.kind == "manual":  # its keyset holds records of rotations by hand, never a usable key
            raise UsageError(f"{name} is a kind: manual secret: rotator holds no value for it")
        providers = manifest.build_providers()
        ring = cls(providers.get(policy.provider), policy.ref, kind=policy.spec.kind, **options)
        ring._closers.append(providers.close)
        ring.grace = policy.grace
        if policy.grace.total_seconds() <= ring.ttl:
            log.warning("keyring.ttl_not_below_grace", secret=name, ttl=ring.ttl,
                        grace_seconds=policy.grace.total_seconds())
        return ring

    def signing_key(self) -> KeyVersion:
        """The current version (what signers use)."""
        return self._current(self._snapshot()).version

    def accepted_keys(self) -> tuple[KeyVersion, ...]:
        """Every version a verifier accepts now: current, previous in grace, pending."""
        return tuple(key.version for key in self._snapshot().keys)

    def sign(self, message: bytes | str) -> tuple[str, str]:
        """``(key_id, hex HMAC-SHA256 of message)`` with the current key; send both to the verifier."""
        key = self._current(self._snapshot())
        mac = key.mac.copy()
        mac.update(message.encode() if isinstance(message, str) else message)
        return key.id, mac.hexdigest()

    def verify(self, message: bytes | str, signature: str | bytes, key_id: str | None = None) -> bool:
        """True if ``signature`` (hex str or raw bytes) is the HMAC-SHA256 of ``message`` under an accepted key.

        The key named ``key_id`` is tried first, then every accepted key; comparisons are constant-time. An
        unknown ``key_id`` causes one rate-limited re-read (a key promoted after the cache was filled).
        """
        snap = self._snap
        if snap is None or self._now() >= snap.deadline:
            snap = self._snapshot()
        data = message.encode() if isinstance(message, str) else message
        first = snap.by_id.get(key_id) if key_id is not None else None
        if first is not None:  # the hot path, inlined: one HMAC and one constant-time comparison
            mac = first.mac.copy()
            mac.update(data)
            try:
                if isinstance(signature, str):
                    if hmac.compare_digest(mac.hexdigest(), signature):
                        return True
                elif hmac.compare_digest(mac.digest(), signature):
                    return True
            except TypeError:  # a non-ASCII str, or neither str nor bytes
                return False
        for key in snap.keys:
            if key is not first and key.matches(data, signature):
                return True
        if key_id is None or first is not None:
            return False
        fresh = self._refresh_missing(snap.generation)
        tried = snap.by_id
        return any(key.id not in tried and key.matches(data, signature) for key in fresh.keys)

    def check(self, presented: str) -> KeyMatch | None:
        """Which accepted version ``presented`` (an API key) is, or None; compares against every version."""
        snap = self._snapshot()
        data = presented.encode()
        found: CachedKey | None = None
        for key in snap.keys:
            if hmac.compare_digest(key.raw, data) and found is None:
                found = key
        if found is None:
            return None
        return KeyMatch(found.id, found.state, found.version.expires_at)

    def jwt_signer(self, switch_after: float | None = None) -> JwtSigner:
        """Signs JWTs (EdDSA or RS256, ``kid`` header); needs PyJWT.

        A new current key is used only ``switch_after`` seconds after its promotion (the previous key until
        then), so verifiers caching the JWKS have it first; default: the JWKS max-age of the secret's grace.
        """
        from rotator.jwks import JwtSigner, jwks_max_age

        if switch_after is None:
            switch_after = jwks_max_age(self.grace) if self.grace is not None else 0.0
        return JwtSigner(self, switch_after)

    def jwt_verifier(self) -> JwtVerifier:
        """Verifies JWTs signed by any accepted key, chosen by ``kid``; needs PyJWT."""
        from rotator.jwks import JwtVerifier

        return JwtVerifier(self)

    def fernet(self) -> FernetRing:
        """Encrypt with the current key, decrypt with any accepted one (``MultiFernet``; rotator.fernet)."""
        from rotator.fernet import FernetRing

        if self.kind is not None and self.kind != "fernet":
            raise UsageError(f"{self.ref.name} is a {self.kind} secret; fernet() needs kind: fernet")
        return FernetRing(self)

    def acknowledge(self, consumer: str) -> str:
        """Record that ``consumer`` now uses the current version (one conditional write); returns its id.

        Re-reads first, so the keyring itself moves to the newest current version; a write that loses a race
        is retried after another read.
        """
        def seen(keyset: Keyset) -> None:
            self._install(keyset, self._now())

        return record_ack(self._provider, self.ref, consumer, self._wall, read=self._read, seen=seen)

    def refresh(self) -> None:
        """Re-read the keyset now (keeping the cached one, and logging, if the backend is down)."""
        self._check_stale(self._refresh(), self._now())

    def _snapshot(self) -> Snapshot:
        snap = self._snap
        now = self._now()
        if snap is not None and now < snap.deadline:
            return snap
        if snap is None or (now >= self._next_refresh and not self.background):
            snap = self._reload(snap)
        else:
            if now >= self._next_refresh:
                self._start_background(now)
            with self._lock:
                snap = self._snap
                assert snap is not None
                if now >= snap.expiry:
                    snap = self._build(snap.keyset, snap.loaded_at, now, snap.generation)
                self._snap = snap = replace(snap, deadline=self._deadline(snap))
        self._check_stale(snap, now)
        return snap

    def _start_background(self, now: float) -> None:
        with self._lock:
            self._next_refresh = now + self._retry  # serve the cached keyset meanwhile
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._background, name=f"keyring:{self.ref.name}", daemon=True).start()

    def _background(self) -> None:
        try:
            self._refresh()
        except Exception as exc:  # an unexpected bug must not kill silently: log, retry after _retry
            log.error("keyring.refresh_failed", secret=self.ref.name, error=type(exc).__name__)
        finally:
            with self._lock:
                self._refreshing = False

    def _refresh(self) -> Snapshot:
        with self._read_lock:
            started = self._now()
            try:
                keyset = self._read()
            except RotatorError as exc:
                return self._serve_stale(exc, started)
            snap = self._install(keyset, started)
        return snap

    def _reload(self, seen: Snapshot | None) -> Snapshot:
        """Re-read, unless another thread replaced ``seen`` (found stale by the caller) while we waited."""
        with self._read_lock:
            snap = self._snap
            if snap is not None and snap is not seen and self._now() < snap.deadline:
                return snap
            return self._refresh()

    def _read(self) -> Keyset:
        self._last_read = time.monotonic()
        keyset = self._provider.read(self.ref)
        if keyset is None:
            raise SecretNotFound(f"{self.ref.name}: nothing stored at {self.ref.path}")
        return keyset

    def _install(self, keyset: Keyset, started: float) -> Snapshot:
        with self._lock:
            self._generation += 1
            self._next_refresh = started + self.ttl
            snap = self._build(keyset, started, self._now(), self._generation)
            self._snap = snap
            recovered, self._outage_since = self._outage_since is not None, None
        if recovered:
            log.info("keyring.backend_recovered", secret=self.ref.name)
        return snap

    def _build(self, keyset: Keyset, loaded_at: float, now: float, generation: int) -> Snapshot:
        wall = self._wall()
        keys: list[CachedKey] = []
        expiry = math.inf
        for version in keyset.accepted():
            if version.value is None:
                continue
            if version.expires_at is not None:
                left = (version.expires_at - wall).total_seconds()
                if left <= 0:
                    continue  # its grace ended: no longer accepted, whether or not it is retired yet
                expiry = min(expiry, now + left)
            register_secret(version.value)
            keys.append(CachedKey(version))
        current = next((k for k in keys if k.state is State.CURRENT), None)
        snap = Snapshot(keyset, tuple(keys), {k.id: k for k in keys}, current, loaded_at, expiry, 0.0, generation)
        return replace(snap, deadline=self._deadline(snap))

    def _deadline(self, snap: Snapshot) -> float:
        stale = snap.loaded_at + self.max_stale if self.max_stale is not None else math.inf
        return min(self._next_refresh, snap.expiry, stale)

    def _serve_stale(self, exc: RotatorError, started: float) -> Snapshot:
        with self._lock:
            snap = self._snap
            if snap is None:
                raise exc
            first = self._outage_since is None
            if first:
                self._outage_since = started
            self._next_refresh = started + self._retry
            self._snap = snap = replace(snap, deadline=self._deadline(snap))
        if first:
            log.warning("serving cached keyset", secret=self.ref.name, error=str(exc),
                        age_seconds=round(started - snap.loaded_at, 3))
        return snap

    def _check_stale(self, snap: Snapshot, now: float) -> None:
        if self.max_stale is not None and now - snap.loaded_at > self.max_stale:
            raise BackendUnavailable(
                f"{self.ref.name}: keyset not refreshed for {now - snap.loaded_at:.0f}s (max_stale "
                f"{self.max_stale:g}s); the backend is still unavailable")

    def _refresh_missing(self, generation: int) -> Snapshot:
        """Re-read for an unknown key id, unless another caller already did; at most one read per interval."""
        with self._miss_lock:
            if self._generation == generation:
                wait = self._last_read + self.miss_refresh_interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if self._generation == generation:
                    self._refresh()
        return self._snapshot()

    def _current(self, snap: Snapshot) -> CachedKey:
        if snap.current is None:
            raise OperationFailed(f"{self.ref.name}: the keyset has no current version")
        return snap.current

    def close(self) -> None:
        """Release the provider connections this keyring opened itself."""
        for close in self._closers:
            close()
        self._closers.clear()

    def __enter__(self) -> Keyring:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Keyring(secret={self.ref.name!r}, provider={type(self._provider).__name__}, ttl={self.ttl:g})"


def _provider_from_config(config: Mapping[str, Any], base_dir: str | Path | None) -> Provider:
    """Build a provider from a manifest-style mapping such as ``{"type": "local", "path": "store.db"}``."""
    from pydantic import ValidationError

    type_name = config.get("type")
    if not isinstance(type_name, str):
        raise UsageError("a provider config needs 'type' (local, vault, aws, ...)")
    cls = load_provider_class(type_name)
    try:
        model = cls.config_model.model_validate(dict(config))
    except ValidationError as exc:  # never echo input values: they may be credentials
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors(include_input=False, include_url=False))
        raise UsageError(f"provider config ({type_name}): {problems}") from None
    return cls(name=type_name, config=model, base_dir=Path(base_dir or "."))  # type: ignore[call-arg]
