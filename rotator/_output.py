"""Rendering command results: rich tables on a terminal, plain aligned text in pipes, stable JSON and YAML.

Results go to stdout; everything else (logs, progress, prompts, errors) to stderr. The global options
``--color``, ``-q`` and each command's ``--no-headers`` land in :data:`SETTINGS` once per process.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from rotator.schedule import format_duration

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["FORMATS", "SETTINGS", "ago", "colors_wanted", "console", "emit", "emit_json", "is_tty",
           "print_table", "stamp", "when"]

FORMATS = ("table", "json", "yaml")
Color = Literal["auto", "always", "never"]


@dataclass
class Settings:
    """How this process renders: colors, quiet mode, and whether tables print their header."""

    color: Color = "auto"
    quiet: bool = False
    no_headers: bool = False


SETTINGS = Settings()


def is_tty(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def colors_wanted(stream: Any = None) -> bool:
    """``--color always|never`` wins; ``auto`` colors a terminal unless ``NO_COLOR`` is set (no-color.org)."""
    if SETTINGS.color != "auto":
        return SETTINGS.color == "always"
    return is_tty(stream or sys.stderr) and not os.environ.get("NO_COLOR")


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr) that follows ``--color`` and ``NO_COLOR``."""
    from rich.console import Console

    no_color = {"always": False, "never": True}.get(SETTINGS.color)  # None: rich reads NO_COLOR itself
    return Console(stderr=stderr, no_color=no_color, highlight=False)


def emit(data: Any, output: str) -> None:
    """``data`` on stdout as stable JSON (sorted keys, ISO times) or the same structure as YAML."""
    text = json.dumps(data, indent=2, sort_keys=True, default=_default)
    if output == "yaml":
        import yaml

        text = yaml.safe_dump(json.loads(text), sort_keys=True, default_flow_style=False,
                              allow_unicode=True).rstrip("\n")
    sys.stdout.write(text + "\n")


def emit_json(data: Any) -> None:
    """Stable JSON on stdout (sorted keys, ISO times)."""
    emit(data, "json")


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return format_duration(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
                wrap: Collection[str] = (), prose: Collection[str] = ()) -> None:
    """A table: rich on a TTY, tab-free aligned columns otherwise (grep/awk friendly).

    Names, versions and times are never broken. On a narrow terminal the columns named in ``wrap`` wrap
    between words, and the ``prose`` columns (notes, reasons) may also fold a long word; nothing else
    wraps. When even that cannot fit, the plain form is printed and the terminal wraps whole lines, as
    ``kubectl get`` does. ``--no-headers`` drops the title and the header row in both forms.
    """
    headers = not SETTINGS.no_headers
    wrap = {*wrap, *prose}
    if is_tty():
        out = console()
        widths = _fit(columns, rows, wrap, prose, headers, out.width)
        if widths is not None:
            _rich_table(out, title if headers else None, columns, rows, prose, widths)
            return
    widths = [max([len(c) if headers else 0, *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()] if headers else []
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if lines:
        sys.stdout.write("\n".join(lines) + "\n")


_PROSE_FLOOR = 6
_GAP = 2  # spaces between columns


def _fit(columns: Sequence[str], rows: Sequence[Sequence[str]], wrap: Collection[str], prose: Collection[str],
         headers: bool, width: int) -> list[int] | None:
    """Column widths that fit ``width`` without breaking a word outside ``prose``; None if impossible.

    Every column starts at its full width. While too wide, prose (then another wrapping column) with the
    most room above its longest word gives up a character; only then does prose fold words (down to 6).
    """
    cells = [[row[i] for row in rows] + ([column.upper()] if headers else []) for i, column in enumerate(columns)]
    full = [max([1, *map(len, c)]) for c in cells]
    words = [max([len(col) if headers else 1, *(len(w) for cell in c for w in cell.split())]) if col in wrap
             else full[i] for i, (col, c) in enumerate(zip(columns, cells, strict=True))]  # headers never wrap
    hard = [min(w, _PROSE_FLOOR) if col in prose else w for col, w in zip(columns, words, strict=True)]
    budget = width - _GAP * (len(columns) - 1)
    if sum(hard) > budget:
        return None
    widths = list(full)
    for floors in (words, hard):
        while sum(widths) > budget and any(w > f for w, f in zip(widths, floors, strict=True)):
            i = max(range(len(widths)), key=lambda k: (widths[k] > floors[k] and columns[k] in prose,
                                                        widths[k] - floors[k], -k))
            widths[i] -= 1
    return widths


def _rich_table(out: Console, title: str | None, columns: Sequence[str], rows: Sequence[Sequence[str]],
                prose: Collection[str], widths: Sequence[int]) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold", box=None, pad_edge=False,
                  show_header=title is not None, header_style="bold")
    for column, width in zip(columns, widths, strict=True):
        table.add_column(column.upper(), width=width, overflow="fold" if column in prose else "ellipsis")
    for row in rows:
        table.add_row(*row)
    out.print(table)


def when(moment: datetime | None, now: datetime) -> str:
    """``2026-11-23 03:00Z (in 4d)`` style: absolute and relative."""
    if moment is None:
        return "-"
    delta = moment - now
    rel = f"in {format_duration(delta)}" if delta >= timedelta(0) else f"{format_duration(-delta)} ago"
    return f"{moment:%Y-%m-%d %H:%M}Z ({rel})"


def stamp(moment: datetime | str | None) -> str:
    """``2026-11-23 03:00:12Z``: an absolute UTC time as every table prints it (ISO text is parsed)."""
    if moment is None or moment == "":
        return "-"
    if isinstance(moment, str):
        try:
            parsed = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment
        moment = parsed
    if moment.utcoffset():
        from datetime import UTC

        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"


def ago(moment: datetime | None, now: datetime) -> str:
    return "-" if moment is None else format_duration(max(now - moment, timedelta(0)))
