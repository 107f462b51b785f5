"""YAML loading that remembers where every value came from, and ``${VAR}`` interpolation.

Parsing uses libyaml's composer when available (fast for 10,000-secret manifests), then one Python walk
builds plain dicts/lists and a map from key path (``("secrets", 1, "grace")``) to ``(line, column)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import yaml

from rotator.errors import ManifestError

__all__ = ["Positions", "load_yaml"]

Path = tuple[str | int, ...]
Positions = dict[Path, tuple[int, int]]

try:
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing: the pure-Python loader works, only slower
    _Loader = yaml.SafeLoader

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?")
_BOOL = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}
_NULL = {"", "~", "null"}


def load_yaml(text: str, filename: str, env: Mapping[str, str] | None = None) -> tuple[Any, Positions]:
    """Parse ``text`` into plain Python data plus the position of every key and item.

    ``${VAR}`` (or ``${VAR:-default}``) in string scalars is replaced from ``env``; a missing variable is a
    :class:`ManifestError` naming it and where it is used.
    """
    environ = os.environ if env is None else env
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        raise ManifestError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{filename}: invalid YAML: {exc}") from None
    positions: Positions = {}
    if node is None:
        return None, positions
    return _build(node, (), positions, filename, environ), positions


def _build(node: yaml.Node, path: Path, positions: Positions, filename: str, env: Mapping[str, str]) -> Any:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ManifestError(f"{_where(filename, key_node)}: mapping keys must be plain strings")
            key = str(key_node.value)
            if key == "<<":
                raise ManifestError(f"{_where(filename, key_node)}: YAML merge keys (<<) are not supported")
            if key in out:
                raise ManifestError(f"{_where(filename, key_node)}: {_dotted((*path, key))}: duplicate key")
            out[key] = _build(value_node, (*path, key), positions, filename, env)
            positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), positions, filename, env) for i, item in enumerate(node.value)]
    return _scalar(node, path, filename, env)


def _scalar(node: yaml.Node, path: Path, filename: str, env: Mapping[str, str]) -> Any:
    value: str = node.value
    tag = node.tag
    if getattr(node, "style", None) in ("'", '"', "|", ">") or tag == "tag:yaml.org,2002:str":
        return _interpolate(value, node, path, filename, env)
    plain = value.strip()
    lowered = plain.lower()
    if tag == "tag:yaml.org,2002:null" or lowered in _NULL:
        return None
    if lowered in _BOOL:
        return _BOOL[lowered]
    if _INT.fullmatch(plain):
        return int(plain.replace("_", ""))
    if _FLOAT.fullmatch(plain) and any(c in plain for c in ".eE"):
        return float(plain.replace("_", ""))
    return _interpolate(value, node, path, filename, env)


def _interpolate(value: str, node: yaml.Node, path: Path, filename: str, env: Mapping[str, str]) -> str:
    if "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ManifestError(
            f"{_where(filename, node)}: {_dotted(path)}: environment variable {name} is not set",
            hint=f"export {name}=... or use ${{{name}:-default}}",
        )

    return _ENV.sub(substitute, value)


def _where(filename: str, node: yaml.Node) -> str:
    return f"{filename}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top)"
