"""Checking a password against a stored SCRAM-SHA-256 verifier (RFC 5802 / RFC 5803, PostgreSQL's format).

The verifier itself is computed by libpq (``PQencryptPasswordConn`` via psycopg's
``pgconn.encrypt_password``), so rotator never sends a plaintext password. This module only answers
"does the role still hold this password?" for :meth:`PostgresTarget.disable` when the admin can read
``pg_authid`` (a superuser), which saves a login per retired credential.

Format: ``SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>``;
``StoredKey = SHA256(HMAC(PBKDF2-HMAC-SHA256(password, salt, iterations), "Client Key"))``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

__all__ = ["verifier_matches"]

_PREFIX = "SCRAM-SHA-256$"


def verifier_matches(verifier: str | None, password: str) -> bool | None:
    """True/False for a SCRAM verifier; None when it cannot be decided here (md5 or no verifier, or a
    non-ASCII password, which PostgreSQL normalises with SASLprep first)."""
    if not verifier or not verifier.startswith(_PREFIX) or not password.isascii():
        return None
    try:
        params, keys = verifier[len(_PREFIX):].split("$", 1)
        iterations_text, salt_b64 = params.split(":", 1)
        stored_b64 = keys.split(":", 1)[0]
        salt, stored = base64.b64decode(salt_b64), base64.b64decode(stored_b64)
        iterations = int(iterations_text)
    except (ValueError, binascii.Error):
        return None
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored)
