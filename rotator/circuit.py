"""Retry with jittered backoff and a circuit breaker around each provider, so a down backend is not hammered.

Every provider call that fails with a transient :class:`~rotator.errors.BackendUnavailable` is retried a few
times (tenacity: exponential backoff with full jitter, so replicas that failed together do not retry in
lockstep). That is safe: every mutating step is a conditional write, so a retried write that had in fact
landed comes back as a conflict, which the engine resolves by re-reading. After ``threshold`` consecutive
failed calls the circuit opens: calls fail at once for ``cooldown``; then one trial call is let through
(half-open) and its result closes or re-opens the circuit.

Breakers live in a :class:`Breakers` registry that the runtime owns (the daemon keeps one across manifest
reloads); nothing here is process-global. A :class:`ProviderObserver` (the daemon's metrics) hears of each
failed call once, of circuit changes, and of every keyset read or written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential, wait_random

from rotator.errors import AccessDenied, BackendUnavailable
from rotator.keyset import Keyset
from rotator.target import Capability

__all__ = ["BreakerSettings", "Breakers", "CircuitBreaker", "GuardedProvider", "ProviderObserver"]


class ProviderObserver(Protocol):
    """Who hears what the guard sees (implemented by :class:`rotator.metrics.Metrics`)."""

    def backend_error(self, provider: str) -> None: ...

    def circuit_changed(self, provider: str, is_open: bool) -> None: ...

    def keyset_seen(self, keyset: Keyset) -> None: ...


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """Circuit and retry settings of a runtime (the daemon's ``--circuit-cooldown`` sets ``cooldown``)."""

    threshold: int = 5
    cooldown: float = 60.0
    attempts: int = 3
    backoff: float = 0.2  # first wait; doubles per attempt, plus up to as much jitter
    max_backoff: float = 5.0


class CircuitBreaker:
    """Consecutive-failure circuit for one provider: closed -> open (cooldown) -> half-open -> closed.

    Hand-written on purpose (about 60 lines): pybreaker, the maintained library, times the cooldown with the
    wall clock (``datetime.now``, not injectable, so a clock step changes it and tests must sleep), raises
    its own ``CircuitBreakerError`` where rotator needs a ``BackendUnavailable`` naming the provider and the
    retry time (exit 4), and classifies failures by exception type where rotator needs "transient backend
    error" versus "the backend answered" (a conflict or a denial closes the circuit).
    """

    def __init__(self, name: str, *, threshold: int = 5, cooldown: float = 60.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, bool], None] | None = None) -> None:
        self.name, self.threshold, self.cooldown, self.clock = name, threshold, cooldown, clock
        self.failures = 0
        self.opened_at: float | None = None
        self._trial = False
        self._lock = threading.Lock()
        self._on_change = on_change

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
            was_open = self.opened_at is not None
            self.failures, self.opened_at, self._trial = 0, None, False
        if was_open and self._on_change is not None:
            self._on_change(self.name, False)

    def failure(self) -> None:
        with self._lock:
            was_open = self.opened_at is not None
            self.failures += 1
            self._trial = False
            if self.failures >= self.threshold or self.opened_at is not None:
                self.opened_at = self.clock()
            opened = not was_open and self.opened_at is not None
        if opened and self._on_change is not None:
            self._on_change(self.name, True)


class Breakers:
    """The breakers of one runtime, by provider name, with the settings and observer they share."""

    def __init__(self, settings: BreakerSettings | None = None, observer: ProviderObserver | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or BreakerSettings()
        self.observer = observer
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, provider: str) -> CircuitBreaker:
        """The breaker of ``provider``, created on first use."""
        with self._lock:
            if provider not in self._breakers:
                on_change = self.observer.circuit_changed if self.observer is not None else None
                self._breakers[provider] = CircuitBreaker(
                    provider, threshold=self.settings.threshold, cooldown=self.settings.cooldown,
                    clock=self._clock, on_change=on_change)
            return self._breakers[provider]

    def guard(self, provider: str, inner: Any) -> GuardedProvider:
        """``inner`` behind its breaker, with this registry's retry settings and observer."""
        s = self.settings
        return GuardedProvider(inner, self.get(provider), attempts=s.attempts, backoff=s.backoff,
                               max_backoff=s.max_backoff, observer=self.observer)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, BackendUnavailable) and exc.transient


class GuardedProvider:
    """Wraps a provider: each method call goes through the breaker and the retry policy."""

    def __init__(self, inner: Any, breaker: CircuitBreaker, *, attempts: int = 3, backoff: float = 0.2,
                 max_backoff: float = 5.0, observer: ProviderObserver | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.inner = inner
        self.breaker = breaker
        self.observer = observer
        self.attempts = 1 if Capability.NO_RETRY in inner.capabilities else attempts
        self._wait = wait_exponential(multiplier=backoff, max=max_backoff) + wait_random(0, backoff)
        self._sleep = sleep

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
        retrying = Retrying(stop=stop_after_attempt(self.attempts), wait=self._wait,
                            retry=retry_if_exception(_transient), sleep=self._sleep, reraise=True)
        try:
            result = retrying(target, *args, **kwargs)
        except BackendUnavailable:
            self.breaker.failure()
            self._error()
            raise
        except AccessDenied:
            self.breaker.success()  # the backend answered: it is up, but refuses us (counted as an error)
            self._error()
            raise
        except Exception:
            self.breaker.success()  # a conflict, a missing secret: the backend answered
            raise
        self.breaker.success()
        if self.observer is not None and isinstance(result, Keyset):
            self.observer.keyset_seen(result)
        return result

    def _error(self) -> None:
        if self.observer is not None:
            self.observer.backend_error(self.breaker.name)

    def __repr__(self) -> str:
        return f"GuardedProvider({self.inner!r}, circuit={self.breaker.state})"
