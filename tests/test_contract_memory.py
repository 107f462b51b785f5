"""The in-memory provider passes the provider contract, and instances share state by provider name."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from rotator.provider import SecretRef
from rotator.testing.contract import ProviderContract, make_version
from rotator.testing.memory import MemoryConfig, MemoryProvider


@pytest.fixture
def store_name() -> Iterator[str]:
    """A provider name of its own for each test, forgotten afterwards."""
    name = f"contract-{uuid.uuid4().hex}"
    yield name
    MemoryProvider.reset(name)


class TestMemoryContract(ProviderContract):
    """The shared provider contract, run against MemoryProvider."""

    @pytest.fixture
    def provider(self, store_name: str) -> MemoryProvider:
        """A memory provider with a store of its own."""
        return MemoryProvider(name=store_name, config=MemoryConfig())

    @pytest.fixture
    def make_ref(self) -> Callable[[], SecretRef]:
        """Fresh refs at unused paths."""
        return lambda: SecretRef(name=f"s-{uuid.uuid4().hex[:8]}", path=f"contract/{uuid.uuid4().hex}")

    @pytest.fixture
    def reopen(self, store_name: str) -> Callable[[], MemoryProvider]:
        """A new instance with the same name, so it sees the same store."""
        return lambda: MemoryProvider(name=store_name)


def test_instances_share_state_by_name(store_name: str) -> None:
    """Two instances with the same name see each other's keysets; another name sees none."""
    ref = SecretRef(name="shared", path="shared")
    MemoryProvider(name=store_name).create(ref, make_version(), {})
    assert MemoryProvider(name=store_name).read(ref) is not None
    assert MemoryProvider(name=f"{store_name}-other").read(ref) is None
    MemoryProvider.reset(f"{store_name}-other")


def test_reset_forgets_keysets(store_name: str) -> None:
    """reset() empties the named store, and the provider keeps working afterwards."""
    provider = MemoryProvider(name=store_name)
    ref = SecretRef(name="gone", path="gone")
    provider.create(ref, make_version(), {})
    MemoryProvider.reset(store_name)
    assert provider.read(ref) is None
    assert provider.list() == []
    provider.create(ref, make_version(), {})
    assert provider.list() == ["gone"]


def test_config_rejects_unknown_keys() -> None:
    """The memory config model forbids options it does not know."""
    with pytest.raises(ValueError, match="extra"):
        MemoryConfig.model_validate({"type": "memory", "path": "x"})
