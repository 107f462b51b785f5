"""``rotator report``: compliance evidence for every secret of the manifest, as Markdown, JSON or HTML.

For each secret: its policy, last rotation, age and status, what happened to it in the period (rotations,
rollbacks, revocations, failures, from the audit log), the notifications sent about it, and, for the whole
log, the result of the hash-chain check with the chain head. Keysets are read through the engine like every
other command; the report never holds more than their metadata (no value is rendered or returned).

Statuses (``STATUSES``), worst first: ``unknown`` (the backend could not be read), ``failed`` (the last
attempt failed), ``overdue`` (the rotation deadline passed), ``due_soon`` (inside the longest notice lead),
``compliant``; and ``missing`` (nothing stored yet) / ``unmanaged`` (a value rotator did not write).
Exit codes (:meth:`Report.exit_code`): 4 a backend could not be read, 1 a secret is overdue or the audit chain
does not verify, else 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rotator.errors import ExitCode, OperationFailed, ProviderError, UsageError
from rotator.events import EventType
from rotator.keyset import Keyset
from rotator.logs import redact_text
from rotator.manifest import SecretPolicy
from rotator.plan import last_rotation
from rotator.schedule import format_duration, parse_duration

if TYPE_CHECKING:
    from rotator.app import Runtime
    from rotator.audit_key import AuditKeys

__all__ = ["COUNTS", "FORMATS", "STATUSES", "Activity", "AuditCheck", "Report", "SecretReport", "assess",
           "build_report", "parse_since", "render", "run_report"]

FORMATS = ("md", "json", "html")
STATUSES = ("unknown", "failed", "overdue", "due_soon", "compliant", "missing", "unmanaged")
SCHEMA_VERSION = 1
_LISTED = (EventType.SUCCEEDED, EventType.FAILED, EventType.ROLLED_BACK, EventType.REVOKED)
_COUNTED = {EventType.SUCCEEDED: "rotations", EventType.FAILED: "failures", EventType.ROLLED_BACK: "rollbacks",
            EventType.REVOKED: "revocations", EventType.RETIRED: "retirements", EventType.UPCOMING: "notices",
            EventType.OVERDUE: "notices"}
COUNTS = ("created", "rotations", "rollbacks", "revocations", "failures", "retirements", "notices")
_TEXT_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Activity:
    """One rotation, failure, rollback or revocation of a secret, from the audit log."""

    at: datetime
    event: str
    actor: str
    reason: str | None
    new_version: str | None
    old_version: str | None
    correlation_id: str | None
    initial: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "event": self.event, "actor": self.actor, "reason": self.reason,
                "new_version": self.new_version, "old_version": self.old_version,
                "correlation_id": self.correlation_id, "initial": self.initial}


@dataclass
class SecretReport:
    """Everything the report says about one secret."""

    policy: SecretPolicy
    status: str
    detail: str
    overdue: bool = False
    backend_error: int | None = None  # the exit code of the read error, for ``unknown``
    last_rotation: datetime | None = None
    age: timedelta | None = None
    due_at: datetime | None = None
    current_version: str | None = None
    failures: int = 0
    last_failure: str | None = None
    last_failure_at: str | None = None
    activity: list[Activity] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    notifications: dict[str, int] = field(default_factory=lambda: {"ok": 0, "failed": 0})

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def interval(self) -> timedelta | None:
        return self.policy.schedule.interval

    def to_dict(self) -> dict[str, Any]:
        p, schedule = self.policy, self.policy.schedule
        return {
            "secret": p.name, "provider": p.provider, "kind": p.spec.kind, "enabled": p.spec.enabled,
            "manual": p.spec.kind == "manual",
            "policy": {
                "schedule": schedule.describe(), "every_seconds": _seconds(schedule.every), "cron": schedule.cron,
                "window_seconds": _seconds(schedule.window), "interval_seconds": _seconds(schedule.interval),
                "grace_seconds": _seconds(p.grace), "notice_seconds": [_seconds(n) for n in p.notices],
                "rollback_window_seconds": _seconds(p.rollback_window),
            },
            "status": self.status, "detail": self.detail, "overdue": self.overdue,
            "failed": self.failures > 0, "failures": self.failures, "last_failure": self.last_failure,
            "last_failure_at": self.last_failure_at, "backend_error": self.backend_error is not None,
            "last_rotation": _iso(self.last_rotation), "age_seconds": _seconds(self.age),
            "due_at": _iso(self.due_at), "current_version": self.current_version,
            "activity": [a.to_dict() for a in self.activity], "counts": dict(self.counts),
            "notifications": dict(self.notifications),
        }


@dataclass(frozen=True, slots=True)
class AuditCheck:
    """The hash-chain verification of the audit log (all rotated files)."""

    path: Path
    ok: bool
    records: int
    head: str | None
    error: str | None = None
    anchored: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "records": self.records, "head": self.head,
                "error": self.error, "anchored": self.anchored}


@dataclass
class Report:
    """The whole report: when, which period, every secret, and the audit check."""

    generated_at: datetime
    since: datetime
    manifest: Path
    secrets: list[SecretReport]
    audit: AuditCheck

    def exit_code(self) -> ExitCode:
        """4 when a backend could not be read, 1 when a secret is overdue or the chain is broken, else 0."""
        if any(s.backend_error == ExitCode.BACKEND for s in self.secrets):
            return ExitCode.BACKEND
        if any(s.overdue or s.backend_error is not None for s in self.secrets) or not self.audit.ok:
            return ExitCode.FAILED
        return ExitCode.OK

    def counts(self, *, manual: bool | None = None) -> dict[str, int]:
        """How many secrets are in each status (every status listed, zeros included); ``manual=True`` counts
        only reminder-only secrets, ``False`` only generated ones."""
        out = dict.fromkeys(STATUSES, 0)
        for secret in self.secrets:
            if manual is None or (secret.policy.spec.kind == "manual") == manual:
                out[secret.status] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (README: ``rotator report --format json``)."""
        return {
            "schema_version": SCHEMA_VERSION, "generated_at": self.generated_at.isoformat(),
            "since": self.since.isoformat(), "until": self.generated_at.isoformat(),
            "manifest": str(self.manifest), "audit": self.audit.to_dict(),
            "summary": {"secrets": len(self.secrets), "statuses": self.counts(),
                        "overdue": sum(s.overdue for s in self.secrets),
                        "manual": self.counts(manual=True)},
            "secrets": [s.to_dict() for s in self.secrets], "exit_code": int(self.exit_code()),
        }


