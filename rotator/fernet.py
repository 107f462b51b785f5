"""Decrypt with any accepted key: a ``fernet`` secret's keyring as cryptography's ``MultiFernet``.

::

    box = Keyring.from_manifest("rotation.yaml", "app/data-key").fernet()
    token = box.encrypt(b"card 4111...")          # always under the current key
    box.decrypt(token)                            # current, previous (in grace) or pending key
    box.rotate(old_token)                         # re-encrypted under the current key, timestamp kept

The keys are those the keyring accepts at the moment of the call (its cache, refreshed like every keyring
call), in the order current, previous, pending; ``MultiFernet`` encrypts with the first and tries each in turn
to decrypt. A token no accepted key opens triggers one re-read of the keyset if none happened within the
keyring's ``miss_refresh_interval`` (a writer with a fresher cache may already use a newly promoted key), and
never waits for one: garbage tokens cannot slow callers down. Re-encrypt stored data with :meth:`rotate`
during the grace period: once the previous key is retired, tokens still under it can no longer be opened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from rotator._keys import CachedKey, Snapshot
from rotator.errors import OperationFailed

if TYPE_CHECKING:
    from rotator.keyring import Keyring

__all__ = ["FernetRing", "InvalidToken"]

_Use = Callable[[MultiFernet], bytes]


class FernetRing:
    """Fernet encryption with a keyring's current key; decryption with every key it accepts. Thread-safe."""

    def __init__(self, keyring: Keyring) -> None:
        self._keyring = keyring
        self._built: tuple[Snapshot, MultiFernet] | None = None

    def encrypt(self, data: bytes) -> bytes:
        """A Fernet token of ``data`` under the current key."""
        return self._multi(self._keyring._snapshot()).encrypt(data)

    def decrypt(self, token: bytes | str, ttl: int | None = None) -> bytes:
        """The plaintext of ``token`` under any accepted key; raises ``InvalidToken`` if none opens it.

        ``ttl`` (seconds) also rejects tokens older than that, as ``Fernet.decrypt`` does.
        """
        return self._with_retry(lambda multi: multi.decrypt(token, ttl))

    def rotate(self, token: bytes | str) -> bytes:
        """``token`` re-encrypted under the current key (its timestamp kept); ``InvalidToken`` if unreadable."""
        return self._with_retry(lambda multi: multi.rotate(token))

    def _with_retry(self, use: _Use) -> bytes:
        snap = self._keyring._snapshot()
        try:
            return use(self._multi(snap))
        except InvalidToken:
            ring = self._keyring
            if time.monotonic() - ring._last_read < ring.miss_refresh_interval:
                raise  # read recently: the keyset is fresh enough, and we never wait for a re-read
        fresh = self._keyring._refresh_missing(snap.generation)
        return use(self._multi(fresh))

    def _multi(self, snap: Snapshot) -> MultiFernet:
        built = self._built
        if built is not None and built[0] is snap:
            return built[1]
        keys = [_fernet(key) for key in snap.keys]
        if snap.current is None or not keys:
            raise OperationFailed(f"{self._keyring.ref.name}: the keyset has no current version")
        multi = MultiFernet(keys)  # snap.keys is current first: MultiFernet encrypts with keys[0]
        self._built = (snap, multi)
        return multi

    def __repr__(self) -> str:
        return f"FernetRing(secret={self._keyring.ref.name!r})"


def _fernet(key: CachedKey) -> Fernet:
    cached = key.cache.get("fernet")
    if isinstance(cached, Fernet):
        return cached
    try:
        made = Fernet(key.raw)
    except (ValueError, TypeError):  # never quote the value
        raise OperationFailed(f"version {key.id[:8]} is not a Fernet key (32 url-safe base64 bytes)",
                              hint="fernet() is for secrets of kind: fernet") from None
    key.cache["fernet"] = made
    return made
