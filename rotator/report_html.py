"""HTML rendering of :class:`rotator.report_model.Report` from ``templates/report.html.j2``: one
self-contained file for auditors.

Everything is inline: the CSS in a ``<style>`` element, the age-vs-policy chart as inline SVG. There are no
scripts, no external stylesheets, fonts or images, and a Content-Security-Policy that forbids loading any,
so the file renders the same offline, in a mail attachment or in an evidence archive. The template is
autoescaped, so every text from the manifest or the audit log is escaped. The chart's geometry is computed
here (:func:`chart`); the template only places it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rotator.report_format import environment, fmt_duration, fmt_time
from rotator.report_model import COUNTS, Report, SecretReport

__all__ = ["COLOURS", "chart", "render_html"]

COLOURS = {"compliant": "#2e7d32", "due_soon": "#e6a700", "overdue": "#c62828", "failed": "#6a1b9a",
           "unknown": "#616161", "missing": "#9e9e9e", "unmanaged": "#9e9e9e"}
_LABEL_W, _BAR_W, _ROW_H = 220, 440, 24
_MAX_SCALE = 2.0  # the chart shows up to twice the interval; older keys are drawn clipped with a marker


@dataclass(frozen=True, slots=True)
class ChartRow:
    """One secret's bar: ``ratio`` is None when it has no age or interval to compare."""

    y: int
    secret: SecretReport
    label: str
    ratio: float | None = None
    bar: float = 0.0  # drawn width in px
    notice_x: float | None = None  # where the notice period starts


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    scale: float  # px per 100% of the interval
    label_w: int
    bar_w: int
    rows: tuple[ChartRow, ...]

    @property
    def limit(self) -> float:
        return self.label_w + self.scale


def chart(secrets: list[SecretReport]) -> Chart:
    """Per secret, its age as a bar against the interval (the dark line = 100% of the policy)."""
    scale = _BAR_W / _MAX_SCALE
    rows = []
    for i, secret in enumerate(secrets):
        y, label = 6 + i * _ROW_H, _clip(secret.name, 32)
        interval = secret.interval
        if secret.age is None or interval is None or interval.total_seconds() <= 0:
            rows.append(ChartRow(y, secret, label))
            continue
        ratio = secret.age / interval
        notice_x = None
        if secret.policy.notices:
            notice_x = _LABEL_W + max(1 - secret.policy.notices[0] / interval, 0) * scale
        rows.append(ChartRow(y, secret, label, ratio, max(min(ratio, _MAX_SCALE) * scale, 1), notice_x))
    return Chart(_LABEL_W + _BAR_W + 170, _ROW_H * max(len(secrets), 1) + 28, scale, _LABEL_W, _BAR_W,
                 tuple(rows))


def render_html(report: Report) -> str:
    """The whole report as one HTML document (UTF-8)."""
    context: dict[str, Any] = {
        "report": report, "counts": COUNTS, "colours": COLOURS, "chart": chart(report.secrets),
        "max_scale": _MAX_SCALE, "bad": bool(int(report.exit_code())),
        "period": f"{fmt_time(report.since)} to {fmt_time(report.generated_at)} "
                  f"({fmt_duration(report.generated_at - report.since)})",
    }
    return environment().get_template("report.html.j2").render(context)


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "\u2026"
