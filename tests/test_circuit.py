"""Retry with backoff and the per-provider circuit breaker, on a real provider that fails on demand."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.circuit import CircuitBreaker, GuardedProvider
from rotator.errors import BackendUnavailable, ConflictError
from rotator.metrics import METRICS
from rotator.target import Capability


class Flaky:
    """A provider stand-in whose ``read`` fails ``failures`` times, then answers."""

    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, failures: int, transient: bool = True) -> None:
        self.failures, self.transient, self.calls = failures, transient, 0

    def read(self, ref: Any) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendUnavailable("down", transient=self.transient)
        return "keyset"

    def update_meta(self, *args: Any) -> None:
        raise ConflictError("changed")

    def check(self) -> None:
        self.read(None)

    def close(self) -> None:
        return None


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_transient_failures_are_retried() -> None:
    """Two transient failures are absorbed by the retry policy and the circuit stays closed."""
    inner = Flaky(2)
    guarded = GuardedProvider(inner, CircuitBreaker("t1"), attempts=3, backoff=0.001)
    assert guarded.read(None) == "keyset"
    assert inner.calls == 3
    assert guarded.breaker.state == "closed"


def test_permanent_failures_are_not_retried() -> None:
    """A non-transient failure (e.g. a wrong key) is raised after one call."""
    inner = Flaky(5, transient=False)
    guarded = GuardedProvider(inner, CircuitBreaker("t2"), attempts=3, backoff=0.001)
    with pytest.raises(BackendUnavailable):
        guarded.read(None)
    assert inner.calls == 1


def test_circuit_opens_after_five_failures_then_half_opens() -> None:
    """Five failed calls open the circuit (calls fail fast, backend untouched); after the cooldown one trial
    call goes through and a success closes the circuit."""
    clock = Clock()
    inner = Flaky(5, transient=False)
    guarded = GuardedProvider(inner, CircuitBreaker("t3", clock=clock), attempts=1)
    for _ in range(5):
        with pytest.raises(BackendUnavailable):
            guarded.read(None)
    assert guarded.breaker.state == "open"
    assert METRICS.circuit_open.labels(provider="t3")._value.get() == 1
    with pytest.raises(BackendUnavailable, match="circuit open"):
        guarded.read(None)
    assert inner.calls == 5
    clock.now += 61
    assert guarded.breaker.state == "half-open"
    assert guarded.read(None) == "keyset"
    assert guarded.breaker.state == "closed"
    assert METRICS.circuit_open.labels(provider="t3")._value.get() == 0


def test_failed_trial_reopens_the_circuit() -> None:
    """A failing half-open trial re-opens the circuit for another cooldown."""
    clock = Clock()
    inner = Flaky(10, transient=False)
    guarded = GuardedProvider(inner, CircuitBreaker("t4", clock=clock), attempts=1)
    for _ in range(5):
        with pytest.raises(BackendUnavailable):
            guarded.read(None)
    clock.now += 61
    with pytest.raises(BackendUnavailable, match="down"):
        guarded.read(None)
    assert guarded.breaker.state == "open"


def test_a_conflict_counts_as_the_backend_answering() -> None:
    """A ConflictError passes through untouched and resets the failure count."""
    guarded = GuardedProvider(Flaky(0), CircuitBreaker("t5"), attempts=1)
    guarded.breaker.failures = 4
    with pytest.raises(ConflictError):
        guarded.update_meta()
    assert guarded.breaker.failures == 0
