"""Public signing keys for verifiers: a JWKS (RFC 7517) per ``ed25519``/``rsa`` secret, and JWT helpers.

The JWKS lists current, previous (until its grace ends) and pending, each with ``kid`` = version id,
``alg`` (``EdDSA`` for Ed25519, ``RS256`` for RSA) and ``use: sig``. ``rotator jwks NAME`` prints it; the
daemon serves it at ``/.well-known/jwks/<name>.json``.

**Cache-Control.** ``max-age`` is ``min(grace / 4, 1h)``. A cached JWKS goes wrong in two ways: it lacks a
key promoted after the fetch, and it still lists a key retired after the fetch.

1. New keys: ``Keyring.jwt_signer()`` keeps signing with the previous key for ``max-age`` after a promotion,
   so every cache that honours ``max-age`` has refetched before the first token with the new ``kid``
   arrives. Refetch-on-unknown-``kid`` is not enough on its own: clients rate-limit it (PyJWT's
   ``PyJWKClient``: once per 30 s). The delay uses at most a quarter of the grace; the previous key stays
   valid for the rest, so a token signed just before the switch still has >= 3/4 of the grace to verify.
2. Retired keys: a cache keeps accepting a retired key for up to ``max-age`` (at most grace/4, at most an
   hour). That is the revocation lag of JWKS-based verifiers; incident revocations should be announced to
   them (``key.revoked``) so they refetch.

:class:`JwtSigner` / :class:`JwtVerifier` (``Keyring.jwt_signer()`` / ``jwt_verifier()``) sign with the
current key and a ``kid`` header, and verify with the key the ``kid`` names, pinned to that key's algorithm.
They need PyJWT (``pip install pyjwt``), imported only when used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from rotator.errors import OperationFailed, RotatorError, UsageError
from rotator.generators import public_jwk
from rotator.keyset import Keyset, State

if TYPE_CHECKING:
    from rotator._keys import CachedKey
    from rotator.app import Runtime
    from rotator.keyring import Keyring

__all__ = [
    "JWKS_PATH", "SIGNING_KINDS", "JwtSigner", "JwtVerifier", "build_jwks", "jwks_max_age", "print_jwks",
    "serve_jwks",
]

JWKS_PATH = "/.well-known/jwks/"
SIGNING_KINDS = ("ed25519", "rsa")
_ALGORITHMS = {"OKP": "EdDSA", "RSA": "RS256"}
_MAX_AGE_CAP = 3600


def build_jwks(keyset: Keyset, kind: str, now: datetime | None = None) -> dict[str, Any]:
    """The JWKS of ``keyset``: current, previous (unless its grace ended before ``now``), pending."""
    if kind not in SIGNING_KINDS:
        raise _not_signing(keyset.name, kind)
    keys = []
    for version in keyset.accepted():
        if now is not None and version.state is State.PREVIOUS and version.expires_at is not None \
                and version.expires_at <= now:
            continue
        if version.public is not None:
            jwk = dict(version.public)
        elif version.value is not None:  # e.g. an adopted key: derive the public part
            jwk = public_jwk(kind, version.value.reveal())
        else:
            continue
        jwk.update(kid=version.id, alg=_ALGORITHMS.get(str(jwk.get("kty")), "EdDSA"), use="sig")
        keys.append(jwk)
    return {"keys": keys}


def jwks_max_age(grace: timedelta) -> int:
    """``Cache-Control: max-age`` for a JWKS: a quarter of the grace period, at most an hour."""
    return int(min(grace.total_seconds() / 4, _MAX_AGE_CAP))


def _not_signing(name: str, kind: str) -> UsageError:
    return UsageError(f"{name} is of kind {kind}; a JWKS exists only for {' and '.join(SIGNING_KINDS)} keys")


def print_jwks(rt: Runtime, name: str) -> None:
    """``rotator jwks NAME``: the JWKS as JSON on stdout."""
    import click

    try:
        policy = rt.manifest.secret(name)
        if policy.spec.kind not in SIGNING_KINDS:
            raise _not_signing(name, policy.spec.kind)
        keyset = rt.engine.read(policy)
        if keyset is None:
            raise OperationFailed(f"{name}: nothing stored yet (run `rotator run` first)")
        document = build_jwks(keyset, policy.spec.kind, rt.engine.clock())
    finally:
        rt.close()
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def serve_jwks(handler: BaseHTTPRequestHandler, rt: Runtime | None, path: str) -> None:
    """Answer ``GET /.well-known/jwks/<name>.json`` in the daemon: 404 for unknown or non-signing secrets."""
    name = unquote(path[len(JWKS_PATH):].removesuffix(".json"))
    policy = rt.manifest.secrets.get(name) if rt is not None and path.endswith(".json") else None
    code, headers, body = 404, {"Content-Type": "text/plain; charset=utf-8"}, b"not found\n"
    if rt is not None and policy is not None and policy.spec.kind in SIGNING_KINDS:
        try:
            keyset = rt.engine.read(policy)
            if keyset is not None:
                document = build_jwks(keyset, policy.spec.kind, rt.engine.clock())
                code, body = 200, json.dumps(document, sort_keys=True).encode()
                headers = {"Content-Type": "application/jwk-set+json",
                           "Cache-Control": f"public, max-age={jwks_max_age(policy.grace)}"}
        except RotatorError as exc:
            code, body = 503, f"backend unavailable: {type(exc).__name__}\n".encode()
            headers = {"Content-Type": "text/plain; charset=utf-8", "Retry-After": "5"}
    handler.send_response(code)
    for key, value in {**headers, "Content-Length": str(len(body))}.items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


# --- JWT -------------------------------------------------------------------------------------------------


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

    def __init__(self, keyring: Keyring, switch_after: float = 0.0) -> None:
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

    def __init__(self, keyring: Keyring) -> None:
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
