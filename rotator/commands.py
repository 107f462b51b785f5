"""The bodies of the CLI commands that print things; kept apart from click wiring in :mod:`rotator.cli`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from rotator._output import ago, emit_json, is_tty, print_table, when
from rotator.acks import acknowledged, waiting_for
from rotator.app import Runtime
from rotator.engine import Outcome, exit_code_for
from rotator.errors import ExitCode, RotatorError, UsageError
from rotator.keyset import Keyset
from rotator.manifest import SecretPolicy
from rotator.plan import decide, last_rotation

__all__ = ["history_rows", "plan_rows", "run_and_report", "send_test", "single", "status_rows", "verify_audit"]

_MARK = {True: "ok", False: "FAILED"}


def plan_rows(rt: Runtime, at: datetime, output: str) -> None:
    """``rotator plan``: what a run at ``at`` would do for each secret."""
    items: list[dict[str, Any]] = []
    for policy in rt.manifest.secrets.values():
        keyset = rt.engine.read(policy, values=False)
        decision = decide(policy, keyset, at)
        items.append({
            "secret": policy.name, "provider": policy.provider, "kind": policy.spec.kind,
            "state": _state(keyset), "action": str(decision.action), "detail": decision.detail,
            "last_rotation": last_rotation(keyset) if keyset else None, "next_due": decision.due_at,
            "next_action_at": decision.next_at, "schedule": policy.schedule.describe(),
            "frozen_until": frozen.until if (frozen := policy.schedule.frozen(at)) else None,
        })
    if output == "json":
        emit_json({"at": at, "secrets": items})
        return
    rows = [[i["secret"], i["provider"], i["state"], when(i["last_rotation"], at), when(i["next_due"], at),
             i["action"] + ("" if i["action"] == "none" else f": {i['detail']}")] for i in items]
    print_table(f"plan at {at:%Y-%m-%d %H:%M:%S}Z", ["secret", "provider", "state", "last rotation",
                                                      "next due", "action"], rows)


def status_rows(rt: Runtime, policies: Sequence[SecretPolicy], output: str) -> None:
    """``rotator status``: versions, states, ages and grace left."""
    now = rt.engine.clock()
    items: list[dict[str, Any]] = []
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
            "next_due": policy.schedule.due_at(last, now) if last else None,
            "consumers": list(policy.spec.consumers), "versions": versions,
            "last_failure": keyset.meta.get("last_failure") if keyset else None,
            "acknowledged": acknowledged(keyset) if keyset else {},
            "waiting_for": waiting_for(policy.spec.consumers, keyset) if keyset else list(policy.spec.consumers),
        })
    if output == "json":
        emit_json({"at": now, "secrets": items})
        return
    rows = []
    for item in items:
        if not item["versions"]:
            rows.append([item["secret"], "-", "(not created)", "-", "-", "-", "-"])
        for row in item["versions"]:
            left = when(row["expires_at"], now) if row["state"] == "previous" else "-"
            rows.append([item["secret"], row["id"][:8], row["state"], ago(row["created_at"], now), left,
                         _moved(item) if row["state"] == "current" else "", row["reason"] or ""])
    print_table("status", ["secret", "version", "state", "age", "grace until", "consumers moved", "note"], rows)


def _moved(item: dict[str, Any]) -> str:
    """``1/2, waiting: billing-worker``: consumers that acknowledged the current version."""
    named, waiting = item["consumers"], item["waiting_for"]
    if not named:
        return "-"
    done = f"{len(named) - len(waiting)}/{len(named)}"
    return f"{done}, waiting: {', '.join(waiting)}" if waiting else done


def run_and_report(rt: Runtime, policies: Sequence[SecretPolicy], output: str, **options: Any) -> None:
    """Reconcile ``policies`` and print one line each; exits with the contract code."""
    from rotator.sinks.reconcile import deliver

    try:
        outcomes = _with_progress(rt, policies, output, options)
        if not options.get("dry_run"):
            outcomes += deliver(rt, policies)  # every pass: a sink that missed a change catches up
    finally:
        rt.close()
    _report(outcomes, output, rt.warnings)
    sys.exit(int(exit_code_for(outcomes)))


def _with_progress(rt: Runtime, policies: Sequence[SecretPolicy], output: str,
                   options: dict[str, Any]) -> list[Outcome]:
    if output != "json" and is_tty(sys.stderr) and len(policies) > 5:
        from rich.progress import Progress

        with Progress(transient=True) as progress:
            task = progress.add_task("rotating", total=len(policies))
            return rt.engine.reconcile(policies, on_done=lambda _: progress.advance(task), **options)
    return rt.engine.reconcile(policies, **options)


def _report(outcomes: Sequence[Outcome], output: str, warnings: Sequence[str]) -> None:
    if output == "json":
        emit_json({"results": [o.to_dict() for o in outcomes], "warnings": list(warnings),
                   "exit_code": int(exit_code_for(outcomes))})
        return
    quiet = len(outcomes) > 20
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
        if quiet and outcome.ok and outcome.action in ("none", "paused"):
            continue
        line = f"{_MARK[outcome.ok]:6} {outcome.secret}: {outcome.action}"
        click.echo(line + (f" - {outcome.message}" if outcome.message else ""))
        if outcome.consumers:
            click.echo(f"       consumers that must switch to the new value now: {', '.join(outcome.consumers)}")
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    secrets = len({o.secret for o in outcomes})  # a delivery adds a line, not a secret
    click.echo(f"{secrets} secret{'s' if secrets != 1 else ''}: {summary}")


def single(rt: Runtime, operation: Callable[[], Outcome]) -> None:
    """Run one engine operation (rollback, retire), deliver the result to the secret's sinks, print it."""
    from rotator.sinks.reconcile import deliver

    try:
        outcome = operation()
        outcomes = [outcome, *deliver(rt, [rt.manifest.secret(outcome.secret)])]
    finally:
        rt.close()
    _report(outcomes, "table", rt.warnings)
    if code := exit_code_for(outcomes):
        sys.exit(int(code))


def history_rows(audit_path: Path, name: str, output: str) -> None:
    """``rotator history NAME`` from the audit log."""
    from rotator.audit import iter_records

    records = [r for r in iter_records(audit_path) if r.get("secret") == name and r.get("type") != "notification"]
    if output == "json":
        emit_json({"secret": name, "records": records})
        return
    rows = [[str(r.get("at") or r.get("ts", ""))[:19], str(r.get("event") or r.get("step", "")),
             str(r.get("actor", "")), str(r.get("new_version", ""))[:8], str(r.get("old_version", ""))[:8],
             str(r.get("reason", "") or "")] for r in records]
    print_table(f"history of {name}", ["time", "event", "actor", "new", "old", "reason"], rows)


def verify_audit(state: Any, path: str | None) -> int:
    """``rotator audit verify``: 0 if the chain holds, 1 naming the first broken line."""
    import os

    from rotator.audit import verify

    if path is None:
        try:
            target = state.manifest().audit_path
        except RotatorError:
            target = Path(os.environ.get("ROTATOR_AUDIT_LOG") or ".rotator/audit.jsonl")
    else:
        target = Path(path)
    if not target.exists():
        raise UsageError(f"{target}: no audit log here")
    result = verify(target)
    if result.ok:
        click.echo(f"{target}: OK: {result.records} records, head {result.head}")
        return int(ExitCode.OK)
    where = f"{result.file or target}:{result.line}" if result.line else str(result.file or target)
    click.echo(f"{where}: audit chain broken: {result.error}", err=True)
    return int(ExitCode.FAILED)


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
