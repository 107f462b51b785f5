"""Secret value generators, one per manifest ``kind``, drawn only from :mod:`secrets` and ``cryptography``.

* ``api_key``: ``prefix + body + checksum`` (below).
* ``hmac``: ``bytes`` random bytes (default 32) as ``base64`` (standard, padded), ``base64url`` (URL-safe,
  unpadded, as in JWK/JWT) or ``hex`` (lower case).
* ``password``: ``length`` characters (default 32), exactly uniform (rejection sampling) over the union of the
  ``require`` classes minus ``exclude``, with at least one character of every required class.
* ``ed25519`` / ``rsa`` (e = 65537; 2048, 3072 or 4096 bits): unencrypted PKCS#8 PEM private key (the store
  encrypts it); the public part as a JWK (RFC 7517 / 8037, base64url unpadded) without ``kid``, which the
  engine sets to the version id.
* ``fernet``: ``Fernet.generate_key()``, URL-safe base64 of 32 random bytes.
* ``manual``: reminder-only (rotated by hand, recorded with ``rotator mark-rotated``): takes no parameters,
  and :func:`generate` and :func:`matches_kind` refuse it, so nothing can ever produce or check its value.

API keys follow GitHub's token format so secret scanners can spot them and check them offline::

    rtr_live_ 9fK2hQ...Zc0P 1xYz0A      prefix: <= 32 of [A-Za-z0-9_] ending in "_", or empty
    └prefix─┘ └──body─────┘ └─────┘     body: `length` (default 32, 20..256) base62 chars
                                        checksum: CRC32 of ASCII prefix+body as exactly 6 base62 digits

Base62 digits are ``0-9A-Za-z`` (most significant first, zero-padded with ``0``). CRC32 catches every
single-character change and every swap of neighbours, so :func:`check_api_key` drops a scanner's false
positives; it proves well-formedness, not authenticity. Nothing here logs or puts a value in a message.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import secrets
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from rotator.errors import OperationFailed
from rotator.keyset import SecretValue

__all__ = [
    "BASE62", "ENCODINGS", "KINDS", "MANUAL", "Generated", "GeneratorParams", "ParamError",
    "check_api_key", "check_params", "generate", "matches_kind", "public_jwk",
]

Kind = Literal["api_key", "hmac", "password", "ed25519", "rsa", "fernet", "manual"]
Encoding = Literal["base64", "base64url", "hex"]

KINDS: tuple[str, ...] = get_args(Kind)
MANUAL = "manual"  # the reminder-only kind: in KINDS (a manifest may name it), never in the generator table
ENCODINGS: tuple[str, ...] = get_args(Encoding)
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
DEFAULT_SYMBOLS = "!#$%&()*+,-./:;<=>?@[]^_{|}~"

_CLASSES = {"lower": string.ascii_lowercase, "upper": string.ascii_uppercase, "digit": string.digits}
_CLASS_NAMES = ("lower", "upper", "digit", "symbol")
_RSA_BITS = (2048, 3072, 4096)
_HMAC_BYTES = (16, 1024, 32)  # min, max, default
_API_KEY_LENGTH = (20, 256, 32)
_PASSWORD_LENGTH = (8, 1024, 32)
_CHECKSUM_LEN = 6
_PREFIX_RE = re.compile(r"(?:[A-Za-z0-9_]{0,31}_)?", re.ASCII)  # empty, or ending in "_" (the body has none)
_API_KEY_RE = re.compile(r"[A-Za-z0-9_]{0,32}?[A-Za-z0-9]{20,256}", re.ASCII)  # prefix + body, any prefix
_BODY_RE = re.compile(r"[A-Za-z0-9]{20,256}", re.ASCII)
_PKCS8_HEADER = "-----BEGIN PRIVATE KEY-----"


@dataclass(frozen=True, slots=True)
class GeneratorParams:
    """How to generate one secret's values; each field is used by the kinds named beside it."""

    kind: Kind
    bytes: int | None = None  # hmac: random bytes (default 32, 16..1024)
    encoding: Encoding = "base64"  # hmac: output encoding
    prefix: str = ""  # api_key: [A-Za-z0-9_] ending in "_", at most 32 characters
    length: int | None = None  # api_key: body (default 32, 20..256); password: total (default 32, 8..1024)
    require: tuple[str, ...] = ("lower", "upper", "digit", "symbol")  # password: classes that must appear
    exclude: str = ""  # password: characters never used
    symbols: str = DEFAULT_SYMBOLS  # password: the symbol class (ASCII punctuation only)
    rsa_bits: int = 3072  # rsa: 2048 | 3072 | 4096


