"""JWKS building (RFC 7517 fields, kid per version, expired previous left out), its Cache-Control max-age,
`rotator jwks NAME`, and the keyring's JWT signer/verifier across a rotation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest

from rotator.app import Runtime
from rotator.errors import UsageError
from rotator.jwks import build_jwks, jwks_max_age
from rotator.keyring import Keyring
from rotator.keyset import Keyset
from rotator.testing import FakeClock, MemoryProvider
from tests.conftest import Workspace, memory_runtime

MANIFEST = """\
version: 1
defaults: {{provider: {store}, every: 30d, grace: 1d, notice: 1h}}
providers: {{{store}: {{type: memory}}}}
audit: {{path: audit.jsonl}}
secrets:
  - {{name: id/ed, kind: ed25519}}
  - {{name: id/rsa, kind: rsa, rsa_bits: 2048}}
  - {{name: id/hmac, kind: hmac}}
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Runtime, FakeClock, str]]:
    """An in-process runtime on a fresh memory provider with a fake clock; every secret created."""
    with memory_runtime(tmp_path, MANIFEST) as made:
        yield made


def _keyset(rt: Runtime, name: str) -> Keyset:
    keyset = rt.engine.read(rt.manifest.secret(name))
    assert keyset is not None
    return keyset


def _ring(env: tuple[Runtime, FakeClock, str], name: str) -> Keyring:
    rt, clock, store = env
    return Keyring(MemoryProvider(name=store), rt.manifest.secret(name).ref, clock=clock, background=False,
                   miss_refresh_interval=0)


