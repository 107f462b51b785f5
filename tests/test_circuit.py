"""Retry with jittered backoff (tenacity) and the per-provider circuit breaker of a runtime's Breakers registry,
on a provider stand-in that fails on demand; the observer is the real Metrics."""

from __future__ import annotations

from typing import Any

import pytest

from rotator.circuit import Breakers, BreakerSettings, CircuitBreaker, GuardedProvider
from rotator.errors import AccessDenied, BackendUnavailable, ConflictError
from rotator.metrics import Metrics
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
    waits: list[float] = []
    guarded = GuardedProvider(inner, CircuitBreaker("t1"), attempts=3, backoff=0.2, sleep=waits.append)
    assert guarded.read(None) == "keyset"
    assert inner.calls == 3
    assert len(waits) == 2  # exponential with up to `backoff` of jitter on top: 0.2-0.4 s, then 0.4-0.6 s
    assert 0.2 <= waits[0] <= 0.4
    assert 0.4 <= waits[1] <= 0.6
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
    metrics = Metrics()
    guarded = Breakers(BreakerSettings(attempts=1), observer=metrics, clock=clock).guard("t3", inner)
    for _ in range(5):
        with pytest.raises(BackendUnavailable):
            guarded.read(None)
    assert guarded.breaker.state == "open"
    assert metrics.circuit_open.labels(provider="t3")._value.get() == 1
    assert metrics.backend_errors.labels(provider="t3")._value.get() == 5
    with pytest.raises(BackendUnavailable, match="circuit open"):
        guarded.read(None)
    assert inner.calls == 5
    clock.now += 61
    assert guarded.breaker.state == "half-open"
    assert guarded.read(None) == "keyset"
    assert guarded.breaker.state == "closed"
    assert metrics.circuit_open.labels(provider="t3")._value.get() == 0
    assert metrics.backend_errors.labels(provider="t3")._value.get() == 5  # the open circuit's refusal: not one


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


def test_a_failed_call_is_one_backend_error_after_its_retries() -> None:
    """Three attempts that all fail are one failed call: one backend error, one step towards opening."""
    metrics = Metrics()
    breakers = Breakers(BreakerSettings(attempts=3, backoff=0.0), observer=metrics)
    guarded = breakers.guard("t6", Flaky(10))
    with pytest.raises(BackendUnavailable):
        guarded.read(None)
    assert guarded.inner.calls == 3
    assert metrics.backend_errors.labels(provider="t6")._value.get() == 1
    assert guarded.breaker.failures == 1


def test_access_denied_counts_as_an_error_but_keeps_the_circuit_closed() -> None:
    """A denial is a backend error worth alerting on, but the backend answered: the circuit stays closed."""

    class Denying(Flaky):
        def read(self, ref: Any) -> str:
            raise AccessDenied("no")

    metrics = Metrics()
    guarded = Breakers(observer=metrics).guard("t7", Denying(0))
    for _ in range(6):
        with pytest.raises(AccessDenied):
            guarded.read(None)
    assert guarded.breaker.state == "closed"
    assert metrics.backend_errors.labels(provider="t7")._value.get() == 6


def test_breakers_are_per_registry_with_its_settings() -> None:
    """No process-wide state: two runtimes' registries hold separate breakers, each with its own cooldown."""
    clock = Clock()
    short = Breakers(BreakerSettings(threshold=1, cooldown=5, attempts=1), clock=clock)
    long = Breakers(BreakerSettings(threshold=1, cooldown=500, attempts=1), clock=clock)
    assert short.get("p") is short.get("p")
    assert short.get("p") is not long.get("p")
    for registry in (short, long):
        with pytest.raises(BackendUnavailable):
            registry.guard("p", Flaky(1, transient=False)).read(None)
    clock.now += 6
    assert short.get("p").state == "half-open"
    assert long.get("p").state == "open"
