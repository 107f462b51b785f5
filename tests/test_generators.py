"""Tests for rotator.generators: value formats, api key checksums, password policy, JWKs, kind matching."""

from __future__ import annotations

import ast
import base64
import inspect
import string
import zlib
from collections import Counter
from typing import Any

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from rotator import generators
from rotator.errors import OperationFailed
from rotator.generators import (
    BASE62,
    Generated,
    GeneratorParams,
    ParamError,
    check_api_key,
    check_params,
    generate,
    matches_kind,
    public_jwk,
)

FAST_KINDS = ("api_key", "hmac", "password", "ed25519", "fernet")
RSA_PARAMS = GeneratorParams(kind="rsa", rsa_bits=2048)


@pytest.fixture(scope="module")
def rsa_key() -> Generated:
    """One 2048-bit RSA key shared by the module, since generating RSA keys is slow."""
    return generate(RSA_PARAMS)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _base62(number: int, width: int) -> str:
    digits = ""
    while number:
        number, rest = divmod(number, 62)
        digits = BASE62[rest] + digits
    return digits.rjust(width, "0")


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_each_kind_generates_a_value_that_matches_its_kind(kind: str) -> None:
    """A generated value is well-formed both against its params and against the kind alone."""
    params = GeneratorParams(kind=kind)  # type: ignore[arg-type]
    value = generate(params).value.reveal()
    assert matches_kind(kind, value, params)
    assert matches_kind(kind, value)


def test_rsa_generates_a_pkcs8_key_of_the_requested_size(rsa_key: Generated) -> None:
    """An rsa value is a fresh unencrypted PKCS#8 PEM with the requested bits and exponent 65537."""
    pem = rsa_key.value.reveal()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537
    assert matches_kind("rsa", pem, RSA_PARAMS)
    assert matches_kind("rsa", pem)
    other = generate(RSA_PARAMS)
    assert other.value.reveal() != pem
    assert other.public != rsa_key.public


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_values_differ_between_calls(kind: str) -> None:
    """Twenty values of one kind are all different."""
    params = GeneratorParams(kind=kind)  # type: ignore[arg-type]
    values = {generate(params).value.reveal() for _ in range(20)}
    assert len(values) == 20


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_repr_and_str_never_show_the_value(kind: str) -> None:
    """Neither repr nor str of a Generated (or of its value) contains the secret."""
    generated = generate(GeneratorParams(kind=kind))  # type: ignore[arg-type]
    secret = generated.value.reveal()
    for text in (repr(generated), str(generated), repr(generated.value), str(generated.value)):
        assert secret not in text
        assert "redacted" in text


def test_public_part_is_only_set_for_key_pairs(rsa_key: Generated) -> None:
    """Signing keys carry a JWK without kid; symmetric kinds carry none."""
    for kind in ("api_key", "hmac", "password", "fernet"):
        assert generate(GeneratorParams(kind=kind)).public is None
    assert set(generate(GeneratorParams(kind="ed25519")).public or {}) == {"kty", "crv", "x"}
    assert set(rsa_key.public or {}) == {"kty", "n", "e"}


def test_module_never_imports_random() -> None:
    """Generators draw only from secrets/cryptography, never from the predictable random module."""
    tree = ast.parse(inspect.getsource(generators))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "random" not in imported


def test_api_key_layout_is_prefix_body_checksum() -> None:
    """An api key is the prefix, `length` base62 characters, then the 6-digit base62 CRC32 of both."""
    key = generate(GeneratorParams(kind="api_key", prefix="rtr_live_", length=40)).value.reveal()
    assert key.startswith("rtr_live_")
    body, checksum = key[9:-6], key[-6:]
    assert len(body) == 40
    assert set(body + checksum) <= set(BASE62)
    assert checksum == _base62(zlib.crc32(key[:-6].encode()), 6)
    assert len(generate(GeneratorParams(kind="api_key")).value.reveal()) == 32 + 6


