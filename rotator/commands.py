"""The bodies of the CLI commands that print things; kept apart from click wiring in :mod:`rotator.cli`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from rotator._output import SETTINGS, ago, emit, is_tty, print_table, stamp, when
from rotator.acks import acknowledged, waiting_for
from rotator.app import Runtime
from rotator.engine import Outcome, exit_code_for
from rotator.errors import IllegalTransition, UsageError
from rotator.keyset import Keyset, KeyVersion
from rotator.keyset import rollback as rolled_back
from rotator.manifest import SecretPolicy
from rotator.outcome import OutcomeAction
from rotator.plan import decide, due_at, last_rotation
from rotator.targeting import credential_of

__all__ = ["history_rows", "plan_rows", "retire_one", "rollback_one", "run_and_report", "send_test", "single",
           "status_rows"]

Ask = Callable[[str], None]  # asks the operator; returns only if they agreed (or nobody can be asked)

_MARK = {True: "ok", False: "FAILED"}


def plan_rows(rt: Runtime, at: datetime, output: str, policies: Sequence[SecretPolicy] | None = None) -> None:
    """``rotator plan``: what a run at ``at`` would do for each of ``policies`` (default: every secret)."""
    items: list[dict[str, Any]] = []
    for policy in rt.manifest.secrets.values() if policies is None else policies:
        keyset = rt.engine.read(policy, values=False)
        decision = decide(policy, keyset, at)
        items.append({
            "secret": policy.name, "provider": policy.provider, "kind": policy.spec.kind,
            "state": _state(keyset), "action": str(decision.action), "detail": decision.detail,
            "last_rotation": last_rotation(keyset) if keyset else None, "next_due": decision.due_at,
            "next_action_at": decision.next_at, "schedule": policy.schedule.describe(),
            "frozen_until": frozen.until if (frozen := policy.schedule.frozen(at)) else None,
            "target": _target(policy, keyset),
        })
    if output != "table":
        emit({"at": at, "secrets": items}, output)
        return
    rows = [[i["secret"], i["provider"], i["state"], when(i["last_rotation"], at), when(i["next_due"], at),
             i["action"] + ("" if i["action"] == "none" else f": {i['detail']}") + _target_note(i["target"])]
            for i in items]
    print_table(f"plan at {stamp(at)}", ["secret", "provider", "state", "last rotation", "next due", "action"],
                rows, wrap={"last rotation", "next due"}, prose={"action"})


def status_rows(rt: Runtime, policies: Sequence[SecretPolicy], output: str) -> None:
    """``rotator status``: versions, states, ages and grace left."""
    now = rt.engine.clock()
    items: list[dict[str, Any]] = []
    retire_modes: dict[str, str] = {}
    for policy in policies:
        keyset = rt.engine.read(policy, values=False)
        versions: list[dict[str, Any]] = []
        for v in keyset.versions if keyset else ():
            versions.append({
                "id": v.id, "state": str(v.state), "created_at": v.created_at, "promoted_at": v.promoted_at,
                "expires_at": v.expires_at, "retired_at": v.retired_at, "reason": v.reason, "actor": v.actor,
                "age_seconds": int((now - v.created_at).total_seconds()),
            })
        last = last_rotation(keyset) if keyset else None
        items.append({
            "secret": policy.name, "provider": policy.provider, "path": policy.ref.path,
            "kind": policy.spec.kind, "managed": keyset.managed if keyset else None,
            "enabled": policy.spec.enabled, "last_rotation": last,
            "next_due": due_at(policy, keyset, now) if keyset and last else None,
            "target": _target(policy, keyset),
            "consumers": list(policy.spec.consumers), "versions": versions,
            "last_failure": keyset.meta.get("last_failure") if keyset else None,
            "acknowledged": acknowledged(keyset) if keyset else {},
            "waiting_for": waiting_for(policy.spec.consumers, keyset) if keyset else list(policy.spec.consumers),
        })
        retire_modes[policy.name] = policy.retire
    if output != "table":
        emit({"at": now, "secrets": items}, output)
        return
    rows = []
    for item in items:
        if not item["versions"]:
            rows.append([item["secret"], "-", "(not created)", "-", "-", "-", "-"])
        for row in item["versions"]:
            left = _left(row["expires_at"], now) if row["state"] == "previous" else "-"
            note = row["reason"] or ""
            if row["state"] == "current" and item["target"]:
                note = _target_note(item["target"]).removeprefix("; ")
            rows.append([item["secret"], row["id"][:8], row["state"], ago(row["created_at"], now), left,
                         _moved({**item, "retire": retire_modes[item["secret"]]}) if row["state"] == "current"
                         else "", note])
    print_table("status", ["secret", "version", "state", "age", "grace", "consumers moved", "note"], rows,
                wrap={"consumers moved"}, prose={"note"})


def _target(policy: SecretPolicy, keyset: Keyset | None) -> dict[str, Any] | None:
    """Where a target-bound secret's credential is checked, how it rotates, and which identity is active."""
    binding = policy.binding
    if binding is None:
        return None
    current = credential_of(keyset.current if keyset is not None else None)
    return {"name": binding.target, "strategy": str(binding.strategy),
            "identity": current.username if current is not None else None}


