"""``GET /.well-known/jwks/<name>.json`` in the daemon, as a WSGI-neutral (status, headers, body) answer.

404 for unknown or non-signing secrets and for a secret with nothing stored yet; 503 with ``Retry-After``
while the backend is unreachable (the error's class only: a backend message could name paths).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING
from urllib.parse import unquote

from rotator.errors import RotatorError
from rotator.jwks import SIGNING_KINDS, build_jwks, jwks_max_age

if TYPE_CHECKING:
    from rotator.app import Runtime

__all__ = ["JWKS_PATH", "Response", "jwks_response"]

JWKS_PATH = "/.well-known/jwks/"
Response = tuple[int, dict[str, str], bytes]
_TEXT = "text/plain; charset=utf-8"


def jwks_response(rt: Runtime | None, path: str) -> Response:
    """The answer to a JWKS request for ``path`` (which starts with :data:`JWKS_PATH`)."""
    name = unquote(path[len(JWKS_PATH):].removesuffix(".json"))
    policy = rt.manifest.secrets.get(name) if rt is not None and path.endswith(".json") else None
    if rt is None or policy is None or policy.spec.kind not in SIGNING_KINDS:
        return 404, {"Content-Type": _TEXT}, b"not found\n"
    try:
        keyset = rt.engine.read(policy)
    except RotatorError as exc:
        return 503, {"Content-Type": _TEXT, "Retry-After": "5"}, \
            f"backend unavailable: {type(exc).__name__}\n".encode()
    if keyset is None:
        return 404, {"Content-Type": _TEXT}, b"not found\n"
    document = build_jwks(keyset, policy.spec.kind, rt.engine.clock())
    return 200, {"Content-Type": "application/jwk-set+json",
                 "Cache-Control": f"public, max-age={jwks_max_age(policy.grace)}"}, \
        json.dumps(document, sort_keys=True).encode()