# --- building -----------------------------------------------------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """``90d`` (a duration before ``now``) or an ISO date/time (UTC unless it says otherwise)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since wants a duration like 90d or an ISO date like 2025-01-01, got '{text}'") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def assess(policy: SecretPolicy, keyset: Keyset | None, now: datetime) -> SecretReport:
    """Status of one secret at ``now`` from its keyset (``None``: nothing stored yet); no activity yet."""
    manual = policy.spec.kind == "manual"  # reminder-only: its keyset holds records of rotations by hand
    if keyset is None:
        return SecretReport(policy, "missing", f"no rotation on record yet (`rotator mark-rotated {policy.name}`)"
                            if manual else "no value stored yet (`rotator run` creates it)")
    if not keyset.managed:
        return SecretReport(policy, "unmanaged", "a value exists that rotator did not write (adopt: true)")
    last = last_rotation(keyset)
    current = keyset.current
    if last is None or current is None:
        return SecretReport(policy, "missing", "no current value")
    report = SecretReport(policy, "compliant", "", last_rotation=last, age=now - last, current_version=current.id)
    report.failures = _int(keyset.meta.get("failures"))
    if report.failures:
        report.last_failure = _text(keyset.meta.get("last_failure")) or "unknown error"
        report.last_failure_at = _text(keyset.meta.get("last_failure_at"))
    schedule = policy.schedule
    if schedule.every is None and schedule.cron is None:
        report.detail = "no rotation schedule"
    else:
        # the first (jittered) due time after the last rotation, ignoring windows missed since (plan.py skips
        # those); overdue once the policy's deadline passed (jitter never moves that, a freeze does not excuse it)
        report.due_at = schedule.due_at(last, last)
        deadline = schedule.deadline(last)
        report.overdue = now >= deadline
        if report.overdue:
            by_hand = " by hand" if manual else ""
            report.status = "overdue"
            report.detail = f"rotation{by_hand} overdue by {format_duration(now - deadline)}"
        elif policy.notices and now >= report.due_at - policy.notices[0]:
            report.status, report.detail = "due_soon", f"due in {format_duration(report.due_at - now)}"
        else:
            report.detail = f"due in {format_duration(report.due_at - now)}"
    if report.failures:
        report.status = "failed"
        report.detail = f"last attempt failed ({report.failures}x): {report.last_failure}" + (
            "; rotation overdue" if report.overdue else "")
    if not policy.spec.enabled:
        report.detail += " (paused: enabled: false)"
    return report


