"""Delivery as a reconcile step: after every pass, rotate, rollback or revoke, make every sink hold the keyset.

For each target (sinks of several secrets may share one: an env file with two keys, one Kubernetes Secret)
the desired content is computed from the stored keysets: the current value under ``key`` and, while the
previous value is in grace, that one under ``previous_key`` (``<key>_PREVIOUS``). The sink compares, writes
only a difference and reloads only after a write, so running this every pass costs a read and no restarts.

A failing sink is retried (tenacity, the sink's ``retry`` policy, transient errors only), then reported: a
``sink.failed`` event on the bus (audit log and notifiers), a log line naming the secret and the target,
``rotator_sink_deliveries_total{result="failed"}``, and a failed :class:`~rotator.outcome.Outcome` that makes
``run`` exit non-zero. The store is never rolled back: the next pass delivers again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from rotator.errors import ExitCode, RotatorError
from rotator.events import Event, EventType, new_correlation_id
from rotator.keyset import Keyset, SecretValue
from rotator.logs import get_logger, redact_text
from rotator.outcome import Outcome, OutcomeAction
from rotator.sinks.base import Content, Delivery, Sink, SinkConfig, SinkError, build_sink

if TYPE_CHECKING:
    from rotator.app import Runtime
    from rotator.manifest import SecretPolicy

__all__ = ["deliver", "desired_values"]

log = get_logger("rotator.sinks")



@dataclass
class _Target:
    """One delivery target and the (secret, sink config) pairs that feed it."""

    sink: Sink
    members: list[tuple[SecretPolicy, SinkConfig]] = field(default_factory=list)


def desired_values(policy: SecretPolicy, config: SinkConfig, keyset: Keyset,
                   now: datetime) -> tuple[dict[str, SecretValue], dict[str, str]]:
    """``(key -> value, key -> version id)`` the sink should hold for one secret."""
    values: dict[str, SecretValue] = {}
    versions: dict[str, str] = {}
    current = keyset.current
    if current is None or current.value is None:
        raise SinkError(f"{policy.name}: no current value to deliver", transient=False)
    values[config.key], versions[config.key] = current.value, current.id
    previous = keyset.previous
    in_grace = previous is not None and (previous.expires_at is None or previous.expires_at > now)
    if previous is not None and in_grace and previous.value is not None:
        values[config.previous_name], versions[config.previous_name] = previous.value, previous.id
    return values, versions


def deliver(runtime: Runtime, policies: Iterable[SecretPolicy],
            note: Callable[[str], None] | None = None) -> list[Outcome]:
    """Deliver every sink of ``policies``; an outcome for each write or failure (nothing when unchanged).

    ``note`` receives what a sink deliberately skipped (a paused Deployment); default ``runtime.warn``,
    which the CLI prints as ``warning:`` lines (the daemon logs them instead)."""
    chosen = [p for p in policies if p.spec.sinks]
    if not chosen:
        return []
    outcomes: list[Outcome] = []
    keysets: dict[str, Keyset] = {}
    unreadable: set[str] = set()
    for policy in chosen:
        try:
            keyset = runtime.engine.read(policy)
        except RotatorError as exc:
            unreadable.add(policy.name)
            outcomes.append(_failed(runtime, policy, "(all sinks)", SinkError(
                f"{policy.name}: cannot read the keyset to deliver it: {exc.message}", exit_code=exc.exit_code)))
            continue
        if keyset is not None and keyset.managed and keyset.current is not None:
            keysets[policy.name] = keyset
    targets = _targets(runtime, [p for p in chosen if p.name in keysets or p.name in unreadable], outcomes)
    now = runtime.engine.clock()
    for target in targets.values():
        blocked = sorted({p.name for p, _ in target.members} & unreadable)
        if blocked:  # writing the others alone would drop the unreadable secret's keys from a shared file
            outcomes.extend(_failed(runtime, policy, target.sink.target, SinkError(
                f"{target.sink.target}: not delivered, the keyset of {', '.join(blocked)} could not be read",
                exit_code=ExitCode.BACKEND)) for policy, _ in _unique(target.members) if policy.name not in blocked)
        else:
            outcomes.extend(_deliver_one(runtime, target, keysets, now, note or runtime.warn))
        target.sink.close()
    return outcomes


def _targets(runtime: Runtime, policies: Sequence[SecretPolicy], outcomes: list[Outcome]) -> dict[str, _Target]:
    """Group sinks by target; a target's members must agree on everything but their keys."""
    targets: dict[str, _Target] = {}
    base_dir = runtime.manifest.base_dir
    for policy in policies:
        for config in policy.spec.sinks:
            try:
                sink = build_sink(config, base_dir)
            except (RotatorError, ValueError) as exc:
                outcomes.append(_failed(runtime, policy, config.type, SinkError(
                    f"{policy.name}: sink {config.type}: {exc}", transient=False)))
                continue
            target = targets.setdefault(sink.target, _Target(sink))
            if target.sink is not sink:
                sink.close()
            target.members.append((policy, config))
    return targets


