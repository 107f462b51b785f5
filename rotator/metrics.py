"""Prometheus metrics (DESIGN.md section 5), kept in one registry that the daemon serves on ``/metrics``."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rotator import __version__

__all__ = ["METRICS", "Metrics"]


class Metrics:
    """The metric families of the contract; label values are secret/notifier/provider names, never values."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.rotations = Counter("rotator_rotations", "Rotation attempts by result.", ["secret", "result"],
                                 registry=r)
        self.duration = Histogram("rotator_rotation_duration_seconds", "Time from stage to promote.",
                                  buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300), registry=r)
        self.age = Gauge("rotator_secret_age_seconds", "Age of the current value.", ["secret"], registry=r)
        self.policy = Gauge("rotator_secret_policy_seconds", "Rotation interval of the secret's policy.",
                            ["secret"], registry=r)
        self.next_rotation = Gauge("rotator_next_rotation_timestamp_seconds", "When the next rotation is due.",
                                   ["secret"], registry=r)
        self.grace_expiry = Gauge("rotator_grace_expiry_timestamp_seconds",
                                  "When the previous value stops being accepted (absent: no previous).",
                                  ["secret"], registry=r)
        self.notifications = Counter("rotator_notifications", "Notification deliveries by result.",
                                     ["notifier", "result"], registry=r)
        self.backend_errors = Counter("rotator_backend_errors", "Backend errors by provider.", ["provider"],
                                      registry=r)
        self.circuit_open = Gauge("rotator_backend_circuit_open", "1 while a provider's circuit is open.",
                                  ["provider"], registry=r)
        self.up = Gauge("rotator_up", "1 while the daemon runs and its last reconcile loaded the manifest.",
                        registry=r)
        self.info = Gauge("rotator_build_info", "Build information.", ["version"], registry=r)
        self.info.labels(version=__version__).set(1)
        self._children: dict[str, tuple[Any, Any, Any]] = {}
        self._in_grace: set[str] = set()

    def observe_secret(self, secret: str, *, age: float | None, policy: float | None,
                       next_due: datetime | None, grace_expiry: datetime | None) -> None:
        """Refresh the per-secret gauges after a keyset was read (label children cached per secret)."""
        children = self._children.get(secret)
        if children is None:
            children = (self.age.labels(secret=secret), self.policy.labels(secret=secret),
                        self.next_rotation.labels(secret=secret))
            self._children[secret] = children
        if age is not None:
            children[0].set(age)
        if policy is not None:
            children[1].set(policy)
        if next_due is not None:
            children[2].set(next_due.timestamp())
        if grace_expiry is not None:
            self.grace_expiry.labels(secret=secret).set(grace_expiry.timestamp())
            self._in_grace.add(secret)
        elif secret in self._in_grace:
            self._in_grace.discard(secret)
            with contextlib.suppress(KeyError):
                self.grace_expiry.remove(secret)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


METRICS = Metrics()