def _target_note(target: dict[str, Any] | None) -> str:
    if not target:
        return ""
    active = f", active: {target['identity']}" if target["identity"] else ""
    return f"; target {target['name']} ({target['strategy']}{active})"


def _left(expires: datetime | None, now: datetime) -> str:
    """``6d23h``: what is left of a grace period (the exact deadline is in ``-o json``)."""
    if expires is None:
        return "-"
    return ago(now, expires) if expires > now else "ended"


def _moved(item: dict[str, Any]) -> str:
    """Consumers that acknowledged the current version: ``1/2; not yet: billing-worker``.

    Only a previous value gives consumers something to move from; and only ``retire: when_acknowledged``
    makes the retirement wait for them (otherwise the grace deadline decides).
    """
    named, waiting = item["consumers"], item["waiting_for"]
    if not named:
        return "-"
    done = f"{len(named) - len(waiting)}/{len(named)}"
    if not any(v["state"] == "previous" for v in item["versions"]):
        return f"{done} (no previous value)" if len(waiting) < len(named) else "n/a (no previous value)"
    if not waiting:
        return done
    label = "retirement waits for" if item.get("retire") == "when_acknowledged" else "not yet"
    return f"{done}; {label}: {' '.join(waiting)}"


def run_and_report(rt: Runtime, policies: Sequence[SecretPolicy], output: str, *, progress: str = "",
                   **options: Any) -> None:
    """Reconcile ``policies`` and print one line each; exits with the contract code.

    ``progress`` is the log format in use: a bar is drawn only on a terminal, for a table, with console
    logs (the bar's console prints them above it). Sinks are delivered after every pass (rotator.sinks).
    """
    from rotator.sinks.reconcile import deliver

    try:
        outcomes = _with_progress(rt, policies, output, options, bar=progress == "console")
        if not options.get("dry_run"):
            outcomes += deliver(rt, policies)  # every pass: a sink that missed a change catches up
    finally:
        rt.close()
    _report(outcomes, output, rt.warnings)
    sys.exit(int(exit_code_for(outcomes)))


def _with_progress(rt: Runtime, policies: Sequence[SecretPolicy], output: str, options: dict[str, Any], *,
                   bar: bool) -> list[Outcome]:
    if bar and output == "table" and not SETTINGS.quiet and is_tty(sys.stderr) and len(policies) > 5:
        from rich.progress import Progress

        from rotator._output import console

        # on stderr, with stderr redirected through the bar's console: a log line prints above the bar
        with Progress(console=console(stderr=True), transient=True, redirect_stdout=False) as shown:
            task = shown.add_task("rotating", total=len(policies))
            return rt.engine.reconcile(policies, on_done=lambda _: shown.advance(task), **options)
    return rt.engine.reconcile(policies, **options)


def _report(outcomes: Sequence[Outcome], output: str, warnings: Sequence[str]) -> None:
    if output != "table":
        emit({"results": [o.to_dict() for o in outcomes], "warnings": list(warnings),
              "exit_code": int(exit_code_for(outcomes))}, output)
        return
    terse = len(outcomes) > 20
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
        if outcome.ok and (SETTINGS.quiet or (terse and outcome.action in ("none", "paused"))):
            continue  # -q: failures only; a big batch: only what changed (the summary counts the rest)
        line = f"{_MARK[outcome.ok]:6} {outcome.secret}: {outcome.action}"
        message = outcome.message.removeprefix(f"{outcome.secret}: ")  # the line names the secret already
        click.echo(line + (f" - {message}" if message else ""))
        if outcome.consumers:
            click.echo(f"       consumers that must switch to the new value now: {', '.join(outcome.consumers)}")
    if SETTINGS.quiet:
        return
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    secrets = len({o.secret for o in outcomes})  # a delivery adds a line, not a secret
    click.echo(f"{secrets} secret{'s' if secrets != 1 else ''}: {summary}")


def single(rt: Runtime, operation: Callable[[], Outcome], output: str = "table") -> None:
    """Run one engine operation (rollback, retire), deliver the result to the secret's sinks, print it."""
    from rotator.sinks.reconcile import deliver

    try:
        outcome = operation()
        outcomes = [outcome, *deliver(rt, [rt.manifest.secret(outcome.secret)])]
    finally:
        rt.close()
    _report(outcomes, output, rt.warnings)
    if code := exit_code_for(outcomes):
        sys.exit(int(code))


