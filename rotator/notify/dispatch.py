"""The dispatcher: an EventBus subscriber that routes events to notifiers and delivers them in the background.

``__call__`` only enqueues, so a slow or dead notifier never blocks a rotation. Each notifier has its own
FIFO (events reach it in the order they happened) drained by a small shared thread pool; each delivery is
retried with exponential backoff (tenacity) and every attempt is bounded by the notifier's ``timeout``.
Once a delivery has used up its retries, the notifier counts as down: later deliveries get a single
attempt (so a backlog does not wait out a full backoff each) until one succeeds.
Each delivery ends in exactly one ``on_result(notifier, event, "ok" | "failed", exc)`` call and, when the
dispatcher has a ``bus``, one ``notification.result`` event on it: the audit log (a bus subscriber, its only
writer) records the result from there. The dispatcher ignores events that are not notifiable (steps and
these results), so its own results never loop back into deliveries.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from rotator.errors import UsageError
from rotator.events import NOTIFIABLE, Event, EventBus, EventType
from rotator.logs import get_logger, register_secret
from rotator.notify.base import DeliveryError, Notifier, event_name, failure, make_test_event, scrub
from rotator.notify.config import DeliveryPolicy, EmailConfig, NotifierConfig, SlackConfig, WebhookConfig
from rotator.notify.email import EmailNotifier
from rotator.notify.slack import SlackNotifier
from rotator.notify.webhook import WebhookNotifier

__all__ = ["DeliveryFailure", "Dispatcher", "OnResult", "build_notifier"]

OnResult = Callable[[str, Event, str, Exception | None], None]
log = get_logger("rotator.notify")

_BUILDERS: dict[type[Any], Callable[[str, Any], Notifier]] = {
    SlackConfig: SlackNotifier,
    EmailConfig: EmailNotifier,
    WebhookConfig: WebhookNotifier,
}
_MAX_FAILURES = 1000  # a long-running daemon keeps the most recent ones


def build_notifier(name: str, config: NotifierConfig) -> Notifier:
    """The notifier for one ``notifiers:`` entry of the manifest."""
    return _BUILDERS[type(config)](name, config)


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """One delivery that failed for good (all attempts used, or a permanent error). ``reason`` is redacted."""

    notifier: str
    event: str
    secret: str
    reason: str


class Dispatcher:
    """Delivers events to the notifiers that ``routes(secret_name)`` names, filtered by their ``events``.

    ``policy`` is the retry policy of notifiers without their own ``retry:``. Call :meth:`flush` before a
    short-lived process exits and :meth:`close` (or use ``with``) when done.
    """

    def __init__(
        self,
        configs: Mapping[str, NotifierConfig],
        routes: Callable[[str], Sequence[str]],
        *,
        on_result: OnResult | None = None,
        max_workers: int = 4,
        policy: DeliveryPolicy | None = None,
        bus: EventBus | None = None,
    ) -> None:
        self._configs = dict(configs)
        self._bus = bus
        self._routes = routes
        self._on_result = on_result
        self._policy = policy or DeliveryPolicy()
        self._notifiers = {name: build_notifier(name, config) for name, config in self._configs.items()}
        for notifier in self._notifiers.values():
            _register_secrets(notifier.secrets())
        self._queues: dict[str, deque[Event]] = {}
        self._busy: set[str] = set()
        self._down: set[str] = set()  # notifiers whose last delivery failed after all its retries
        self._outstanding = 0
        self._failures: deque[DeliveryFailure] = deque(maxlen=_MAX_FAILURES)
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rotator-notify")

    # --- the subscriber side -----------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Queue ``event`` for each routed notifier whose filter accepts it; returns at once."""
        if event.type not in NOTIFIABLE:
            return
        name = event_name(event)
        for target in dict.fromkeys(self._routes(event.secret)):
            config = self._configs.get(target)
            if config is None or config.wants(name):
                self._enqueue(target, event)

    def _enqueue(self, target: str, event: Event) -> None:
        with self._cond:
            self._outstanding += 1
            self._queues.setdefault(target, deque()).append(event)
            if target in self._busy:
                return
            self._busy.add(target)
        try:
            self._pool.submit(self._drain, target)
        except RuntimeError:  # pool shut down: nothing will drain it, report what is queued
            self._drain(target)

    def _drain(self, target: str) -> None:
        while True:
            with self._cond:
                queue = self._queues[target]
                if not queue:
                    self._busy.discard(target)
                    return
                event = queue.popleft()
            try:
                self._deliver(target, event)
            finally:
                with self._cond:
                    self._outstanding -= 1
                    self._cond.notify_all()

    def _deliver(self, target: str, event: Event) -> None:
        try:
            if self._closed.is_set():
                raise DeliveryError(f"{target}: not delivered: the dispatcher was closed", retryable=False)
            # after a delivery used up its retries, later ones get one attempt until the notifier answers
            self._send(target, event, retry=target not in self._down)
            self._down.discard(target)
        except DeliveryError as exc:
            if exc.retryable:
                self._down.add(target)
            self._report(target, event, exc)
        except Exception as exc:  # a bug here must still end in exactly one result
            self._report(target, event, failure(target, exc, self._secrets(target)))
        else:
            self._report(target, event, None)

    # --- delivery ----------------------------------------------------------------------------------------

    def _send(self, target: str, event: Event, *, retry: bool) -> None:
        notifier = self._notifiers.get(target)
        if notifier is None:
            known = ", ".join(self._notifiers) or "none"
            raise DeliveryError(f"{target}: no such notifier (notifiers: {known})", retryable=False)
        config = self._configs[target]
        policy = (config.retry or self._policy) if retry else DeliveryPolicy(attempts=1)

        last: list[DeliveryError] = []

        def attempt() -> None:
            if last and self._closed.is_set():  # closed during the backoff: give up with the last error
                raise DeliveryError(f"{last[-1]} (gave up: the dispatcher was closed)", retryable=False)
            try:
                notifier.send(event)
            except DeliveryError as exc:
                last.append(exc)
                raise
            except Exception as exc:  # a notifier bug must not escape unredacted
                last.append(failure(target, exc, notifier.secrets()))
                raise last[-1] from None

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.debug("notification attempt failed, retrying", notifier=target, event_type=event_name(event),
                      secret=event.secret, attempt=state.attempt_number, error=str(exc))

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts),
            wait=wait_exponential(multiplier=policy.initial, max=policy.max),
            retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.retryable
                                     and not self._closed.is_set()),
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        retrying(attempt)

    def _sleep(self, seconds: float) -> None:
        """Backoff that :meth:`close` cuts short."""
        self._closed.wait(seconds)

    def _report(self, target: str, event: Event, exc: DeliveryError | None) -> None:
        reason = None
        if exc is not None:
            reason = scrub(str(exc), self._secrets(target))
            with self._cond:
                self._failures.append(DeliveryFailure(target, event_name(event), event.secret, reason))
        if self._bus is not None:
            result = Event(type=EventType.NOTIFIED, secret=event.secret, provider=event.provider,
                           at=datetime.now(UTC), actor=event.actor, correlation_id=event.correlation_id,
                           reason=reason[:300] if reason is not None else None,
                           details={"notifier": target, "event": event_name(event),
                                    "result": "failed" if exc else "ok"})
            try:
                self._bus.emit(result)
            except Exception as err:  # the audit log could not record it: say so, the delivery stands
                log.error("notification result not audited", notifier=target, error=scrub(str(err), ()))
        if self._on_result is None:
            return
        try:
            self._on_result(target, event, "failed" if exc else "ok", exc)
        except Exception as err:
            log.error("notification result handler failed", notifier=target, error=scrub(repr(err), ()))

    def _secrets(self, target: str) -> tuple[str, ...]:
        notifier = self._notifiers.get(target)
        return notifier.secrets() if notifier is not None else ()

    # --- control -----------------------------------------------------------------------------------------

    def failures(self) -> list[DeliveryFailure]:
        """Deliveries that failed for good since this dispatcher was created (the last 1000)."""
        with self._cond:
            return list(self._failures)

    def pending(self) -> int:
        """Deliveries queued or in progress."""
        with self._cond:
            return self._outstanding

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued delivery has ended (ok or failed); False if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Flush up to ``timeout``, then stop retrying: what is still queued is reported as failed.

        Returns True if everything was delivered or failed before the timeout. An attempt in progress is
        allowed to end (it is bounded by its notifier's ``timeout``).
        """
        done = self.flush(timeout)
        self._closed.set()
        self._pool.shutdown(wait=True)
        return done

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_test(self, name: str, *, actor: str = "cli") -> None:
        """Send a ``notification.test`` message to ``name`` now, with retries; raise DeliveryError on failure.

        Ignores the notifier's ``events`` filter and does not call ``on_result``.
        """
        if name not in self._notifiers:
            known = ", ".join(self._notifiers) or "none defined"
            raise UsageError(f"unknown notifier '{name}' (notifiers: {known})")
        self._send(name, make_test_event(actor), retry=True)


def _register_secrets(secrets: Iterable[str]) -> None:
    """Tell :mod:`rotator.logs` about the notifier's secrets so every log line redacts them."""
    for secret in secrets:
        register_secret(secret)
