"""Secret names have one canonical form: the manifest refuses every other spelling with file:line, and every
provider refuses a path that could leave its mount or prefix, at the boundary, before any request."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest
from rotator_aws.config import AwsConfig
from rotator_aws.provider import AwsProvider
from rotator_vault.auth import TokenAuth
from rotator_vault.provider import VaultConfig, VaultProvider

from rotator._paths import canonical, path_problem
from rotator.errors import ManifestError
from rotator.keyset import State
from rotator.localstore import MASTER_KEY_ENV, LocalConfig, LocalProvider
from rotator.manifest import parse_manifest
from rotator.provider import Provider, SecretRef
from rotator.testing.contract import make_version
from tests.moto_server import GatedMotoServer, aws_env, moto
from tests.vault_emulator import VaultEmulator

__all__ = ["aws_env", "moto"]

ESCAPES = ["a/../../etc/passwd", "app/../other", "team/../victim", "a/./b", "a//b", "a/", "/abs", "a/..", "."]


def _manifest(*secrets: str) -> str:
    return "version: 1\nsecrets:\n" + "".join(f"  - {s}\n" for s in secrets)


def _error(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text, Path("/srv/rotator/rotation.yaml"), {})
    assert caught.value.exit_code == 2
    return caught.value.message


@pytest.mark.parametrize("name", [n for n in ESCAPES if n[0].isalnum()])
def test_non_canonical_names_are_manifest_errors(name: str) -> None:
    """The reported names (`a/../../etc/passwd`, `app/../other`, `a/./b`, `a//b`) fail with file:line."""
    message = _error(_manifest("{name: ok, kind: hmac}", f'{{name: "{name}", kind: hmac}}'))
    assert message.startswith("rotation.yaml:4:")
    assert f"secrets[1].name: '{name}' is not a canonical secret path" in message


@pytest.mark.parametrize("path", ESCAPES)
def test_non_canonical_paths_are_manifest_errors(path: str) -> None:
    """`path:` gets the same check as names (it has no pattern of its own)."""
    message = _error(_manifest(f'{{name: ok, kind: hmac, path: "{path}"}}'))
    assert message.startswith("rotation.yaml:3:")
    assert f"secrets[0].path: '{path}' is not a canonical secret path" in message


def test_names_that_address_one_place_collide() -> None:
    """Two secrets stored at one path of one provider (by name or by `path:`) are an error."""
    message = _error(_manifest("{name: svc/key, kind: hmac}", "{name: other, kind: hmac, path: svc/key}"))
    assert message.startswith("rotation.yaml:4:")
    assert "secrets[1].path: 'svc/key' on provider 'local' is already where secret 'svc/key' is stored" in message
    message = _error(_manifest("{name: svc/key, kind: hmac}", "{name: svc/./key, kind: hmac}"))
    assert "(write 'svc/key')" in message


def test_same_path_on_different_providers_is_fine() -> None:
    """The collision check is per provider: one path in two backends is two places."""
    text = ("version: 1\nproviders: {a: {type: local, path: a/store.db}, b: {type: local, path: b/store.db}}\n"
            "secrets:\n  - {name: x, kind: hmac, provider: a}\n  - {name: y, kind: hmac, provider: b, path: x}\n")
    assert set(parse_manifest(text, Path("/srv/rotation.yaml"), {}).secrets) == {"x", "y"}


def test_canonical_suggestion() -> None:
    """Dropping '.' and empty segments is suggested; '..' has no safe meaning, so nothing is."""
    assert canonical("a/./b//c/") == "a/b/c"
    assert canonical("a/../b") is None
    assert path_problem("a/b-c.d@e") is None
    assert path_problem("a\nb") == "it contains a control character"


# --- the providers' own boundary check --------------------------------------------------------------------


def _refuses(provider: Provider, path: str) -> str:
    ref = SecretRef(name="evil", path=path)
    with pytest.raises(ManifestError) as caught:
        provider.create(ref, make_version(State.CURRENT), {})
    with pytest.raises(ManifestError):
        provider.read(ref)
    return caught.value.message


@pytest.fixture
def vault() -> Iterator[VaultEmulator]:
    with VaultEmulator(root_token="root") as emulator:
        yield emulator


def test_vault_refuses_path_leaving_its_prefix(vault: VaultEmulator, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported attack: `team/../victim` under prefix `team` was written to `secret/data/victim`."""
    monkeypatch.setenv("ROTATOR_TEST_VAULT_TOKEN", "root")
    provider = VaultProvider(name="vault", base_dir=tmp_path, config=VaultConfig(
        url=vault.address, auth=TokenAuth(token_env="ROTATOR_TEST_VAULT_TOKEN"), path_prefix="team"))
    try:
        for path in ("../victim", "x/../../victim", "./victim", "a//b", "/victim"):
            message = _refuses(provider, path)
            assert "so it could leave vault mount 'secret' prefix 'team'" in message
        kv = hvac.Client(url=vault.address, token="root").secrets.kv.v2
        for written in ("victim", "team/victim"):
            with pytest.raises(hvac.exceptions.InvalidPath):
                kv.read_secret_version(path=written, mount_point="secret", raise_on_deleted_version=True)
        good = SecretRef(name="fine", path=f"ok/{uuid.uuid4().hex[:8]}")
        provider.create(good, make_version(State.CURRENT), {})
        assert provider.read(good) is not None
    finally:
        provider.close()


def test_aws_refuses_path_leaving_its_prefix(moto: GatedMotoServer) -> None:
    """Secrets Manager does not resolve '..', but an IAM policy scoped to `prefix/*` reads names lexically:
    a non-canonical name is refused before any request."""
    provider = AwsProvider(name="aws", config=AwsConfig(endpoint_url=moto.endpoint, region="us-east-1",
                                                         max_attempts=1, name_prefix="team/"))
    try:
        message = _refuses(provider, "../victim")
        assert "so it could leave aws name prefix 'team/'" in message
        assert all(not name.endswith("victim") for name in provider.list())
    finally:
        provider.close()


def test_local_refuses_non_canonical_row_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local store gets the same check (its row keys are the paths)."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    provider = LocalProvider(name="local", config=LocalConfig(), base_dir=tmp_path)
    try:
        assert "so it could leave local store" in _refuses(provider, "a/../b")
        assert provider.list() == []
    finally:
        provider.close()
