"""Vault auth methods (token, AppRole, Kubernetes), token renewal and re-login, TLS and namespace options."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rotator_vault.auth import AppRoleAuth, KubernetesAuth, TokenAuth, VaultSession
from rotator_vault.provider import VaultConfig, VaultProvider

from rotator.errors import AccessDenied
from rotator.keyset import State
from rotator.provider import SecretRef
from rotator.testing.contract import make_version
from tests.vault_emulator import VaultEmulator

ALL = {"secret/*": ["create", "read", "update", "patch", "list"]}


@pytest.fixture(scope="module")
def vault() -> Iterator[VaultEmulator]:
    """One emulated Vault with an AppRole and a Kubernetes role."""
    with VaultEmulator(root_token="root") as emulator:
        emulator.add_approle("role-a", "secret-a", ALL, ttl=100)
        emulator.add_approle("role-b", "secret-b", ALL, ttl=100, mount="ci-approle")
        emulator.add_kubernetes_role("rotator", "jwt-of-the-pod", ALL, ttl=100)
        yield emulator
    assert emulator.internal_errors == []


def provider_with(vault: VaultEmulator, tmp_path: Path, auth: Any, **options: Any) -> VaultProvider:
    """A provider on the emulator with ``auth``."""
    return VaultProvider(name="v", config=VaultConfig(url=vault.address, auth=auth, **options), base_dir=tmp_path)


def works(provider: VaultProvider) -> None:
    """The provider can create and read a keyset."""
    ref = SecretRef(name="k", path=f"auth/{uuid.uuid4().hex}")
    created = provider.create(ref, make_version(State.CURRENT), {})
    assert provider.read(ref) == created
    provider.close()


def test_token_from_file_or_env(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """token_file (relative to the manifest folder) wins; otherwise VAULT_TOKEN is used."""
    (tmp_path / "vault.token").write_text("root\n")
    monkeypatch.setenv("VAULT_TOKEN", "wrong")
    works(provider_with(vault, tmp_path, TokenAuth(token_file="vault.token")))
    monkeypatch.setenv("VAULT_TOKEN", "root")
    works(provider_with(vault, tmp_path, TokenAuth()))


def test_missing_token_is_access_denied(vault: VaultEmulator, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No token anywhere: AccessDenied naming the variable to set, before any request."""
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    with pytest.raises(AccessDenied, match="no token: set VAULT_TOKEN or the auth token_file option"):
        provider_with(vault, tmp_path, TokenAuth()).read(SecretRef(name="k", path="k"))


