"""How the Markdown and HTML reports show things (times in UTC, durations, status labels, the verdict line),
and the Jinja environment their templates (``rotator/templates/``) render in."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cache

import jinja2

from rotator.report_model import Activity, AuditCheck, Report, SecretReport
from rotator.schedule import format_duration

__all__ = ["audit_text", "environment", "event_label", "fmt_duration", "fmt_time", "iter_active", "md_cell",
           "policy_cells", "short", "status_label", "verdict"]


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


def status_label(secret: SecretReport) -> str:
    """``due soon``, ``unknown (backend error)``, ``failed (overdue)``: the status as people read it."""
    if secret.status == "unknown":
        return "unknown (backend error)"
    label = secret.status.replace("_", " ")
    return f"{label} (overdue)" if secret.status == "failed" and secret.overdue else label


def iter_active(report: Report) -> Iterable[SecretReport]:
    """Secrets with at least one listed activity in the period."""
    return (s for s in report.secrets if s.activity)


def md_cell(text: object) -> str:
    """A Markdown table cell: no HTML, no column breaks, one line."""
    value = "-" if text is None or text == "" else str(text)
    value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or "-"


def dash(text: object) -> object:
    """``-`` for an empty cell (None or empty text); anything else unchanged (autoescape still applies)."""
    return "-" if text is None or text == "" else text


@cache
def environment() -> jinja2.Environment:
    """The templates' environment: ``*.html.j2`` autoescaped (every manifest or audit text), Markdown not (its
    cells go through the ``md`` filter instead). Templates are package data, loaded once per process."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("rotator", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined,
    )
    env.filters.update(time=fmt_time, duration=fmt_duration, short=short, status_label=status_label,
                       event_label=event_label, audit_text=audit_text, md=md_cell, dash=dash)
    env.globals.update(policy_cells=policy_cells, verdict=verdict, iter_active=iter_active)
    return env
