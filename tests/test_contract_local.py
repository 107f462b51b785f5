"""The embedded SQLite store passes the provider contract, including resume from a new instance."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rotator.localstore import MASTER_KEY_ENV, LocalConfig, LocalProvider
from rotator.provider import SecretRef
from rotator.testing.contract import ProviderContract


class TestLocalContract(ProviderContract):
    """The shared provider contract, run against LocalProvider on a temporary store."""

    @pytest.fixture
    def opened(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[LocalProvider]]:
        """Every provider a test opens on the temporary store, closed at the end."""
        monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
        providers: list[LocalProvider] = []
        yield providers
        for provider in providers:
            provider.close()

    @pytest.fixture
    def reopen(self, tmp_path: Path, opened: list[LocalProvider]) -> Callable[[], LocalProvider]:
        """A new LocalProvider instance on the same store file."""

        def build() -> LocalProvider:
            provider = LocalProvider(name="local", config=LocalConfig(path="store.db"), base_dir=tmp_path)
            opened.append(provider)
            return provider

        return build

    @pytest.fixture
    def provider(self, reopen: Callable[[], LocalProvider]) -> LocalProvider:
        """The provider under test."""
        return reopen()

    @pytest.fixture
    def make_ref(self) -> Callable[[], SecretRef]:
        """Fresh refs at unused paths."""
        return lambda: SecretRef(name=f"s-{uuid.uuid4().hex[:8]}", path=f"contract/{uuid.uuid4().hex}")
