"""The compliance report as data: :class:`Report` with a :class:`SecretReport` per secret, its
:class:`Activity` from the audit log and the :class:`AuditCheck`; plus the JSON form (``to_dict``).

Separate from :mod:`rotator.report` (which builds it) so the renderers (:mod:`rotator.report_md`,
:mod:`rotator.report_html`) depend on the data only and :mod:`rotator.report` can import them without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rotator.errors import ExitCode
from rotator.manifest import SecretPolicy

__all__ = ["COUNTS", "SCHEMA_VERSION", "STATUSES", "Activity", "AuditCheck", "Report", "SecretReport"]

STATUSES = ("unknown", "failed", "overdue", "due_soon", "compliant", "missing", "unmanaged")
SCHEMA_VERSION = 1
COUNTS = ("created", "rotations", "rollbacks", "revocations", "failures", "retirements", "notices")


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


def _seconds(delta: timedelta | None) -> int | None:
    return None if delta is None else int(delta.total_seconds())


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