def test_api_key_checksum_is_zero_padded() -> None:
    """A CRC32 below 62**5 is written with leading zeros so the checksum is always 6 characters."""
    head = next(h for i in range(1000) if zlib.crc32((h := f"rtr_{i:020d}").encode()) < 62**5)
    checksum = generators._checksum(head)
    assert len(checksum) == 6
    assert checksum[0] == "0"
    assert check_api_key(head + checksum, "rtr_")


def test_check_api_key_accepts_generated_keys() -> None:
    """Fresh keys pass with their own prefix, with any prefix allowed, and without a prefix."""
    for prefix in ("rtr_live_", "ghp_", "X_", ""):
        for _ in range(20):
            key = generate(GeneratorParams(kind="api_key", prefix=prefix)).value.reveal()
            assert check_api_key(key, prefix)
            assert check_api_key(key)


def test_check_api_key_rejects_every_single_character_change() -> None:
    """Replacing any one character of prefix, body or checksum by any other allowed one fails the check."""
    for _ in range(5):
        key = generate(GeneratorParams(kind="api_key", prefix="rtr_live_")).value.reveal()
        for pos, original in enumerate(key):
            alphabet = BASE62 + "_" if pos < len("rtr_live_") else BASE62
            for other in alphabet.replace(original, ""):
                mutated = key[:pos] + other + key[pos + 1 :]
                assert not check_api_key(mutated), (pos, other)
                assert not check_api_key(mutated, "rtr_live_")


def test_check_api_key_rejects_swapped_neighbours() -> None:
    """Swapping any two different neighbouring characters fails the check."""
    for _ in range(20):
        key = generate(GeneratorParams(kind="api_key", prefix="rtr_")).value.reveal()
        for pos in range(len(key) - 1):
            if key[pos] != key[pos + 1]:
                swapped = key[:pos] + key[pos + 1] + key[pos] + key[pos + 2 :]
                assert not check_api_key(swapped)


def test_api_key_prefix_must_end_with_underscore() -> None:
    """A non-empty prefix must end in "_" so the body boundary is unambiguous (base62 has no "_")."""
    with pytest.raises(ValueError, match="must end with _"):
        check_params(GeneratorParams(kind="api_key", prefix="rtr"))


@pytest.mark.parametrize("prefix", ["rtr_test_", "", "rtr_", "rtr_live_x"])
def test_check_api_key_rejects_a_wrong_prefix(prefix: str) -> None:
    """A key checked against a prefix other than its own fails."""
    key = generate(GeneratorParams(kind="api_key", prefix="rtr_live_")).value.reveal()
    assert not check_api_key(key, prefix)


def test_check_api_key_rejects_malformed_keys() -> None:
    """Truncated, extended, too short, non-ASCII or odd-character keys fail instead of raising."""
    key = generate(GeneratorParams(kind="api_key", prefix="rtr_")).value.reveal()
    too_short = (short := "rtr_" + "a" * 19) + generators._checksum(short)  # body of 19 < 20 characters
    for bad in ("", "abc", key[:-1], key + "0", key[1:], key.replace("_", "-"), " " + key, too_short, "é"):
        assert not check_api_key(bad)
        assert not check_api_key(bad, "rtr_")


def test_password_policy_holds_over_many_samples() -> None:
    """Every sample has the length, every required class, no excluded character and nothing else."""
    params = GeneratorParams(kind="password", length=8, exclude="O0l1I'\"", symbols="!#$%&*+-=?@^_")
    allowed = (set(string.ascii_letters + string.digits) | set(params.symbols)) - set(params.exclude)
    for _ in range(500):
        value = generate(params).value.reveal()
        assert len(value) == 8
        assert set(value) <= allowed
        for chars in (string.ascii_lowercase, string.ascii_uppercase, string.digits, params.symbols):
            assert set(value) & set(chars)


def test_password_only_uses_required_classes() -> None:
    """Classes left out of `require` never appear."""
    params = GeneratorParams(kind="password", length=12, require=("lower", "digit"))
    for _ in range(200):
        value = generate(params).value.reveal()
        assert set(value) <= set(string.ascii_lowercase + string.digits)
        assert set(value) & set(string.digits)
        assert set(value) & set(string.ascii_lowercase)