def test_jwks_lists_current_previous_pending_with_kid_alg_use(env: Any) -> None:
    """Every accepted version appears once, in state order, with kid = version id, alg and use: sig."""
    rt, clock, _ = env
    rt.engine.reconcile_one(rt.manifest.secret("id/ed"), force=True)
    keyset = _keyset(rt, "id/ed")
    provider = MemoryProvider(name=env[2])
    from rotator.testing._contract_base import make_version

    staged = provider.stage(rt.manifest.secret("id/ed").ref, keyset, make_version(public={"kty": "OKP",
                            "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}))
    document = build_jwks(staged, "ed25519", clock())
    assert [k["kid"] for k in document["keys"]] == [v.id for v in staged.accepted()]
    for key in document["keys"]:
        assert key["kty"] == "OKP"
        assert key["crv"] == "Ed25519"
        assert key["alg"] == "EdDSA"
        assert key["use"] == "sig"
        assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}  # no private member ("d")
    rsa = build_jwks(_keyset(rt, "id/rsa"), "rsa")["keys"][0]
    assert rsa["kty"] == "RSA"
    assert rsa["alg"] == "RS256"
    assert {"n", "e"} <= set(rsa)
    assert "d" not in rsa


def test_jwks_drops_previous_after_its_grace(env: Any) -> None:
    """A previous version whose grace ended is left out even before the engine retires it."""
    rt, clock, _ = env
    rt.engine.reconcile_one(rt.manifest.secret("id/ed"), force=True)
    keyset = _keyset(rt, "id/ed")
    assert len(build_jwks(keyset, "ed25519", clock())["keys"]) == 2
    clock.advance(timedelta(days=1))
    assert [k["kid"] for k in build_jwks(keyset, "ed25519", clock())["keys"]] == [keyset.current.id]


def test_jwks_derives_missing_public_key(env: Any) -> None:
    """A version without a stored public JWK (e.g. adopted) gets one derived from its private key."""
    rt, _, _ = env
    keyset = _keyset(rt, "id/ed")
    bare = keyset.replace(versions=tuple(v.replace(public=None) for v in keyset.versions))
    assert build_jwks(bare, "ed25519") == build_jwks(keyset, "ed25519")


def test_jwks_refuses_non_signing_kinds(env: Any) -> None:
    """An hmac keyset has no JWKS: a usage error naming the kind."""
    rt, _, _ = env
    with pytest.raises(UsageError, match="hmac"):
        build_jwks(_keyset(rt, "id/hmac"), "hmac")


@pytest.mark.parametrize(("grace", "max_age"), [
    (timedelta(days=7), 3600), (timedelta(hours=2), 1800), (timedelta(seconds=4), 1), (timedelta(0), 0)])
def test_max_age_is_quarter_grace_capped_at_an_hour(grace: timedelta, max_age: int) -> None:
    """max-age = min(grace / 4, 1h) in whole seconds."""
    assert jwks_max_age(grace) == max_age


@pytest.mark.parametrize("name", ["id/ed", "id/rsa"])
def test_jwt_from_before_rotation_verifies_through_grace(env: Any, name: str) -> None:
    """A token signed before a rotation keeps verifying during the grace, then is rejected."""
    rt, clock, _ = env
    signer, verifier = _ring(env, name).jwt_signer(), _ring(env, name).jwt_verifier()
    old = signer.sign({"sub": "alice"})
    assert jwt.get_unverified_header(old)["kid"] == _keyset(rt, name).current.id
    rt.engine.reconcile_one(rt.manifest.secret(name), force=True)
    signer._keyring.refresh()
    new = signer.sign({"sub": "bob"})
    assert jwt.get_unverified_header(new)["kid"] == _keyset(rt, name).current.id
    assert verifier.verify(new)["sub"] == "bob"  # unknown kid: one re-read, then accepted
    assert verifier.verify(old)["sub"] == "alice"
    clock.advance(timedelta(days=1))
    with pytest.raises(jwt.InvalidTokenError, match="unknown or retired"):
        verifier.verify(old)


def test_jwt_signer_switches_after_publication_delay(env: Any) -> None:
    """For switch_after seconds after a promotion the signer keeps the previous key, then uses the new one."""
    rt, clock, _ = env
    ring = _ring(env, "id/ed")
    signer = ring.jwt_signer(switch_after=60)
    old = ring.signing_key().id
    rt.engine.reconcile_one(rt.manifest.secret("id/ed"), force=True)
    ring.refresh()
    assert jwt.get_unverified_header(signer.sign({"a": 1}))["kid"] == old
    clock.advance(60)
    assert jwt.get_unverified_header(signer.sign({"a": 1}))["kid"] == ring.signing_key().id != old
    from_manifest = Keyring.from_manifest(rt.manifest.path, "id/ed", clock=clock)
    assert from_manifest.jwt_signer().switch_after == jwks_max_age(timedelta(days=1)) == 3600


def test_jwt_verifier_pins_the_key_algorithm(env: Any) -> None:
    """Tokens without a kid, or with an alg other than the key's, are rejected."""
    rt, _, _ = env
    verifier = _ring(env, "id/ed").jwt_verifier()
    kid = _keyset(rt, "id/ed").current.id
    with pytest.raises(jwt.InvalidTokenError, match="kid"):
        verifier.verify(jwt.encode({"a": 1}, "k" * 32, algorithm="HS256"))
    with pytest.raises(jwt.InvalidTokenError):
        verifier.verify(jwt.encode({"a": 1}, "k" * 32, algorithm="HS256", headers={"kid": kid}))


def test_cli_prints_jwks_and_refuses_hmac(workspace: Workspace) -> None:
    """`rotator jwks NAME` prints the JWKS as JSON; an hmac secret is a usage error (exit 2)."""
    workspace.write_manifest("""
        version: 1
        secrets:
          - {name: id/ed, kind: ed25519}
          - {name: id/hmac, kind: hmac}
    """)
    assert workspace.cli("jwks", "id/ed").code == 1  # nothing stored yet
    workspace.cli("run")
    result = workspace.cli("jwks", "id/ed")
    assert result.code == 0, result.err
    with Keyring.from_manifest(workspace.manifest, "id/ed") as ring:
        assert [k["kid"] for k in json.loads(result.out)["keys"]] == [ring.signing_key().id]
    refused = workspace.cli("jwks", "id/hmac")
    assert refused.code == 2
    assert "hmac" in refused.err