def build_report(rt: Runtime, since: datetime, now: datetime) -> Report:
    """Read every keyset and the audit log and put the report together."""
    audit_path = rt.manifest.audit_path
    records = _read_records(audit_path)
    secrets: list[SecretReport] = []
    for policy in rt.manifest.secrets.values():
        try:
            keyset = rt.engine.read(policy, values=False)
        except ProviderError as exc:
            secrets.append(SecretReport(policy, "unknown", f"backend error: {_text(str(exc))}",
                                        backend_error=int(exc.exit_code)))
            continue
        secrets.append(assess(policy, keyset, now))
    by_name = {s.name: s for s in secrets}
    for record in records:
        target = by_name.get(str(record.get("secret")))
        at = _when(record)
        if target is not None and at is not None and since <= at <= now:
            _add_record(target, record, at)
    return Report(now, since, rt.manifest.path, secrets, _check_audit(audit_path, rt.audit.keys))


def _read_records(path: Path) -> list[dict[str, Any]]:
    from rotator.audit import iter_records

    try:
        return list(iter_records(path))
    except OSError:
        return []  # the audit check below reports the unreadable log


def _check_audit(path: Path, keys: AuditKeys | None) -> AuditCheck:
    from rotator.audit import verify

    try:
        anchors = keys.anchors() if keys is not None else {}
        known = keys.known() if keys is not None else {}
        result = verify(path, known or None, anchors=anchors, require_keyed=bool(known),
                        superseded=keys.superseded() if keys is not None else None)
    except ProviderError as exc:
        return AuditCheck(path, False, 0, None, _text(f"the audit key cannot be read: {exc.message}"))
    except OperationFailed as exc:
        return AuditCheck(path, False, 0, None, _text(exc.message))
    return AuditCheck(path, result.ok, result.records, result.head, _text(result.error), result.anchored)


def _add_record(target: SecretReport, record: Mapping[str, Any], at: datetime) -> None:
    kind = record.get("type")
    if kind == "notification":
        result = "ok" if record.get("result") == "ok" else "failed"
        target.notifications[result] += 1
        return
    if kind != "event":
        return
    try:
        event = EventType(str(record.get("event")))
    except ValueError:
        return
    details = record.get("details")
    initial = isinstance(details, Mapping) and details.get("initial") is True
    target.counts["created" if initial else _COUNTED[event]] += 1
    if event in _LISTED:
        target.activity.append(Activity(
            at=at, event=str(event), actor=_text(record.get("actor")) or "unknown", reason=_text(record.get("reason")),
            new_version=_text(record.get("new_version")), old_version=_text(record.get("old_version")),
            correlation_id=_text(record.get("correlation_id")), initial=initial))


def _when(record: Mapping[str, Any]) -> datetime | None:
    raw = record.get("at") or record.get("ts")
    try:
        moment = datetime.fromisoformat(str(raw))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- rendering ----------------------------------------------------------------------------------------------


def render(report: Report, fmt: str) -> str:
    """The report as ``md``, ``json`` or ``html`` text."""
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n"
    if fmt == "html":
        from rotator.report_html import render_html

        return render_html(report)
    from rotator.report_md import render_markdown

    return render_markdown(report)


def run_report(rt: Runtime, *, since: str, fmt: str, out: str | None) -> int:
    """``rotator report``: build, render to stdout or ``out``, and return the exit code."""
    import click

    now = rt.engine.clock()
    report = build_report(rt, parse_since(since, now), now)
    text = render(report, fmt)
    if out is None:
        click.echo(text, nl=False)
    else:
        _write(Path(out), text)
        counts = report.counts()
        click.echo(f"report written to {out}: {len(report.secrets)} secrets, {counts['overdue']} overdue, "
                   f"{counts['failed']} failed, audit chain {'OK' if report.audit.ok else 'BROKEN'}", err=True)
    return int(report.exit_code())


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a report)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write the report to {path}: {exc.strerror or exc}") from None


def _seconds(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds())


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _int(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError):
        return 0


def _text(value: Any) -> str | None:
    """Free text from the audit log or the backend, redacted and bounded; ``None`` stays ``None``."""
    if value is None:
        return None
    return redact_text(" ".join(str(value).split()))[:_TEXT_LIMIT]
