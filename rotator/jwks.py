"""Public signing keys for verifiers: the JWKS document (RFC 7517) of an ``ed25519``/``rsa`` secret.

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

The daemon's HTTP handler is :mod:`rotator.jwks_http`; the JWT helpers are :mod:`rotator.jwt_helpers`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rotator.errors import OperationFailed, UsageError
from rotator.generators import public_jwk
from rotator.keyset import Keyset, State

if TYPE_CHECKING:
    from rotator.app import Runtime

__all__ = ["SIGNING_KINDS", "build_jwks", "jwks_max_age", "not_signing", "print_jwks"]

SIGNING_KINDS = ("ed25519", "rsa")
_ALGORITHMS = {"OKP": "EdDSA", "RSA": "RS256"}
_MAX_AGE_CAP = 3600


def build_jwks(keyset: Keyset, kind: str, now: datetime | None = None) -> dict[str, Any]:
    """The JWKS of ``keyset``: current, previous (unless its grace ended before ``now``), pending."""
    if kind not in SIGNING_KINDS:
        raise not_signing(keyset.name, kind)
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


def not_signing(name: str, kind: str) -> UsageError:
    return UsageError(f"{name} is of kind {kind}; a JWKS exists only for {' and '.join(SIGNING_KINDS)} keys")


def print_jwks(rt: Runtime, name: str) -> None:
    """``rotator jwks NAME``: the JWKS as JSON on stdout."""
    import click

    try:
        policy = rt.manifest.secret(name)
        if policy.spec.kind not in SIGNING_KINDS:
            raise not_signing(name, policy.spec.kind)
        keyset = rt.engine.read(policy)
        if keyset is None:
            raise OperationFailed(f"{name}: nothing stored yet (run `rotator run` first)")
        document = build_jwks(keyset, policy.spec.kind, rt.engine.clock())
    finally:
        rt.close()
    click.echo(json.dumps(document, indent=2, sort_keys=True))
