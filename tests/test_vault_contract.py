"""The Vault provider passes the provider contract against the emulator (and a real Vault when one is named)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import hvac
import pytest
from rotator_vault.auth import TokenAuth
from rotator_vault.provider import VaultConfig, VaultProvider

from rotator.provider import SecretRef
from rotator.testing.contract import ProviderContract
from tests.vault_emulator import VaultEmulator

TOKEN_ENV = "ROTATOR_TEST_VAULT_TOKEN"


@pytest.fixture(scope="module")
def emulator() -> Iterator[VaultEmulator]:
    """One emulated Vault for the module (tests use unique paths)."""
    with VaultEmulator(root_token="contract-root") as vault:
        yield vault
    assert vault.internal_errors == []


class _VaultContract(ProviderContract):
    """The contract wired to a Vault at ``address`` with ``token``; subclasses say which Vault."""

    address: str
    token: str

    @pytest.fixture
    def opened(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[VaultProvider]]:
        """Every provider a test opens, closed at the end."""
        monkeypatch.setenv(TOKEN_ENV, self.token)
        providers: list[VaultProvider] = []
        yield providers
        for provider in providers:
            provider.close()

    @pytest.fixture
    def reopen(self, opened: list[VaultProvider], tmp_path: Path) -> Callable[[], VaultProvider]:
        """A new provider instance (its own HTTP session and login) on the same Vault."""

        def build() -> VaultProvider:
            config = VaultConfig(url=self.address, auth=TokenAuth(token_env=TOKEN_ENV), path_prefix="rotator-ct")
            provider = VaultProvider(name="vault", config=config, base_dir=tmp_path)
            opened.append(provider)
            return provider

        return build

    @pytest.fixture
    def provider(self, reopen: Callable[[], VaultProvider]) -> VaultProvider:
        """The provider under test."""
        return reopen()

    @pytest.fixture
    def make_ref(self) -> Iterator[Callable[[], SecretRef]]:
        """Fresh refs at unused paths; their KV entries are deleted afterwards."""
        made: list[SecretRef] = []

        def make() -> SecretRef:
            made.append(SecretRef(name=f"s-{uuid.uuid4().hex[:8]}", path=f"contract/{uuid.uuid4().hex}"))
            return made[-1]

        yield make
        client = hvac.Client(url=self.address, token=self.token)
        for ref in made:
            client.secrets.kv.v2.delete_metadata_and_all_versions(f"rotator-ct/{ref.path}", mount_point="secret")


class TestVaultEmulatorContract(_VaultContract):
    """The shared provider contract, run against VaultProvider on the in-process emulator."""

    @pytest.fixture(autouse=True)
    def _bind(self, emulator: VaultEmulator) -> None:
        """Point the contract at the module's emulator."""
        self.address, self.token = emulator.address, emulator.root_token


@pytest.mark.real_vault
@pytest.mark.skipif(not (os.environ.get("VAULT_ADDR") and os.environ.get("VAULT_TOKEN")),
                    reason="set VAULT_ADDR and VAULT_TOKEN to run the contract against a real Vault")
class TestRealVaultContract(_VaultContract):
    """The same contract against the Vault named by VAULT_ADDR/VAULT_TOKEN (KV v2 mounted at secret/)."""

    @pytest.fixture(autouse=True)
    def _bind(self) -> None:
        """Point the contract at the real Vault."""
        self.address, self.token = os.environ["VAULT_ADDR"], os.environ["VAULT_TOKEN"]