def rollback_one(rt: Runtime, name: str, reason: str, output: str, ask: Ask) -> None:
    """``rotator rollback``: a no-op (exit 0) when the current value already is the result of a rollback.

    A second ``rollback`` would otherwise flip back to the value the first one rolled away from.
    """
    def operation() -> Outcome:
        policy = rt.manifest.secret(name)
        keyset = rt.engine.read(policy) if policy.spec.kind != "manual" else None  # manual: the engine refuses
        if keyset is not None and keyset.current is not None:
            target = _rollback_target(keyset, policy, rt.engine.clock())
            done = _undone_by(keyset.current, target)
            if done:
                return Outcome(name, OutcomeAction.NONE, True, done, keyset.current.id)
            if target is not None:
                ask(f"Roll back {name}: make {target.id[:8]} current again and retire {keyset.current.id[:8]}?")
        return rt.engine.rollback(policy, reason)

    single(rt, operation, output)


def _rollback_target(keyset: Keyset, policy: SecretPolicy, now: datetime) -> KeyVersion | None:
    """The version (as stored now) that a rollback would make current; computed on a copy, nothing written."""
    try:
        restored = rolled_back(keyset, now, "check", policy.rollback_window).current
    except IllegalTransition:
        return None  # the engine call says why, with the contract's exit code
    return keyset.get(restored.id) if restored is not None else None


def _undone_by(current: KeyVersion, target: KeyVersion | None) -> str:
    """Why rolling back again is nothing to do: ``current`` replaced ``target`` in a rollback already."""
    if target is None or not (target.reason or "").startswith("rolled back:"):
        return ""
    if target.retired_at is None or current.promoted_at != target.retired_at:
        return ""
    return (f"already rolled back: {current.id[:8]} is current since {stamp(current.promoted_at)} "
            f"(rolled back from {target.id[:8]}); nothing to do")


def retire_one(rt: Runtime, name: str, reason: str, output: str, ask: Ask) -> None:
    """``rotator retire``: asks first on a terminal; with nothing in grace the engine makes it a no-op (exit 0)."""
    def operation() -> Outcome:
        policy = rt.manifest.secret(name)
        keyset = rt.engine.read(policy, values=False)
        olds = keyset.previous_versions if keyset is not None else ()
        if olds:
            which = ", ".join(v.id[:8] for v in olds)
            ask(f"Retire {which}, the previous value{'s' if len(olds) > 1 else ''} of {name}, now? "
                "Consumers still using it break")
        return rt.engine.retire_now(policy, reason)

    single(rt, operation, output)


def history_rows(audit_path: Path, names: Sequence[str], output: str, *, single: bool = False) -> None:
    """``rotator history [NAME...]`` from the audit log; times in UTC with a ``Z``.

    ``single`` (exactly one name asked for) keeps the original JSON shape ``{"secret", "records"}``;
    otherwise it is ``{"secrets": [...], "records": [...]}`` and the table gets a secret column.
    """
    from rotator.audit import iter_records

    wanted = set(names)
    records = [r for r in iter_records(audit_path) if r.get("secret") in wanted and r.get("type") != "notification"]
    if output != "table":
        emit({"secret": names[0], "records": records} if single else {"secrets": list(names), "records": records},
             output)
        return
    rows = [[stamp(r.get("at") or r.get("ts")), *([] if single else [str(r.get("secret", ""))]),
             str(r.get("event") or r.get("step", "")), str(r.get("actor", "")), str(r.get("new_version", ""))[:8],
             str(r.get("old_version", ""))[:8], str(r.get("reason", "") or "")] for r in records]
    columns = ["time", *([] if single else ["secret"]), "event", "actor", "new", "old", "reason"]
    print_table(f"history of {names[0]}" if single else "history", columns, rows, wrap={"time"},
                prose={"reason"})


def send_test(rt: Runtime, notifier: str) -> None:
    """``rotator notify test NOTIFIER``."""
    if notifier not in rt.manifest.model.notifiers:
        known = ", ".join(rt.manifest.model.notifiers) or "none"
        raise UsageError(f"unknown notifier '{notifier}' (notifiers: {known})")
    if rt.dispatcher is None:
        raise UsageError("no notifiers configured")
    try:
        rt.dispatcher.send_test(notifier)  # raises DeliveryError (exit 1) when the notifier refuses
    finally:
        rt.close()
    click.echo(f"test message sent through '{notifier}'")


def _state(keyset: Keyset | None) -> str:
    if keyset is None:
        return "missing"
    if not keyset.managed:
        return "unmanaged"
    return "+".join(str(v.state) for v in keyset.accepted()) or "empty"
