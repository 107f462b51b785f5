"""Wires one process together: manifest, providers, audit log, event bus, notifiers, metrics and engine.

The CLI commands and the daemon both start here, so every entry point audits, logs, counts and notifies
the same way. Process state that must outlive one runtime (the daemon's metrics and circuit breakers, which
survive manifest reloads) is passed in; nothing is a module-level global.
"""

from __future__ import annotations

import getpass
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rotator.audit import AuditLog
from rotator.audit_key import audit_keys_for
from rotator.audit_sink import parse_sink
from rotator.circuit import Breakers
from rotator.clock import Clock, utcnow
from rotator.engine import Engine
from rotator.events import Event, EventBus, Subscriber, is_step
from rotator.keyset import SecretValue
from rotator.logs import get_logger, redact_text
from rotator.manifest import Manifest, load_manifest, resolve_manifest_path
from rotator.provider import ProviderSet

if TYPE_CHECKING:
    from rotator.metrics import Metrics

__all__ = ["Runtime", "build_runtime", "default_actor", "resolve_manifest_path"]

log = get_logger("rotator")


def default_actor(kind: str = "cli") -> str:
    """``cli:<user>``, ``cronjob`` or ``daemon``; ``ROTATOR_ACTOR`` overrides (e.g. an incident ticket)."""
    if override := os.environ.get("ROTATOR_ACTOR"):
        return override
    if kind != "cli":
        return kind
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli:{user}"


@dataclass
class Runtime:
    """Everything a command needs; ``close()`` flushes notifications and releases connections."""

    manifest: Manifest
    providers: ProviderSet
    bus: EventBus
    audit: AuditLog
    engine: Engine
    dispatcher: Any | None = None
    metrics: Metrics | None = None
    warnings: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def warn(self, message: str) -> None:
        with self._lock:
            self.warnings.append(redact_text(message))

    def close(self, timeout: float = 30.0) -> None:
        if self.dispatcher is not None:
            self.dispatcher.close(timeout)  # flushes, then reports what is still queued as failed
        self.audit.close()  # anchors the audit head in the backend: before the providers close
        self.providers.close()
        self.engine.targets.close()


def build_runtime(manifest_path: str | os.PathLike[str], *, actor: str, clock: Clock = utcnow,
                  notify: bool = True, stop_requested: Callable[[], bool] = lambda: False,
                  manifest: Manifest | None = None, metrics: Metrics | None = None,
                  breakers: Breakers | None = None) -> Runtime:
    """Load the manifest (unless given) and assemble a runtime for ``actor``.

    ``metrics`` (the daemon's) subscribes to the bus and observes the providers; ``breakers`` defaults to a
    fresh registry, observed by ``metrics``.
    """
    manifest = manifest if manifest is not None else load_manifest(manifest_path)
    audit_config = manifest.model.audit
    if breakers is None:
        breakers = Breakers(observer=metrics)
    providers = manifest.build_providers(breakers)
    audit = AuditLog(manifest.audit_path, max_bytes=audit_config.max_bytes, keep=audit_config.keep,
                     keys=audit_keys_for(manifest, providers, clock=clock), sink=parse_sink(audit_config.sink))

    def on_error(subscriber: Subscriber, event: Event, exc: Exception) -> None:
        log.warning("subscriber.failed", subscriber=getattr(subscriber, "__name__", type(subscriber).__name__),
                    event_type=str(event.type), secret=event.secret, error=redact_text(str(exc)))

    bus = EventBus(on_error=on_error)
    bus.subscribe(audit, critical=True)
    bus.subscribe(_log_event)
    if metrics is not None:
        metrics.watch(manifest)
        bus.subscribe(metrics.on_event)
    engines: list[Engine] = []

    def admin_values(secret: str) -> list[SecretValue]:
        """An admin secret's values, best first: current, then pending and previous (it may be mid-rotation)."""
        keyset = engines[0].read(manifest.secret(secret))
        if keyset is None:
            return []
        current, pending = keyset.current, keyset.pending
        ordered = [current, pending, *keyset.previous_versions]
        return [v.value for v in ordered if v is not None and v.value is not None]

    targets = manifest.build_targets(admin_values)
    engine = Engine(manifest, providers, bus, actor=actor, clock=clock, stop_requested=stop_requested,
                    targets=targets)
    engines.append(engine)
    runtime = Runtime(manifest, providers, bus, audit, engine, metrics=metrics)
    if notify and manifest.model.notifiers:
        runtime.dispatcher = _dispatcher(runtime)
        bus.subscribe(runtime.dispatcher)
    return runtime


def _dispatcher(runtime: Runtime) -> Any:
    from rotator.notify.dispatch import Dispatcher

    manifest = runtime.manifest

    def routes(secret: str) -> tuple[str, ...]:
        policy = manifest.secrets.get(secret)
        if policy is not None:
            return policy.notify
        return tuple(manifest.model.defaults.notify or ())

    def on_result(notifier: str, event: Event, result: str, exc: Exception | None) -> None:
        if runtime.metrics is not None:
            runtime.metrics.notification(notifier, result)
        if exc is not None:
            runtime.warn(f"notification to '{notifier}' about {event.type} for {event.secret} failed: "
                         f"{redact_text(str(exc))[:300]}")

    # the dispatcher puts each result on the bus as a `notification.result` event; the audit log records it
    return Dispatcher(dict(manifest.model.notifiers), routes, on_result=on_result, bus=runtime.bus)


def _log_event(event: Event) -> None:
    fields = event.to_dict()
    name = fields.pop("event")
    if is_step(event):  # steps log their details flat, as they always did
        fields.update(fields.pop("details", {}))
    failed = name == "notification.result" and event.details.get("result") == "failed"
    level = "warning" if failed or name in ("rotation.failed", "rotation.rolled_back", "key.revoked") else "info"
    getattr(log, level)(name, **fields)