def test_password_characters_are_roughly_uniform() -> None:
    """Over many long passwords every allowed character appears about equally often."""
    params = GeneratorParams(kind="password", length=64, exclude="O0l1I")
    counts = Counter("".join(generate(params).value.reveal() for _ in range(300)))
    alphabet = set(string.ascii_letters + string.digits + params.symbols) - set("O0l1I")
    assert set(counts) == alphabet
    expected = 300 * 64 / len(alphabet)
    assert all(0.6 * expected < n < 1.4 * expected for n in counts.values())


def test_api_key_body_characters_are_roughly_uniform() -> None:
    """Over many keys every base62 character appears about equally often in the body."""
    bodies = (generate(GeneratorParams(kind="api_key")).value.reveal()[:-6] for _ in range(500))
    counts = Counter("".join(bodies))
    expected = 500 * 32 / 62
    assert set(counts) == set(BASE62)
    assert all(0.6 * expected < n < 1.4 * expected for n in counts.values())


def test_hardest_password_policy_still_meets_every_class() -> None:
    """Three one-character classes at length 8 (the worst rejection rate allowed) always yield a value with
    each class. Its speed against the default policy is measured in benchmarks/bench_worst_cases.py."""
    exclude = string.ascii_lowercase[1:] + string.digits[1:]
    params = GeneratorParams(kind="password", length=8, symbols="!", exclude=exclude)
    values = [generate(params).value.reveal() for _ in range(20)]
    assert all({"a", "0", "!"} <= set(v) and len(v) == 8 for v in values)


@pytest.mark.parametrize(
    ("encoding", "decode"),
    [("base64", base64.b64decode), ("base64url", _b64url_decode), ("hex", bytes.fromhex)],
)
def test_hmac_value_decodes_to_the_requested_bytes(encoding: str, decode: Any) -> None:
    """An hmac value decodes in its encoding to `bytes` random bytes."""
    for size in (16, 48):
        params = GeneratorParams(kind="hmac", bytes=size, encoding=encoding)  # type: ignore[arg-type]
        assert len(decode(generate(params).value.reveal())) == size
    value = generate(GeneratorParams(kind="hmac", encoding=encoding)).value.reveal()  # type: ignore[arg-type]
    assert len(decode(value)) == 32
    assert encoding != "base64url" or "=" not in value  # unpadded, as in JWK and JWT


def test_fernet_key_encrypts_and_decrypts() -> None:
    """A fernet value is a working Fernet key."""
    key = generate(GeneratorParams(kind="fernet")).value.reveal()
    assert Fernet(key).decrypt(Fernet(key).encrypt(b"payload")) == b"payload"


