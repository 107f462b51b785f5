"""Markdown rendering of :class:`rotator.report.Report` (GitHub tables), and the display helpers the HTML
renderer shares: times in UTC, durations, status labels, the verdict line."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from rotator.report import COUNTS, Activity, AuditCheck, Report, SecretReport
from rotator.schedule import format_duration

__all__ = ["audit_text", "event_label", "fmt_duration", "fmt_time", "iter_active", "policy_cells",
           "render_markdown", "short", "status_label", "verdict"]


def fmt_time(moment: datetime | None) -> str:
    """``2025-03-01 03:00:00Z`` (UTC), or ``-``."""
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def fmt_duration(delta: timedelta | None) -> str:
    return "-" if delta is None else format_duration(delta)


def short(version: str | None) -> str:
    """A version id shortened like the other commands print it."""
    return (version or "-")[:8]


def policy_cells(secret: SecretReport) -> tuple[str, str, str]:
    """Schedule, grace and notice lead times as people read them."""
    p = secret.policy
    return p.schedule.describe(), format_duration(p.grace), ", ".join(map(format_duration, p.notices)) or "-"


def event_label(activity: Activity) -> str:
    """``created``, ``rotated``, ``rotation failed``, ``rolled back``, ``revoked``."""
    if activity.initial:
        return "created"
    return {"rotation.succeeded": "rotated", "rotation.failed": "rotation failed",
            "rotation.rolled_back": "rolled back", "key.revoked": "revoked (incident)"}.get(activity.event,
                                                                                          activity.event)


def verdict(report: Report) -> str:
    """One line: compliant or not, and why; with the exit code."""
    counts, code = report.counts(), int(report.exit_code())
    problems = [f"{counts[s]} {s.replace('_', ' ')}" for s in ("overdue", "failed", "unknown", "due_soon") if counts[s]]
    if not report.audit.ok:
        problems.append("audit chain NOT verified")
    head = "NOT COMPLIANT" if code else "COMPLIANT"
    return f"{head}: {', '.join(problems) or f'all {len(report.secrets)} secrets within policy'} (exit {code})"


def audit_text(audit: AuditCheck) -> str:
    """The chain check in one sentence."""
    if audit.ok:
        note = "" if audit.anchored else "; the oldest kept record continues a chain whose start retention removed"
        return f"verified: {audit.records} records, chain intact{note}"
    return f"NOT verified: {audit.error} ({audit.records} records checked before the problem)"


def _md(text: str | None) -> str:
    """A Markdown table cell: no HTML, no column breaks, one line."""
    value = (text or "-").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or "-"


def _md_table(columns: list[str], rows: Iterable[Iterable[str | None]]) -> list[str]:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return [*out, ""]


def render_markdown(report: Report) -> str:
    """GitHub-flavoured Markdown: a header, the secrets table, the audit check, then activity per secret."""
    days = format_duration(report.generated_at - report.since)
    lines = ["# Key rotation compliance report", ""]
    lines += _md_table(["", ""], [
        ["generated", fmt_time(report.generated_at)], ["manifest", str(report.manifest)],
        ["period", f"{fmt_time(report.since)} to {fmt_time(report.generated_at)} ({days})"],
        ["result", verdict(report)], ["audit chain", audit_text(report.audit)],
    ])
    lines += ["## Secrets", ""]
    lines += _md_table(
        ["secret", "provider", "kind", "schedule", "grace", "notice", "last rotation", "age", "due", "status",
         "detail"],
        [[s.name, s.policy.provider, s.policy.spec.kind, *policy_cells(s), fmt_time(s.last_rotation),
          fmt_duration(s.age), fmt_time(s.due_at), status_label(s), s.detail] for s in report.secrets])
    lines += ["## Audit log integrity", ""]
    lines += _md_table(["check", "value"], [
        ["file", str(report.audit.path)], ["result", "OK" if report.audit.ok else "BROKEN"],
        ["records", str(report.audit.records)], ["chain head (SHA-256)", report.audit.head or "-"],
        ["detail", audit_text(report.audit)]])
    lines += [f"## Activity since {fmt_time(report.since)}", ""]
    lines += _md_table(["secret", *COUNTS, "notifications ok", "notifications failed"],
                       [[s.name, *(str(s.counts[c]) for c in COUNTS), str(s.notifications["ok"]),
                         str(s.notifications["failed"])] for s in report.secrets])
    for secret in iter_active(report):
        lines += [f"### {_md(secret.name)}", ""]
        lines += _md_table(["time", "event", "actor", "reason", "new version", "old version"],
                           [[fmt_time(a.at), event_label(a), a.actor, a.reason, short(a.new_version),
                             short(a.old_version)] for a in secret.activity])
    lines += ["Statuses: *compliant* within policy; *due soon* inside the longest notice lead; *overdue* past "
              "the rotation deadline; *failed* the last rotation attempt failed; *unknown* the backend could not "
              "be read. Times are UTC; no secret value appears in this report.", ""]
    return "\n".join(lines)


def status_label(secret: SecretReport) -> str:
    """``due soon``, ``unknown (backend error)``, ``failed (overdue)``: the status as people read it."""
    if secret.status == "unknown":
        return "unknown (backend error)"
    label = secret.status.replace("_", " ")
    return f"{label} (overdue)" if secret.status == "failed" and secret.overdue else label


def iter_active(report: Report) -> Iterable[SecretReport]:
    """Secrets with at least one listed activity in the period."""
    return (s for s in report.secrets if s.activity)
