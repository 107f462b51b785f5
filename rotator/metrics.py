"""Prometheus metrics, kept in one registry per daemon that it serves on ``/metrics``.

:class:`Metrics` is fed from three places, never by the engine calling it:

- the event bus (:meth:`Metrics.on_event`): ``rotation.succeeded`` and ``rotation.failed`` count rotations
  and observe their duration, once per event, so each failure is counted once;
- the providers' guard (:class:`rotator.circuit.GuardedProvider`, :meth:`backend_error`,
  :meth:`circuit_changed`, :meth:`keyset_seen`): one backend error per failed call after its retries, the
  circuit state, and the dates of every keyset read or written;
- the notification dispatcher (:meth:`notification`).

Age, next rotation and grace expiry are computed when scraped (:class:`_SecretCollector`, with
:func:`rotator.plan.due_at` and :func:`~rotator.plan.last_rotation`, like every other command) from the
value-free keyset cached by :meth:`keyset_seen`, so they are true at scrape time, not as of the last
reconcile. Every counter child exists from the moment the manifest is loaded (:meth:`watch`), so ``rate()``
and ``increase()`` see the first increment. Label values are secret/notifier/provider names, never values.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from rotator import __version__
from rotator.events import Event, EventType
from rotator.keyset import Keyset, State
from rotator.plan import due_at, last_rotation

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from rotator.manifest import Manifest, SecretPolicy

__all__ = ["ROTATION_RESULTS", "Metrics"]

ROTATION_RESULTS = ("success", "failure")
NOTIFICATION_RESULTS = ("ok", "failed")


def _state_only(keyset: Keyset) -> Keyset:
    """``keyset`` without any value: what the scrape-time gauges keep (dates, states, bookkeeping)."""
    return keyset.replace(versions=tuple(v.replace(value=None) for v in keyset.versions))


class _SecretCollector(Collector):
    """Per-secret gauges computed at collect time from the manifest's policies and the cached dates."""

    def __init__(self, metrics: Metrics) -> None:
        self._m = metrics

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        now = self._m.clock()
        policies, dates = self._m.snapshot()
        age, interval, due, grace = self._families()
        for name, policy in policies.items():
            seconds = policy.schedule.interval
            if seconds is not None:
                interval.add_metric([name], seconds.total_seconds())
            keyset = dates.get(name)
            last = last_rotation(keyset) if keyset is not None else None
            if keyset is None or last is None:
                continue
            age.add_metric([name], max((now - last).total_seconds(), 0.0))
            due.add_metric([name], due_at(policy, keyset, now).timestamp())
            ends = sorted(v.expires_at for v in keyset.versions
                          if v.state is State.PREVIOUS and v.expires_at is not None and v.expires_at > now)
            if ends:
                grace.add_metric([name], ends[0].timestamp())
        yield from (age, interval, due, grace)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily("rotator_secret_age_seconds", "Age of the current value, at scrape time.",
                              labels=["secret"]),
            GaugeMetricFamily("rotator_secret_policy_seconds", "Rotation interval of the secret's policy.",
                              labels=["secret"]),
            GaugeMetricFamily("rotator_next_rotation_timestamp_seconds", "When the next rotation is due.",
                              labels=["secret"]),
            GaugeMetricFamily("rotator_grace_expiry_timestamp_seconds",
                              "When the earliest previous value still in grace stops being accepted "
                              "(absent: none in grace).", labels=["secret"]),
        )


class Metrics:
    """The metric families of the contract in a registry of their own (one per daemon process)."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rotations = Counter("rotator_rotations", "Rotation attempts by result.", ["secret", "result"],
                                 registry=r)
        self.duration = Histogram("rotator_rotation_duration_seconds", "Time from stage to promote.",
                                  buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.notifications = Counter("rotator_notifications", "Notification deliveries by result.",
                                     ["notifier", "result"], registry=r)
        self.backend_errors = Counter("rotator_backend_errors", "Backend errors by provider (one per failed "
                                      "call, after its retries).", ["provider"], registry=r)
        self.circuit_open = Gauge("rotator_backend_circuit_open", "1 while a provider's circuit is open.",
                                  ["provider"], registry=r)
        self.sink_deliveries = Counter("rotator_sink_deliveries",
                                       "Sink deliveries by result (written, unchanged, failed).",
                                       ["secret", "sink", "result"], registry=r)
        self.up = Gauge("rotator_up", "1 while the daemon runs and its last reconcile loaded the manifest.",
                        registry=r)
        self.info = Gauge("rotator_build_info", "Build information.", ["version"], registry=r)
        self.info.labels(version=__version__).set(1)
        self._lock = threading.Lock()
        self._policies: dict[str, SecretPolicy] = {}
        self._dates: dict[str, Keyset] = {}
        self._labelled: set[tuple[str, str]] = set()  # (secret, result) children created
        r.register(_SecretCollector(self))

    # --- configuration ------------------------------------------------------------------------------

    def watch(self, manifest: Manifest) -> None:
        """Follow ``manifest`` (again after a reload): its secrets, notifiers and providers get every child."""
        with self._lock:
            gone = set(self._policies) - set(manifest.secrets)
            self._policies = dict(manifest.secrets)
            for name in gone:
                self._dates.pop(name, None)
        for name in gone:
            for result in ROTATION_RESULTS:
                if (name, result) in self._labelled:
                    self.rotations.remove(name, result)
                    self._labelled.discard((name, result))
        for name in manifest.secrets:
            for result in ROTATION_RESULTS:
                self.rotations.labels(secret=name, result=result)
                self._labelled.add((name, result))
        for notifier in manifest.model.notifiers:
            for result in NOTIFICATION_RESULTS:
                self.notifications.labels(notifier=notifier, result=result)
        for provider in manifest.provider_configs:
            self.backend_errors.labels(provider=provider)
            self.circuit_open.labels(provider=provider)

    def snapshot(self) -> tuple[dict[str, SecretPolicy], dict[str, Keyset]]:
        with self._lock:
            return dict(self._policies), dict(self._dates)

    # --- inputs -------------------------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """Event-bus subscriber: count rotations by result (a first value is not a rotation)."""
        if event.type is EventType.SUCCEEDED and not event.details.get("initial"):
            self.rotations.labels(secret=event.secret, result="success").inc()
            duration = event.details.get("duration_seconds")
            if isinstance(duration, int | float):
                self.duration.observe(duration)
        elif event.type is EventType.FAILED:
            self.rotations.labels(secret=event.secret, result="failure").inc()

    def notification(self, notifier: str, result: str) -> None:
        self.notifications.labels(notifier=notifier, result=result).inc()

    def sink_delivery(self, secret: str, sink: str, result: str) -> None:
        self.sink_deliveries.labels(secret=secret, sink=sink, result=result).inc()

    def backend_error(self, provider: str) -> None:
        self.backend_errors.labels(provider=provider).inc()

    def circuit_changed(self, provider: str, is_open: bool) -> None:
        self.circuit_open.labels(provider=provider).set(1 if is_open else 0)

    def keyset_seen(self, keyset: Keyset) -> None:
        """Cache a keyset just read or written, without its values (names the secret by ``keyset.name``)."""
        dates = _state_only(keyset)
        with self._lock:
            if keyset.name in self._policies:
                self._dates[keyset.name] = dates

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)

