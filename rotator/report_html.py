"""HTML rendering of :class:`rotator.report.Report`: one self-contained file for auditors.

Everything is inline: the CSS in a ``<style>`` element, the age-vs-policy chart as inline SVG. There are no
scripts, no external stylesheets, fonts or images, and a Content-Security-Policy that forbids loading any,
so the file renders the same offline, in a mail attachment or in an evidence archive. Every text from the
manifest or the audit log is escaped.
"""

from __future__ import annotations

from html import escape

from rotator.report import COUNTS, Report, SecretReport
from rotator.report_md import (
    audit_text,
    event_label,
    fmt_duration,
    fmt_time,
    iter_active,
    policy_cells,
    short,
    status_label,
    verdict,
)

__all__ = ["render_html"]

COLOURS = {"compliant": "#2e7d32", "due_soon": "#e6a700", "overdue": "#c62828", "failed": "#6a1b9a",
           "unknown": "#616161", "missing": "#9e9e9e", "unmanaged": "#9e9e9e"}
_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem;color:#1b1b1b}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem}
th,td{border:1px solid #d0d0d0;padding:.3rem .55rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{font-size:.9em;word-break:break-all}
.status{font-weight:600;white-space:nowrap}.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}
.verdict{font-size:1.1rem}.legend span{margin-right:1rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
svg text{font:12px system-ui,sans-serif}
"""
_LABEL_W, _BAR_W, _ROW_H = 220, 440, 24
_MAX_SCALE = 2.0  # the chart shows up to twice the interval; older keys are drawn clipped with a marker


def render_html(report: Report) -> str:
    """The whole report as one HTML document (UTF-8)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="referrer" content="no-referrer">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Key rotation compliance report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Key rotation compliance report</h1>",
        _summary(report),
        "<h2>Secrets</h2>",
        _secrets_table(report),
        "<h2>Age against policy</h2>",
        _chart(report.secrets),
        _legend(),
        "<h2>Audit log integrity</h2>",
        _audit(report),
        f"<h2>Activity since {_e(fmt_time(report.since))}</h2>",
        _activity(report),
        "<p>Times are UTC. No secret value appears in this report.</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _e(text: object) -> str:
    return escape("-" if text is None or text == "" else str(text), quote=True)


def _table(columns: list[str], rows: list[list[str]], table_id: str) -> str:
    """``rows`` hold already-escaped cell HTML."""
    head = "".join(f"<th scope=\"col\">{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _summary(report: Report) -> str:
    code = int(report.exit_code())
    period = (f"{fmt_time(report.since)} to {fmt_time(report.generated_at)} "
              f"({fmt_duration(report.generated_at - report.since)})")
    rows = [["generated", _e(fmt_time(report.generated_at))], ["manifest", f"<code>{_e(report.manifest)}</code>"],
            ["period", _e(period)], ["audit chain", _e(audit_text(report.audit))]]
    cells = "".join(f"<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (f'<p class="verdict {"bad" if code else "ok"}">{_e(verdict(report))}</p>'
            f'<table id="summary"><tbody>{cells}</tbody></table>')


def _status(secret: SecretReport) -> str:
    colour = COLOURS.get(secret.status, "#616161")
    return f'<span class="status" style="color:{colour}">{_e(status_label(secret))}</span>'


def _secrets_table(report: Report) -> str:
    columns = ["secret", "provider", "kind", "schedule", "grace", "notice", "last rotation", "age", "due",
               "status", "detail"]
    rows = [[f"<code>{_e(s.name)}</code>", _e(s.policy.provider), _e(s.policy.spec.kind),
             *(_e(c) for c in policy_cells(s)), _e(fmt_time(s.last_rotation)), _e(fmt_duration(s.age)),
             _e(fmt_time(s.due_at)), _status(s), _e(s.detail)] for s in report.secrets]
    return _table(columns, rows, "secrets")


def _chart(secrets: list[SecretReport]) -> str:
    """Inline SVG: per secret, its age as a bar against the interval (the dark line = 100% of the policy)."""
    height = _ROW_H * max(len(secrets), 1) + 28
    width = _LABEL_W + _BAR_W + 170
    scale = _BAR_W / _MAX_SCALE
    out = [f'<svg role="img" aria-labelledby="chart-title" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}"><title id="chart-title">Age of the current value of each secret '
           "against its rotation interval</title>"]
    for i, secret in enumerate(secrets):
        y = 6 + i * _ROW_H
        out.append(f'<text x="0" y="{y + 14}">{_e(_clip(secret.name, 32))}</text>')
        interval = secret.interval
        if secret.age is None or interval is None or interval.total_seconds() <= 0:
            out.append(f'<text x="{_LABEL_W}" y="{y + 14}" fill="#616161">{_e(status_label(secret))}: no age '
                       "to compare</text>")
            continue
        ratio = secret.age / interval
        drawn = min(ratio, _MAX_SCALE)
        colour = COLOURS.get(secret.status, "#616161")
        out.append(f'<rect x="{_LABEL_W}" y="{y + 3}" width="{scale:.1f}" height="14" fill="#ececec"/>')
        out.append(f'<rect x="{_LABEL_W}" y="{y + 3}" width="{max(drawn * scale, 1):.1f}" height="14" '
                   f'fill="{colour}"><title>{_e(secret.name)}: age {_e(fmt_duration(secret.age))} of '
                   f"{_e(fmt_duration(interval))} ({ratio:.0%})</title></rect>")
        if secret.policy.notices:
            soon = max(1 - secret.policy.notices[0] / interval, 0)
            x = _LABEL_W + soon * scale
            out.append(f'<line x1="{x:.1f}" y1="{y + 1}" x2="{x:.1f}" y2="{y + 19}" stroke="#e6a700" '
                       'stroke-dasharray="3,2"/>')
        if ratio > _MAX_SCALE:
            out.append(f'<text x="{_LABEL_W + _BAR_W - 12}" y="{y + 15}" fill="#fff">&#187;</text>')
        out.append(f'<text x="{_LABEL_W + _BAR_W + 8}" y="{y + 14}">{_e(fmt_duration(secret.age))} / '
                   f"{_e(fmt_duration(interval))} ({ratio:.0%})</text>")
    limit = _LABEL_W + scale
    out.append(f'<line x1="{limit:.1f}" y1="0" x2="{limit:.1f}" y2="{height - 22}" stroke="#1b1b1b" '
               'stroke-width="2"/>')
    out.append(f'<text x="{limit - 40:.1f}" y="{height - 6}">interval (100%)</text>')
    return "\n".join(out) + "</svg>"


def _legend() -> str:
    items = "".join(f'<span><i class="swatch" style="background:{colour}"></i>{_e(status.replace("_", " "))}</span>'
                    for status, colour in COLOURS.items() if status != "unmanaged")
    return (f'<p class="legend">{items}<span>dashed line: start of the notice period</span>'
            "<span>solid line: rotation interval</span></p>")


def _audit(report: Report) -> str:
    audit = report.audit
    result = '<span class="ok">OK</span>' if audit.ok else '<span class="bad">BROKEN</span>'
    rows = [["file", f"<code>{_e(audit.path)}</code>"], ["result", result], ["records", _e(audit.records)],
            ["chain head (SHA-256)", f"<code>{_e(audit.head)}</code>"], ["detail", _e(audit_text(audit))]]
    cells = "".join(f"<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table id="audit"><tbody>{cells}</tbody></table>'


def _activity(report: Report) -> str:
    columns = ["secret", *COUNTS, "notifications ok", "notifications failed"]
    rows = [[f"<code>{_e(s.name)}</code>", *(_e(s.counts[c]) for c in COUNTS), _e(s.notifications["ok"]),
             _e(s.notifications["failed"])] for s in report.secrets]
    out = [_table(columns, rows, "activity")]
    for n, secret in enumerate(iter_active(report)):
        out.append(f"<h3><code>{_e(secret.name)}</code></h3>")
        out.append(_table(["time", "event", "actor", "reason", "new version", "old version"],
                          [[_e(fmt_time(a.at)), _e(event_label(a)), _e(a.actor), _e(a.reason),
                            f"<code>{_e(short(a.new_version))}</code>", f"<code>{_e(short(a.old_version))}</code>"]
                           for a in secret.activity], f"activity-{n + 1}"))
    return "\n".join(out)


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "\u2026"
