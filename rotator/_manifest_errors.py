"""How manifest problems are reported: ``file:line:col: path: why`` from a pydantic error or a key path."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from rotator._yaml import Positions
from rotator.errors import ManifestError

__all__ = ["dotted", "from_validation", "locate", "where"]

_MESSAGES = {
    "missing": "required",
    "extra_forbidden": "unknown key",
}


def from_validation(exc: ValidationError, data: Any, positions: Positions, label: str, known_keys: set[str],
                     prefix: tuple[str | int, ...]) -> ManifestError:
    lines = []
    for error in exc.errors(include_url=False, include_input=True):
        path = locate(data, (*prefix, *error["loc"]), missing=error["type"] == "missing")
        message = _MESSAGES.get(error["type"], error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message += _did_you_mean(path, known_keys)
        elif error["type"] in ("literal_error", "enum"):
            message = _not_one_of(error, path) or message
        lines.append(f"{where(label, positions, path)}: {dotted(path)}: {message}")
    more = f" (and {len(lines) - 1} more problem{'s' if len(lines) > 2 else ''})" if len(lines) > 1 else ""
    return ManifestError(lines[0] + more)


def _did_you_mean(path: tuple[str | int, ...], known_keys: set[str]) -> str:
    key = path[-1] if path else None
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, known_keys, n=1, cutoff=0.75)
    return f" '{key}' (did you mean '{close[0]}'?)" if close else f" '{key}'"


def _not_one_of(error: Any, path: tuple[str | int, ...]) -> str:
    """``unknown kind 'hmca' (did you mean 'hmac'?); one of: api_key, hmac, ...`` for an enum-like field."""
    value, expected = error.get("input"), (error.get("ctx") or {}).get("expected", "")
    choices = re.findall(r"'([^']*)'", str(expected))
    if not isinstance(value, str) or len(value) > 64 or not choices:
        return ""  # not a short string: keep pydantic's wording, which does not echo the input
    field = path[-1] if path and isinstance(path[-1], str) else "value"
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {field} '{value}'{hint}; one of: {', '.join(choices)}"


def locate(data: Any, loc: Sequence[Any], missing: bool = False) -> tuple[str | int, ...]:
    """Turn a pydantic ``loc`` into a real key path: union tags are dropped, a ``missing`` last key is kept."""
    out: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            out.append(part)
        elif missing and i == len(loc) - 1 and isinstance(node, dict):
            out.append(part)  # a required key that is missing
    return tuple(out)


def where(label: str, positions: Positions, path: tuple[str | int, ...]) -> str:
    for cut in range(len(path), -1, -1):
        if path[:cut] in positions:
            line, column = positions[path[:cut]]
            return f"{label}:{line}:{column}"
    return f"{label}:1:1"


def dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"
