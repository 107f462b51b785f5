"""Markdown rendering of :class:`rotator.report_model.Report` (GitHub tables) from
``templates/report.md.j2``; every cell goes through the ``md`` filter (:func:`rotator.report_format.md_cell`)."""

from __future__ import annotations

from rotator.report_format import environment, fmt_duration
from rotator.report_model import COUNTS, Report

__all__ = ["render_markdown"]


def render_markdown(report: Report) -> str:
    """GitHub-flavoured Markdown: a header, the secrets table, the audit check, then activity per secret."""
    return environment().get_template("report.md.j2").render(
        report=report, counts=COUNTS, period=fmt_duration(report.generated_at - report.since))
