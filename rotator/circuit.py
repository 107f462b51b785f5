"""Retry with backoff and a circuit breaker around each provider, so a down backend is not hammered.

Every provider call that fails with a transient :class:`~rotator.errors.BackendUnavailable` is retried a few
times with exponential backoff (safe: every mutating step is a conditional write, so a retried write that had
in fact landed comes back as a conflict, which the engine resolves by re-reading). After ``threshold``
consecutive failures the circuit opens: calls fail at once for ``cooldown``; then one trial call is let
through (half-open) and its result closes or re-opens the circuit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from rotator.errors import BackendUnavailable
from rotator.target import Capability

__all__ = ["CircuitBreaker", "GuardedProvider", "breaker_for"]

_MAX_BACKOFF = 5.0

DEFAULTS = {"threshold": 5, "cooldown": 60.0}  # the daemon's --circuit-cooldown changes the cooldown
_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(provider: str) -> CircuitBreaker:
    """The process-wide breaker of a provider name (it survives manifest reloads in the daemon)."""
    with _BREAKERS_LOCK:
        if provider not in _BREAKERS:
            _BREAKERS[provider] = CircuitBreaker(provider, threshold=int(DEFAULTS["threshold"]),
                                                 cooldown=DEFAULTS["cooldown"])
        return _BREAKERS[provider]


def _metrics() -> Any:
    from rotator.metrics import METRICS  # imported on first failure: `rotator validate` never pays for it

    return METRICS


class CircuitBreaker:
    """Consecutive-failure circuit for one provider: closed -> open (cooldown) -> half-open -> closed."""

    def __init__(self, name: str, *, threshold: int = 5, cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.threshold, self.cooldown, self.clock = name, threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if self.clock() - self.opened_at < self.cooldown else "half-open"

    def before(self) -> None:
        """Raise at once while open; in half-open let exactly one trial call through."""
        with self._lock:
            state = self._state()
            if state == "open" or (state == "half-open" and self._trial):
                assert self.opened_at is not None
                left = self.cooldown - (self.clock() - self.opened_at)
                until = datetime.now(UTC) + timedelta(seconds=max(left, 0))
                raise BackendUnavailable(
                    f"provider {self.name}: circuit open after {self.failures} consecutive failures; "
                    f"next try after {until:%H:%M:%S}Z", hint="check the backend; `rotator status` retries then")
            if state == "half-open":
                self._trial = True

    def success(self) -> None:
        if self.failures == 0 and self.opened_at is None:
            return  # the hot path: nothing to reset, no gauge to touch
        with self._lock:
            self.failures, self.opened_at, self._trial = 0, None, False
        _metrics().circuit_open.labels(provider=self.name).set(0)

    def failure(self) -> None:
        with self._lock:
            self.failures += 1
            self._trial = False
            if self.failures >= self.threshold or self.opened_at is not None:
                self.opened_at = self.clock()
        metrics = _metrics()
        metrics.backend_errors.labels(provider=self.name).inc()
        if self.opened_at is not None:
            metrics.circuit_open.labels(provider=self.name).set(1)


class GuardedProvider:
    """Wraps a provider: each method call goes through the breaker and the retry policy."""

    def __init__(self, inner: Any, breaker: CircuitBreaker, *, attempts: int = 3, backoff: float = 0.2) -> None:
        self.inner = inner
        self.breaker = breaker
        self._attempts = 1 if Capability.NO_RETRY in inner.capabilities else attempts
        self._backoff = backoff

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target) or name.startswith("_") or name in ("close", "check"):
            return target
        return lambda *args, **kwargs: self._call(target, *args, **kwargs)

    def check(self) -> None:
        """Health check: honours an open circuit, and a success closes it."""
        self._call(self.inner.check)

    def close(self) -> None:
        self.inner.close()

    def _call(self, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.breaker.before()
        delay = self._backoff
        for attempt in range(1, self._attempts + 1):
            try:
                result = target(*args, **kwargs)
            except BackendUnavailable as exc:
                if exc.transient and attempt < self._attempts:
                    time.sleep(delay)  # exponential backoff between attempts
                    delay = min(delay * 2, _MAX_BACKOFF)
                    continue
                self.breaker.failure()
                raise
            except Exception:
                self.breaker.success()  # the backend answered (a conflict, a denial): it is up
                raise
            self.breaker.success()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        return f"GuardedProvider({self.inner!r}, circuit={self.breaker.state})"