def test_approle_from_env_and_files(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AppRole credentials come from VAULT_ROLE_ID/VAULT_SECRET_ID or from files, on any mount."""
    monkeypatch.setenv("VAULT_ROLE_ID", "role-a")
    monkeypatch.setenv("VAULT_SECRET_ID", "secret-a")
    works(provider_with(vault, tmp_path, AppRoleAuth()))
    (tmp_path / "role").write_text("role-b")
    (tmp_path / "sid").write_text("secret-b\n")
    works(provider_with(vault, tmp_path, AppRoleAuth(role_id_file="role", secret_id_file="sid",
                                                     mount="ci-approle")))


def test_approle_refused(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong secret_id is AccessDenied with Vault's reason and the login path, not the credential."""
    monkeypatch.setenv("VAULT_SECRET_ID", "not-the-secret-id")
    with pytest.raises(AccessDenied) as caught:
        provider_with(vault, tmp_path, AppRoleAuth(role_id="role-a")).read(SecretRef(name="k", path="k"))
    assert str(caught.value) == ("vault: approle login at auth/approle/login was refused "
                                 "(invalid role or secret ID)")
    assert "not-the-secret-id" not in repr(caught.value)


def test_kubernetes_jwt_file(vault: VaultEmulator, tmp_path: Path) -> None:
    """The Kubernetes method logs in with the service-account JWT file and the role."""
    (tmp_path / "sa-token").write_text("jwt-of-the-pod")
    works(provider_with(vault, tmp_path, KubernetesAuth(role="rotator", jwt_file=str(tmp_path / "sa-token"))))
    with pytest.raises(AccessDenied, match="cannot read the jwt file"):
        provider_with(vault, tmp_path, KubernetesAuth(role="rotator", jwt_file="missing")).check()
    (tmp_path / "bad").write_text("stolen")
    with pytest.raises(AccessDenied, match="kubernetes login at auth/kubernetes/login was refused"):
        provider_with(vault, tmp_path, KubernetesAuth(role="rotator", jwt_file="bad")).check()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def session(vault: VaultEmulator, tmp_path: Path, auth: Any, clock: FakeClock) -> VaultSession:
    """A VaultSession on the emulator with a fake clock."""
    return VaultSession(url=vault.address, auth=auth, base_dir=tmp_path, verify=True, cert=None, timeout=5,
                        namespace=None, clock=clock)


def routes(vault: VaultEmulator) -> list[str]:
    """Paths requested since the last reset."""
    return [path for _, path in vault.request_log]


def test_renews_after_half_ttl(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No renewal before half the TTL; renew-self once past it, keeping the same token alive."""
    monkeypatch.setenv("VAULT_SECRET_ID", "secret-a")
    clock = FakeClock()
    live = session(vault, tmp_path, AppRoleAuth(role_id="role-a"), clock)
    live.ensure()
    token = live.client.token
    vault.reset_counters()
    clock.now = 40
    vault.advance(40)
    live.ensure()
    assert routes(vault) == []
    clock.now = 60
    vault.advance(20)
    live.ensure()
    assert routes(vault) == ["/v1/auth/token/renew-self"]
    assert live.client.token == token
    assert vault.token_ttl(token) in (99, 100)  # renewed to the full TTL


def test_relogin_when_renewal_fails(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AppRole/Kubernetes log in again when renew-self is refused (token revoked or past max TTL)."""
    (tmp_path / "jwt").write_text("jwt-of-the-pod")
    clock = FakeClock()
    live = session(vault, tmp_path, KubernetesAuth(role="rotator", jwt_file="jwt"), clock)
    live.ensure()
    old = live.client.token
    vault.revoke(old)
    vault.reset_counters()
    clock.now = 70
    live.ensure()
    assert routes(vault) == ["/v1/auth/token/renew-self", "/v1/auth/kubernetes/login"]
    assert live.client.token != old


def test_invalid_token_mid_use_relogins_once(vault: VaultEmulator, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A request refused with "invalid token" triggers one fresh login and one retry."""
    monkeypatch.setenv("VAULT_SECRET_ID", "secret-a")
    provider = provider_with(vault, tmp_path, AppRoleAuth(role_id="role-a"))
    provider.check()
    vault.revoke(provider._session.client.token)
    vault.reset_counters()
    assert provider.read(SecretRef(name="k", path="never-written")) is None
    assert routes(vault) == ["/v1/secret/data/never-written", "/v1/auth/approle/login",
                             "/v1/secret/data/never-written"]


def test_static_token_renewal(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A renewable VAULT_TOKEN with a TTL is renewed; a non-renewable one is kept without retries."""
    vault.add_token("short-lived", ALL, ttl=100)
    vault.add_token("fixed", ALL, ttl=100, renewable=False)
    for token, expected in (("short-lived", ["/v1/auth/token/renew-self"]), ("fixed", [])):
        monkeypatch.setenv("VAULT_TOKEN", token)
        clock = FakeClock()
        live = session(vault, tmp_path, TokenAuth(), clock)
        live.ensure()
        vault.reset_counters()
        clock.now = 60
        live.ensure()
        live.ensure()
        assert routes(vault) == expected


def test_namespace_and_tls_options(vault: VaultEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """namespace is sent as X-Vault-Namespace; ca_cert and the client cert pair resolve against base_dir."""
    monkeypatch.setenv("VAULT_TOKEN", "root")
    works(provider_with(vault, tmp_path, TokenAuth(), namespace="team-a"))
    assert "team-a" in vault.namespaces_seen
    tls = provider_with(vault, tmp_path, TokenAuth(), ca_cert="ca.pem", client_cert="c.pem", client_key="k.pem")
    http = tls._session.client.adapter.session
    assert (http.verify, http.cert) == (str(tmp_path / "ca.pem"), (str(tmp_path / "c.pem"), str(tmp_path / "k.pem")))
    assert provider_with(vault, tmp_path, TokenAuth(), verify=False)._session.client.adapter.session.verify is False
