"""Public JWKs (RFC 7517; RFC 8037 for Ed25519) of the signing keys rotator generates, built by joserfc.

Only public keys are ever imported here, so the JWK cannot carry a private member (``d``, ``p``, ...).
Members are the ones RFC 7517/7518/8037 define for the key type (``kty``, ``crv``, ``x``; ``kty``, ``n``,
``e``); ``kid``, ``alg`` and ``use`` are added by :func:`rotator.jwks.build_jwks`.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from joserfc.jwk import OKPKey, RSAKey

__all__ = ["public_jwk_of"]

_MEMBERS = {"OKP": ("kty", "crv", "x"), "RSA": ("kty", "n", "e")}


def public_jwk_of(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> dict[str, Any]:
    """The public JWK of ``key`` (no ``kid``)."""
    if isinstance(key, ed25519.Ed25519PublicKey):
        jwk = OKPKey.import_key(key).as_dict(private=False)
    elif isinstance(key, rsa.RSAPublicKey):
        jwk = RSAKey.import_key(key).as_dict(private=False)
    else:  # pragma: no cover - the generators only make these two
        raise TypeError(f"no JWK for {type(key).__name__}")
    return {name: jwk[name] for name in _MEMBERS[str(jwk["kty"])]}