def _deliver_one(runtime: Runtime, target: _Target, keysets: dict[str, Keyset], now: datetime,
                 note: Callable[[str], None]) -> list[Outcome]:
    name = target.sink.target
    try:
        content = _content(target, keysets, now)
        delivery = _with_retries(target.sink, content, target.members[0][1])
    except SinkError as exc:
        return [_failed(runtime, policy, name, exc) for policy, _ in _unique(target.members)]
    out = []
    for policy, _ in _unique(target.members):
        if runtime.metrics is not None:
            runtime.metrics.sink_delivery(policy.name, name, "written" if delivery.wrote else "unchanged")
        for skipped in delivery.skipped:
            note(f"{policy.name}: {name}: {skipped}")
        if not delivery.changed:
            continue
        _emit(runtime, Event(type=EventType.DELIVERED, secret=policy.name, provider=policy.provider,
                             at=runtime.engine.clock(), actor=runtime.engine.actor,
                             correlation_id=new_correlation_id(),
                             details={"sink": name, "result": "delivered", "wrote": delivery.wrote,
                                      "reloaded": list(delivery.reloaded), "versions": dict(content.versions)}))
        out.append(Outcome(policy.name, OutcomeAction.DELIVERED, True, delivery.describe()))
    return out


def _content(target: _Target, keysets: dict[str, Keyset], now: datetime) -> Content:
    first_policy, first = target.members[0]
    values: dict[str, SecretValue] = {}
    versions: dict[str, str] = {}
    owner: dict[str, str] = {}
    managed: set[str] = set()
    for policy, config in target.members:
        if config.target_config() != first.target_config():
            raise SinkError(f"{target.sink.target}: sinks of {first_policy.name} and {policy.name} share this "
                            "target but differ in settings other than 'key'; make them equal", transient=False)
        mine, ids = desired_values(policy, config, keysets[policy.name], now)
        for key in mine:
            if key in owner and owner[key] != policy.name:
                raise SinkError(f"{target.sink.target}: key {key} is delivered by both {owner[key]} and "
                                f"{policy.name}", transient=False)
            owner[key] = policy.name
        values |= mine
        versions |= ids
        managed |= {config.key, config.previous_name}
    return Content(values, versions, tuple(p.name for p, _ in _unique(target.members)), frozenset(managed))


def _with_retries(sink: Sink, content: Content, config: SinkConfig) -> Delivery:
    policy = config.retry
    retrying = Retrying(
        stop=stop_after_attempt(policy.attempts),
        wait=wait_exponential(multiplier=policy.initial, max=policy.max),
        retry=retry_if_exception(lambda exc: isinstance(exc, SinkError) and exc.transient),
        reraise=True,
    )

    def attempt() -> Delivery:
        try:
            return sink.deliver(content)
        except SinkError:
            raise
        except Exception as exc:  # a sink bug or an untranslated client error: still one clear line
            raise SinkError(f"{sink.target}: {type(exc).__name__}: {redact_text(str(exc))[:300]}") from exc

    result: Delivery = retrying(attempt)
    return result


def _failed(runtime: Runtime, policy: SecretPolicy, sink: str, exc: SinkError) -> Outcome:
    message = redact_text(exc.message)
    log.warning("sink.failed", secret=policy.name, sink=sink, error=message, exit_code=int(exc.exit_code))
    if runtime.metrics is not None:
        runtime.metrics.sink_delivery(policy.name, sink, "failed")
    event = Event(type=EventType.SINK_FAILED, secret=policy.name, provider=policy.provider,
                  at=runtime.engine.clock(), actor=runtime.engine.actor, correlation_id=new_correlation_id(),
                  reason=message[:300], details={"sink": sink})
    _emit(runtime, event)
    error = SinkError(message, hint=exc.hint, exit_code=exc.exit_code)
    return Outcome(policy.name, OutcomeAction.DELIVERY_FAILED, False,
                   f"{message} (the store is unchanged; the next pass delivers again)", error=error)


def _emit(runtime: Runtime, event: Event) -> None:
    """Put ``event`` on the bus (the audit log is its one writer); a failing audit log is logged, not raised."""
    try:
        runtime.bus.emit(event)
    except (RotatorError, OSError) as err:  # the audit log (critical subscriber) failed: still report it
        log.warning("audit.append_failed", error=str(err))


def _unique(members: list[tuple[SecretPolicy, SinkConfig]]) -> list[tuple[SecretPolicy, SinkConfig]]:
    seen: dict[str, tuple[SecretPolicy, SinkConfig]] = {}
    for policy, config in members:
        seen.setdefault(policy.name, (policy, config))
    return list(seen.values())

