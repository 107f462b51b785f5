"""JWKs from joserfc match RFC 8037's test vector and RFC 7518's encoding, and the JWKS built from them keeps
its exact published shape."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from rotator.generators import public_jwk
from rotator.jwk import public_jwk_of

# RFC 8037 appendix A.1 / A.2: the Ed25519 private key d and its public JWK.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_PUBLIC = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}


def _b64url_uint(value: int) -> str:
    """RFC 7518 section 6.3.1: the unsigned big-endian bytes, base64url without padding."""
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_ed25519_matches_the_rfc_8037_vector() -> None:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(RFC8037_D + "="))
    jwk = public_jwk_of(private.public_key())
    assert jwk == RFC8037_PUBLIC
    assert list(jwk) == ["kty", "crv", "x"]


def test_rsa_members_are_rfc_7518_encoded_and_public_only() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = public_jwk_of(key.public_key())
    assert jwk == {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": "AQAB"}


def test_public_jwk_from_a_stored_pem_has_no_private_member() -> None:
    """The adopted-key path (derive from the stored PEM) yields the same public JWK and nothing private."""
    from cryptography.hazmat.primitives import serialization

    private = ed25519.Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(RFC8037_D + "="))
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    jwk = public_jwk("ed25519", pem)
    assert jwk == RFC8037_PUBLIC
    assert "d" not in jwk