@dataclass(frozen=True, slots=True)
class Generated:
    """A fresh value (redacted in ``repr``) and, for signing keys, its public JWK without ``kid``."""

    value: SecretValue
    public: dict[str, Any] | None


class ParamError(ValueError):
    """An impossible generator setting; ``field`` names the :class:`GeneratorParams` field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field

_USED_BY = {  # field -> the kinds that read it; other kinds must leave it at its default
    "bytes": ("hmac",), "encoding": ("hmac",), "prefix": ("api_key",), "length": ("api_key", "password"),
    "require": ("password",), "exclude": ("password",), "symbols": ("password",), "rsa_bits": ("rsa",),
}


def check_params(params: GeneratorParams) -> None:
    """Raise :class:`ParamError` (a ``ValueError``) if ``params`` cannot produce a value.

    Also rejects a field set for a kind that ignores it (``bytes`` on a password): nearly always a typo.
    """
    if params.kind not in KINDS:
        raise ParamError("kind", f"unknown kind {params.kind!r}; expected one of {', '.join(KINDS)}")
    for f in dataclasses.fields(GeneratorParams):
        users = _USED_BY.get(f.name)
        if users and params.kind not in users and getattr(params, f.name) != f.default:
            raise ParamError(f.name, f"{f.name} only applies to kind {' or '.join(users)}, not {params.kind}")
    (_CHECK_ONLY.get(params.kind) or _TABLE[params.kind].check)(params)


def _in_range(field: str, value: int | None, bounds: tuple[int, int, int], what: str) -> None:
    low, high, _ = bounds
    if value is not None and not low <= value <= high:
        raise ParamError(field, f"{field} of {what} must be between {low} and {high}, got {value}")


def _check_api_key(params: GeneratorParams) -> None:
    if not _PREFIX_RE.fullmatch(params.prefix):
        raise ParamError("prefix", "prefix may only use A-Z a-z 0-9 _, must end with _ (so a scanner sees "
                                   "where the body starts) and be at most 32 characters long")
    _in_range("length", params.length, _API_KEY_LENGTH, "an api_key body")


def _check_hmac(params: GeneratorParams) -> None:
    _in_range("bytes", params.bytes, _HMAC_BYTES, "an hmac key")
    if params.encoding not in ENCODINGS:
        raise ParamError("encoding", f"unknown encoding {params.encoding!r}; use {', '.join(ENCODINGS)}")


def _check_password(params: GeneratorParams) -> None:
    _in_range("length", params.length, _PASSWORD_LENGTH, "a password")
    if not params.require:
        raise ParamError("require", f"require must name at least one class of {', '.join(_CLASS_NAMES)}")
    for name in params.require:
        if name not in _CLASS_NAMES:
            raise ParamError("require", f"unknown class {name!r}; use some of {', '.join(_CLASS_NAMES)}")
    if bad := sorted({c for c in params.symbols if c not in string.punctuation}):
        raise ParamError("symbols", f"symbols may only hold ASCII punctuation, not {''.join(bad)!r}")
    for name, chars in _password_classes(params).items():  # length >= 8 always fits the <= 4 classes
        if not chars:
            field = "symbols" if name == "symbol" and not params.symbols else "exclude"
            raise ParamError(field, f"require includes {name!r} but {field} leaves no such character")


def _check_rsa(params: GeneratorParams) -> None:
    if params.rsa_bits not in _RSA_BITS:
        raise ParamError("rsa_bits", f"rsa_bits must be 2048, 3072 or 4096, got {params.rsa_bits}")


def _check_nothing(params: GeneratorParams) -> None:
    """ed25519, fernet and manual take no parameters."""


def _password_classes(params: GeneratorParams) -> dict[str, str]:
    """Required class name -> its characters minus ``exclude``; classes are disjoint and deduplicated."""
    pools = {**_CLASSES, "symbol": "".join(dict.fromkeys(params.symbols))}
    wanted = dict.fromkeys(params.require)
    return {name: "".join(c for c in pools[name] if c not in params.exclude) for name in wanted}


# --- generation ------------------------------------------------------------------------------------------


def generate(params: GeneratorParams) -> Generated:
    """A fresh value of ``params.kind``; raises :class:`ParamError` for impossible params.

    ``manual`` is refused with :class:`~rotator.errors.OperationFailed`: its value is made by a human.
    """
    check_params(params)
    if params.kind == MANUAL:
        raise OperationFailed("kind manual is reminder-only: rotator never generates its value",
                              hint="rotate it by hand, then record it with `rotator mark-rotated NAME`")
    return _TABLE[params.kind].generate(params)


def _uniform(alphabet: str, length: int) -> str:
    """``length`` independent, uniform draws from ``alphabet`` (at most 94 characters).

    One ``secrets.token_bytes`` call per batch, 5x faster than ``secrets.choice`` per character. Bytes at or
    above the largest multiple of the alphabet size are dropped, so ``byte % size`` is unbiased.
    """
    size, drawn = len(alphabet), list[str]()
    limit = 256 - 256 % size
    while len(drawn) < length:
        drawn.extend(alphabet[b % size] for b in secrets.token_bytes(length) if b < limit)
    return "".join(drawn[:length])


def _gen_api_key(params: GeneratorParams) -> Generated:
    head = params.prefix + _uniform(BASE62, params.length or _API_KEY_LENGTH[2])
    return Generated(SecretValue(head + _checksum(head)), None)


def _gen_hmac(params: GeneratorParams) -> Generated:
    raw = secrets.token_bytes(params.bytes or _HMAC_BYTES[2])
    return Generated(SecretValue(_ENCODERS[params.encoding](raw)), None)


def _gen_password(params: GeneratorParams) -> Generated:
    # Rejection sampling keeps the result exactly uniform over all strings that satisfy the policy. The worst
    # policy allowed (length 8, three one-character classes) needs ~100 tries (< 1 ms); usual ones need 1-2.
    classes = _password_classes(params)
    alphabet, length = "".join(classes.values()), params.length or _PASSWORD_LENGTH[2]
    while True:
        candidate = _uniform(alphabet, length)
        if all(not set(candidate).isdisjoint(chars) for chars in classes.values()):
            return Generated(SecretValue(candidate), None)


def _gen_key_pair(params: GeneratorParams) -> Generated:
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if params.kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=params.rsa_bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    return Generated(SecretValue(_pkcs8(key)), _jwk(key.public_key()))


def _gen_fernet(params: GeneratorParams) -> Generated:
    return Generated(SecretValue(Fernet.generate_key().decode("ascii")), None)


def _checksum(head: str) -> str:
    number, digits = zlib.crc32(head.encode("ascii")), ""
    for _ in range(_CHECKSUM_LEN):
        number, rest = divmod(number, 62)
        digits = BASE62[rest] + digits
    return digits


def check_api_key(key: str, prefix: str | None = None) -> bool:
    """True if ``key`` is a well-formed api_key whose checksum matches; False for any tampering.

    ``prefix=None`` accepts any valid prefix; a string (``""`` included) requires exactly that prefix.
    """
    if len(key) <= _CHECKSUM_LEN or not key.isascii():
        return False
    head, check = key[:-_CHECKSUM_LEN], key[-_CHECKSUM_LEN:]
    if prefix is not None and not _PREFIX_RE.fullmatch(prefix):
        return False  # not a prefix rotator can issue: without the final "_" the boundary is ambiguous
    if prefix is None:
        well_formed = _API_KEY_RE.fullmatch(head) is not None
    else:
        well_formed = head.startswith(prefix) and _BODY_RE.fullmatch(head[len(prefix) :]) is not None
    return well_formed and _checksum(head) == check


# --- public keys -----------------------------------------------------------------------------------------


def _pkcs8(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, plain).decode("ascii")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwk(key: ed25519.Ed25519PublicKey | rsa.RSAPublicKey) -> dict[str, Any]:
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    numbers = key.public_numbers()
    n, e = (_b64url(x.to_bytes((x.bit_length() + 7) // 8, "big")) for x in (numbers.n, numbers.e))
    return {"kty": "RSA", "n": n, "e": e}


_KEY_TYPES: dict[str, type[ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey]] = {
    "ed25519": ed25519.Ed25519PrivateKey, "rsa": rsa.RSAPrivateKey,
}


def _load_private(kind: str, pem: str) -> ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | None:
    """The unencrypted PEM private key of ``kind``, or None if ``pem`` is anything else."""
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return key if isinstance(key, _KEY_TYPES[kind]) else None


def public_jwk(kind: str, private_pem: str) -> dict[str, Any]:
    """The public JWK (no ``kid``) of a stored ``ed25519`` or ``rsa`` private PEM.

    Raises ``ValueError`` for a kind without a public key and :class:`~rotator.errors.OperationFailed` when
    the stored value is not such a key (the message never quotes it).
    """
    if kind not in _KEY_TYPES:
        raise ValueError(f"kind {kind!r} has no public key; only {' and '.join(_KEY_TYPES)} do")
    key = _load_private(kind, private_pem)
    if key is None:
        hint = "rotate the secret (rotator rotate NAME --now) to replace the damaged value"
        raise OperationFailed(f"the stored value is not an unencrypted PEM {kind} private key", hint=hint)
    return _jwk(key.public_key())


# --- verifying read-back and adopted values --------------------------------------------------------------


def _decode(value: str, encoding: str) -> bytes | None:
    """Strict, canonical decoding of ``value`` in ``encoding``; None if it is not exactly that."""
    if not value.isascii():
        return None
    try:
        if encoding == "hex":
            raw = bytes.fromhex(value)
        else:
            altchars = b"-_" if encoding == "base64url" else None
            padded = value + "=" * (-len(value) % 4) if encoding == "base64url" else value
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
    except ValueError:
        return None
    canonical = value.lower() if encoding == "hex" else value
    return raw if _ENCODERS[encoding](raw) == canonical else None


_ENCODERS: dict[str, Callable[[bytes], str]] = {
    "base64": lambda raw: base64.b64encode(raw).decode("ascii"), "base64url": _b64url, "hex": bytes.hex,
}


def matches_kind(kind: str, value: str, params: GeneratorParams | None = None) -> bool:
    """True if ``value`` is well-formed for ``kind``; never raises for a bad value (only for bad params).

    Without ``params`` (adopting an existing value) any well-formed value of the kind passes. With
    ``params`` (verifying a read-back) the value must be one :func:`generate` could have produced from them:
    same prefix and length, encoding and size, password policy, key size.
    """
    if kind == MANUAL:
        raise ValueError("kind manual is reminder-only: rotator never holds or checks its value")
    if kind not in _TABLE:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if params is not None and params.kind != kind:
        raise ValueError(f"params are for kind {params.kind!r}, not {kind!r}")
    if params is not None:
        check_params(params)  # impossible params are a ParamError here too, never a silent False
    return _TABLE[kind].matches(value, params)


def _matches_api_key(value: str, params: GeneratorParams | None) -> bool:
    if params is None:
        return check_api_key(value)
    length = len(params.prefix) + (params.length or _API_KEY_LENGTH[2]) + _CHECKSUM_LEN
    return len(value) == length and check_api_key(value, params.prefix)


def _matches_hmac(value: str, params: GeneratorParams | None) -> bool:
    if params is not None:
        raw = _decode(value, params.encoding)
        return raw is not None and len(raw) == (params.bytes or _HMAC_BYTES[2])
    low, high, _ = _HMAC_BYTES
    return any((raw := _decode(value, enc)) is not None and low <= len(raw) <= high for enc in ENCODINGS)


def _matches_password(value: str, params: GeneratorParams | None) -> bool:
    if params is None:
        return bool(value) and value.isprintable()
    classes, present = _password_classes(params), set(value)
    allowed, length = set("".join(classes.values())), params.length or _PASSWORD_LENGTH[2]
    in_policy = present <= allowed and len(value) == length
    return in_policy and all(not present.isdisjoint(chars) for chars in classes.values())


def _matches_ed25519(value: str, params: GeneratorParams | None) -> bool:
    pkcs8 = params is None or value.lstrip().startswith(_PKCS8_HEADER)
    return pkcs8 and _load_private("ed25519", value) is not None


def _matches_rsa(value: str, params: GeneratorParams | None) -> bool:
    key = _load_private("rsa", value)
    if not isinstance(key, rsa.RSAPrivateKey):
        return False
    if params is None:
        return key.key_size >= _RSA_BITS[0]
    as_generated = key.key_size == params.rsa_bits and key.public_key().public_numbers().e == 65537
    return as_generated and value.lstrip().startswith(_PKCS8_HEADER)


def _matches_fernet(value: str, params: GeneratorParams | None) -> bool:
    raw = _decode(value[:-1], "base64url") if len(value) == 44 and value.endswith("=") else None
    return raw is not None and len(raw) == 32


class _Kind(NamedTuple):
    """What one kind does: check its params, generate a value, recognise a value."""

    check: Callable[[GeneratorParams], None]
    generate: Callable[[GeneratorParams], Generated]
    matches: Callable[[str, GeneratorParams | None], bool]


_TABLE: dict[str, _Kind] = {
    "api_key": _Kind(_check_api_key, _gen_api_key, _matches_api_key),
    "hmac": _Kind(_check_hmac, _gen_hmac, _matches_hmac),
    "password": _Kind(_check_password, _gen_password, _matches_password),
    "ed25519": _Kind(_check_nothing, _gen_key_pair, _matches_ed25519),
    "rsa": _Kind(_check_rsa, _gen_key_pair, _matches_rsa),
    "fernet": _Kind(_check_nothing, _gen_fernet, _matches_fernet),
}
_CHECK_ONLY = {MANUAL: _check_nothing}  # kinds with parameters to check but no generator
