"""JWT signing and verification with a keyring's accepted keys (``Keyring.jwt_signer()`` / ``jwt_verifier()``).

:class:`JwtSigner` signs with the current key and a ``kid`` header; :class:`JwtVerifier` verifies with the
key the ``kid`` names, pinned to that key's algorithm. Both need PyJWT (``pip install pyjwt``), imported only
when one is created. See :mod:`rotator.jwks` for why the signer delays a new key by the JWKS ``max-age``.

This module depends on a :class:`KeySource` protocol, not on :mod:`rotator.keyring`, so the keyring can
import it at module level without an import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

from rotator._keys import CachedKey, Snapshot
from rotator.errors import OperationFailed
from rotator.keyset import State

__all__ = ["JwtSigner", "JwtVerifier", "KeySource"]


class KeySource(Protocol):
    """What the JWT helpers need from a keyring (implemented by :class:`rotator.keyring.Keyring`)."""

    def _snapshot(self) -> Snapshot: ...

    def _current(self, snap: Snapshot) -> CachedKey: ...

    @property
    def _wall(self) -> Callable[[], datetime]: ...

    def _refresh_missing(self, generation: int) -> Snapshot: ...


def _pyjwt() -> Any:
    try:
        import jwt
    except ImportError:  # pragma: no cover - depends on the installation
        raise OperationFailed("JWT helpers need PyJWT", hint="pip install 'pyjwt>=2.8'") from None
    return jwt


def _key_objects(key: CachedKey) -> tuple[Any, Any, str]:
    """(private key, public key, alg) of a PEM version, parsed once per cached version."""
    if "jwt" not in key.cache:
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        try:
            private = load_pem_private_key(key.raw, password=None)
        except (ValueError, TypeError):
            raise OperationFailed(f"version {key.id} is not a PEM private key (kind ed25519 or rsa)") from None
        if isinstance(private, ed25519.Ed25519PrivateKey):
            alg = "EdDSA"
        elif isinstance(private, rsa.RSAPrivateKey):
            alg = "RS256"
        else:
            raise OperationFailed(f"version {key.id}: unsupported key type for JWT")
        key.cache["jwt"] = (private, private.public_key(), alg)
    return key.cache["jwt"]  # type: ignore[no-any-return]


class JwtSigner:
    """Signs JWTs with the keyring's current key; the ``kid`` header names the version.

    For ``switch_after`` seconds after a promotion it keeps signing with the previous key (still accepted:
    ``switch_after`` is at most a quarter of the grace by default), so that verifiers caching the JWKS for up
    to ``max-age`` learn the new key before the first token signed with it reaches them. Verifiers that
    refetch on an unknown ``kid`` do not need this, but many rate-limit such refetches (PyJWT: 30 s).
    """

    def __init__(self, keyring: KeySource, switch_after: float = 0.0) -> None:
        self._keyring = keyring
        self.switch_after = switch_after
        self._jwt = _pyjwt()

    def sign(self, claims: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> str:
        """A compact JWS of ``claims`` with a ``kid`` header (``headers`` adds more)."""
        ring = self._keyring
        snap = ring._snapshot()
        key = ring._current(snap)
        promoted = key.version.promoted_at
        if self.switch_after > 0 and promoted is not None \
                and (ring._wall() - promoted).total_seconds() < self.switch_after:
            key = next((k for k in snap.keys if k.state is State.PREVIOUS), key)
        private, _, alg = _key_objects(key)
        token: str = self._jwt.encode(dict(claims), private, algorithm=alg, headers={**(headers or {}), "kid": key.id})
        return token


class JwtVerifier:
    """Verifies JWTs against every accepted key, chosen by ``kid`` and pinned to that key's algorithm."""

    def __init__(self, keyring: KeySource) -> None:
        self._keyring = keyring
        self._jwt = _pyjwt()

    def verify(self, token: str, **options: Any) -> dict[str, Any]:
        """The claims; raises ``jwt.InvalidTokenError`` (an unknown ``kid`` too). ``options`` go to decode."""
        jwt = self._jwt
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("token has no kid header")
        snap = self._keyring._snapshot()
        key = snap.by_id.get(kid)
        if key is None:
            key = self._keyring._refresh_missing(snap.generation).by_id.get(kid)
        if key is None:
            raise jwt.InvalidTokenError("unknown or retired signing key")
        _, public, alg = _key_objects(key)
        claims: dict[str, Any] = jwt.decode(token, public, algorithms=[alg], **options)
        return claims