def test_ed25519_jwk_verifies_a_signature_of_the_private_key() -> None:
    """A signature made with the PEM private key verifies with the key rebuilt from the JWK."""
    generated = generate(GeneratorParams(kind="ed25519"))
    private = serialization.load_pem_private_key(generated.value.reveal().encode(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert generated.public is not None
    assert generated.public["kty"] == "OKP"
    assert generated.public["crv"] == "Ed25519"
    assert "=" not in generated.public["x"]
    public = ed25519.Ed25519PublicKey.from_public_bytes(_b64url_decode(generated.public["x"]))
    public.verify(private.sign(b"message"), b"message")


def test_rsa_jwk_verifies_a_signature_of_the_private_key(rsa_key: Generated) -> None:
    """An RS256 signature made with the PEM private key verifies with the key rebuilt from n and e."""
    private = serialization.load_pem_private_key(rsa_key.value.reveal().encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    jwk = rsa_key.public
    assert jwk is not None
    assert jwk["kty"] == "RSA"
    assert "=" not in jwk["n"]
    n, e = (int.from_bytes(_b64url_decode(jwk[name]), "big") for name in ("n", "e"))
    public = rsa.RSAPublicNumbers(e, n).public_key()
    signature = private.sign(b"message", padding.PKCS1v15(), hashes.SHA256())
    public.verify(signature, b"message", padding.PKCS1v15(), hashes.SHA256())


def test_public_jwk_recomputes_the_generated_jwk(rsa_key: Generated) -> None:
    """public_jwk of a stored private PEM equals the JWK returned at generation."""
    ed = generate(GeneratorParams(kind="ed25519"))
    assert public_jwk("ed25519", ed.value.reveal()) == ed.public
    assert public_jwk("rsa", rsa_key.value.reveal()) == rsa_key.public


def test_public_jwk_rejects_a_damaged_or_mismatched_key_without_quoting_it(rsa_key: Generated) -> None:
    """A wrong or garbage PEM raises OperationFailed without quoting it; a symmetric kind, ValueError."""
    ed_pem = generate(GeneratorParams(kind="ed25519")).value.reveal()
    for kind, value in (("rsa", ed_pem), ("ed25519", rsa_key.value.reveal()), ("rsa", "not-a-key-s3cr3t")):
        with pytest.raises(OperationFailed, match=f"not an unencrypted PEM {kind} private key") as info:
            public_jwk(kind, value)
        assert value not in str(info.value)
        assert info.value.hint
    with pytest.raises(ValueError, match="only ed25519 and rsa"):
        public_jwk("hmac", "anything")


def test_matches_kind_rejects_malformed_values(rsa_key: Generated) -> None:
    """Values of the wrong shape, size, encoding or policy are refused, with and without params."""
    api = generate(GeneratorParams(kind="api_key", prefix="rtr_")).value.reveal()
    ed_pem = generate(GeneratorParams(kind="ed25519")).value.reveal()
    hmac_hex = generate(GeneratorParams(kind="hmac", encoding="hex")).value.reveal()
    fernet_key = generate(GeneratorParams(kind="fernet")).value.reveal()
    short = base64.urlsafe_b64encode(b"x" * 31).decode()
    for kind, value in [
        ("api_key", api[:-1] + ("A" if api[-1] != "A" else "B")),
        ("hmac", base64.b64encode(b"x" * 15).decode()),  # below the 16-byte minimum
        ("hmac", "not base64 or hex!"),
        ("fernet", short), ("fernet", fernet_key[:-2] + "!="), ("fernet", ""),
        ("password", ""), ("password", "abc\ndef"),
        ("ed25519", rsa_key.value.reveal()), ("ed25519", "garbage"),
        ("rsa", ed_pem), ("rsa", ""),
    ]:
        assert not matches_kind(kind, value), (kind, value)
    assert matches_kind("hmac", hmac_hex)


def test_matches_kind_with_params_requires_what_generate_would_produce(rsa_key: Generated) -> None:
    """With params a value must have their prefix, length, encoding, size, policy and key format."""
    api = generate(GeneratorParams(kind="api_key", prefix="rtr_")).value.reveal()
    assert not matches_kind("api_key", api, GeneratorParams(kind="api_key", prefix="rtr_", length=40))
    assert not matches_kind("api_key", api, GeneratorParams(kind="api_key", prefix="xyz_"))
    b64 = generate(GeneratorParams(kind="hmac")).value.reveal()
    assert not matches_kind("hmac", b64, GeneratorParams(kind="hmac", encoding="hex"))
    assert not matches_kind("hmac", b64, GeneratorParams(kind="hmac", bytes=64))
    assert not matches_kind("hmac", b64.rstrip("=") + "==", GeneratorParams(kind="hmac"))
    hex_value = generate(GeneratorParams(kind="hmac", encoding="hex")).value.reveal()
    assert not matches_kind("hmac", " " + hex_value, GeneratorParams(kind="hmac", encoding="hex"))
    policy = GeneratorParams(kind="password", length=10, exclude="0")
    assert not matches_kind("password", "aB3!aB3!a0", policy)  # excluded character
    assert not matches_kind("password", "abcdefgh1!", policy)  # no upper case
    assert not matches_kind("password", "aB3!aB3!a", policy)  # wrong length
    assert matches_kind("password", "aB3!aB3!aB", policy)
    key = serialization.load_pem_private_key(rsa_key.value.reveal().encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    fmt, plain = serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    traditional = key.private_bytes(serialization.Encoding.PEM, fmt, plain).decode()
    assert matches_kind("rsa", traditional)
    assert not matches_kind("rsa", traditional, RSA_PARAMS)
    assert not matches_kind("rsa", rsa_key.value.reveal(), GeneratorParams(kind="rsa", rsa_bits=3072))


def test_matches_kind_rejects_unknown_kind_and_foreign_params() -> None:
    """An unknown kind, params of another kind or impossible params raise instead of returning False."""
    with pytest.raises(ValueError, match="unknown kind 'jwt'"):
        matches_kind("jwt", "x")
    with pytest.raises(ValueError, match="params are for kind 'hmac'"):
        matches_kind("fernet", "x", GeneratorParams(kind="hmac"))
    with pytest.raises(ParamError, match="unknown class 'emoji'"):
        matches_kind("password", "x", GeneratorParams(kind="password", require=("emoji",)))


@pytest.mark.parametrize("kind", [*FAST_KINDS, "rsa"])
def test_check_params_accepts_the_defaults(kind: str) -> None:
    """Default params of every kind are valid."""
    check_params(GeneratorParams(kind=kind))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"kind": "jwt"}, "kind", "unknown kind 'jwt'"),
        ({"kind": "hmac", "bytes": 8}, "bytes", "between 16 and 1024, got 8"),
        ({"kind": "hmac", "bytes": 2048}, "bytes", "between 16 and 1024"),
        ({"kind": "hmac", "encoding": "base32"}, "encoding", "unknown encoding 'base32'"),
        ({"kind": "api_key", "prefix": "rtr-live-"}, "prefix", "A-Z a-z 0-9 _"),
        ({"kind": "api_key", "prefix": "p" * 33}, "prefix", "at most 32"),
        ({"kind": "api_key", "length": 19}, "length", "between 20 and 256, got 19"),
        ({"kind": "password", "length": 7}, "length", "between 8 and 1024, got 7"),
        ({"kind": "password", "length": 1025}, "length", "between 8 and 1024"),
        ({"kind": "password", "require": ("lower", "emoji")}, "require", "unknown class 'emoji'"),
        ({"kind": "password", "require": ()}, "require", "at least one class"),
        ({"kind": "password", "exclude": string.digits}, "exclude", "'digit' but exclude"),
        ({"kind": "password", "symbols": "!", "exclude": "!"}, "exclude", "'symbol' but exclude"),
        ({"kind": "password", "symbols": ""}, "symbols", "'symbol' but symbols"),
        ({"kind": "password", "symbols": "!a "}, "symbols", "ASCII punctuation"),
        ({"kind": "rsa", "rsa_bits": 1024}, "rsa_bits", "2048, 3072 or 4096, got 1024"),
        ({"kind": "password", "bytes": 32}, "bytes", "only applies to kind hmac, not password"),
        ({"kind": "hmac", "length": 40}, "length", "only applies to kind api_key or password"),
        ({"kind": "fernet", "prefix": "x_"}, "prefix", "only applies to kind api_key"),
        ({"kind": "ed25519", "rsa_bits": 2048}, "rsa_bits", "only applies to kind rsa"),
    ],
)
def test_check_params_names_field_and_problem(changes: dict[str, Any], field: str, message: str) -> None:
    """Impossible params raise a ParamError (a ValueError) naming the field, and generate refuses them too."""
    params = GeneratorParams(**changes)
    with pytest.raises(ValueError, match=message) as info:
        check_params(params)
    assert isinstance(info.value, ParamError)
    assert info.value.field == field
    with pytest.raises(ParamError):
        generate(params)


def test_password_classes_may_be_partly_excluded() -> None:
    """Excluding part of a class is fine as long as one character of it is left."""
    params = GeneratorParams(kind="password", exclude=string.digits[1:], symbols="!?")
    check_params(params)
    assert "0" in generate(params).value.reveal()
