"""Password hashes of MySQL / MariaDB accounts, computed or checked on this machine.

- ``mysql_native_password`` (MariaDB's default): ``'*' + HEX(SHA1(SHA1(password)))``. rotator sends this hash
  (``IDENTIFIED BY PASSWORD '<hash>'``) instead of the password, so no plaintext reaches a MariaDB server.
- ``caching_sha2_password`` (MySQL 8's default): ``$A$<rounds/1000 as 3 digits>$<20-byte salt><43-char
  digest>``, the digest being SHA-256-crypt (Drepper's algorithm, as in glibc ``$5$``) of the password with that
  salt and rounds. Used only to tell which of a dual pair (primary or retained) a password is.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["native_hash", "sha256_crypt", "stored_matches"]

_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# the byte order in which SHA-256-crypt encodes its 32-byte digest, three bytes per four characters
_ORDER = ((0, 10, 20), (21, 1, 11), (12, 22, 2), (3, 13, 23), (24, 4, 14), (15, 25, 5), (6, 16, 26),
          (27, 7, 17), (18, 28, 8), (9, 19, 29))


def native_hash(password: str) -> str:
    """The ``mysql_native_password`` hash: ``*`` and 40 upper-case hex digits."""
    # SHA-1 is not our choice but the fixed format MariaDB's mysql_native_password plugin stores and checks
    # (usedforsecurity=False only tells bandit/FIPS builds that no new security property is built on it)
    inner = hashlib.sha1(password.encode(), usedforsecurity=False).digest()
    return "*" + hashlib.sha1(inner, usedforsecurity=False).hexdigest().upper()


def _b64(data: bytes) -> str:
    out = []
    for a, b, c in _ORDER:
        value = (data[a] << 16) | (data[b] << 8) | data[c]
        out += [_ALPHABET[(value >> (6 * i)) & 0x3F] for i in range(4)]
    value = (data[31] << 8) | data[30]
    out += [_ALPHABET[(value >> (6 * i)) & 0x3F] for i in range(3)]
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // 32 + 1))[:length]


def sha256_crypt(password: bytes, salt: bytes, rounds: int = 5000) -> str:
    """The 43-character SHA-256-crypt digest (glibc ``crypt("$5$rounds=N$salt$")`` without the prefix)."""
    b = hashlib.sha256(password + salt + password).digest()
    a = hashlib.sha256(password + salt + _repeat(b, len(password)))
    n = len(password)
    while n:
        a.update(b if n & 1 else password)
        n >>= 1
    a_digest = a.digest()
    p = _repeat(hashlib.sha256(password * len(password)).digest(), len(password))
    s = _repeat(hashlib.sha256(salt * (16 + a_digest[0])).digest(), len(salt))
    c = a_digest
    for i in range(rounds):
        h = hashlib.sha256(p if i & 1 else c)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(c if i & 1 else p)
        c = h.digest()
    return _b64(c)


def stored_matches(plugin: str, stored: bytes | str | None, password: str) -> bool | None:
    """Does ``stored`` (an account's authentication string) verify ``password``? None when it cannot tell."""
    if not stored:
        return None
    raw = stored.encode("latin-1") if isinstance(stored, str) else stored
    if plugin == "mysql_native_password":
        return hmac.compare_digest(raw.decode("latin-1").upper(), native_hash(password))
    if plugin == "caching_sha2_password" and raw.startswith(b"$A$") and len(raw) == 7 + 20 + 43:
        rounds = int(raw[3:6]) * 1000
        salt, digest = raw[7:27], raw[27:].decode("latin-1")
        return hmac.compare_digest(sha256_crypt(password.encode(), salt, rounds), digest)
    return None
