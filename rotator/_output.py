"""Rendering command results: rich tables on a terminal, plain aligned text in pipes, stable JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rotator.schedule import format_duration

__all__ = ["ago", "emit_json", "is_tty", "print_table", "when"]


def is_tty(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def emit_json(data: Any) -> None:
    """Stable JSON on stdout (sorted keys, ISO times)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=_default) + "\n")


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return format_duration(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table: rich on a TTY, tab-free aligned columns otherwise (grep/awk friendly)."""
    if is_tty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console().print(table)
        return
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")


def when(moment: datetime | None, now: datetime) -> str:
    """``2026-11-23 03:00Z (in 4d)`` style: absolute and relative."""
    if moment is None:
        return "-"
    delta = moment - now
    rel = f"in {format_duration(delta)}" if delta >= timedelta(0) else f"{format_duration(-delta)} ago"
    return f"{moment:%Y-%m-%d %H:%M}Z ({rel})"


def ago(moment: datetime | None, now: datetime) -> str:
    return "-" if moment is None else format_duration(max(now - moment, timedelta(0)))
