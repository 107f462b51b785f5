"""The shared provider contract, run against the SSM Parameter Store provider on moto in server mode."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rotator_aws.ssm import SsmConfig, SsmProvider

from rotator.provider import Provider, SecretRef
from rotator.testing.contract import ProviderContract
from tests.moto_server import GatedMotoServer, aws_env, moto

__all__ = ["aws_env", "moto"]


def _provider(server: GatedMotoServer) -> SsmProvider:
    config = SsmConfig(endpoint_url=server.endpoint, region="us-east-1", max_attempts=2)
    return SsmProvider(name="ssm", config=config, base_dir=Path("."))


class TestSsmContract(ProviderContract):
    """Every behaviour the engine relies on, on SSM parameter versions, labels and a state document."""

    @pytest.fixture
    def provider(self, moto: GatedMotoServer) -> Iterator[Provider]:
        """An SSM provider pointed at the moto server."""
        backend = _provider(moto)
        yield backend
        backend.close()

    @pytest.fixture
    def make_ref(self) -> Callable[[], SecretRef]:
        """Fresh parameter paths, so tests never share a parameter."""
        return lambda: SecretRef(name=f"t-{uuid.uuid4().hex[:8]}", path=f"contract/{uuid.uuid4().hex}")

    @pytest.fixture
    def reopen(self, moto: GatedMotoServer) -> Iterator[Callable[[], Provider]]:
        """A new provider instance on the same server, as a process started after a crash would be."""
        made: list[SsmProvider] = []

        def fresh() -> Provider:
            made.append(_provider(moto))
            return made[-1]

        yield fresh
        for backend in made:
            backend.close()
