"""YAML loading that remembers where every value came from, and ``${VAR}`` interpolation.

Parsing uses libyaml's composer when available (fast for 10,000-secret manifests), then one Python walk
builds plain dicts/lists and a map from key path (``("secrets", 1, "grace")``) to ``(line, column)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from itertools import accumulate
from pathlib import Path as FilePath
from typing import Any

import yaml

from rotator._files import UnsafePath, read_bounded
from rotator.errors import ManifestError

__all__ = ["Positions", "load_yaml", "read_manifest", "without_env_values"]

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


def read_manifest(file: FilePath, limit: int) -> str:
    """The text of a manifest file: a regular file (a FIFO or device is refused before reading, so nothing
    hangs) of at most ``limit`` bytes, in UTF-8; every problem is a one-line ManifestError."""
    try:
        return read_bounded(file, limit, "manifest").decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{file}: manifest not found (looked for {file.resolve()})",
                            hint="pass -f PATH or set ROTATOR_MANIFEST") from None
    except UnsafePath as exc:
        raise ManifestError(exc.message, hint="pass the path of a rotation.yaml file") from None
    except UnicodeDecodeError as exc:
        before = exc.object[: exc.start].decode("utf-8", "replace")
        raise ManifestError(f"{_at(file.name, before)}: not UTF-8 (byte {exc.object[exc.start]:#04x})") from None
    except OSError as exc:
        raise ManifestError(f"{file}: cannot read manifest: {exc}") from None


def load_yaml(text: str, filename: str, env: Mapping[str, str] | None = None) -> tuple[Any, Positions]:
    """Parse ``text`` into plain Python data plus the position of every key and item.

    ``${VAR}`` (or ``${VAR:-default}``) in string scalars is replaced from ``env``; a missing variable is a
    :class:`ManifestError` naming it and where it is used.
    """
    environ = os.environ if env is None else env
    # libyaml's composer recurses in C and crashes the process on very deep flow nesting ("[[[[..."):
    # such text goes to the pure-Python composer, which raises RecursionError instead
    loader = _Loader if _flow_depth(text) <= _C_DEPTH_LIMIT else yaml.SafeLoader
    try:
        node = yaml.compose(text, Loader=loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else f"{filename}:1:1"
        raise ManifestError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.reader.ReaderError as exc:  # a control character; its position is a UTF-8 byte offset
        before = text.encode("utf-8", "surrogatepass")[: exc.position].decode("utf-8", "replace")
        raise ManifestError(f"{_at(filename, before)}: invalid YAML: unacceptable character "
                            f"#x{exc.character:04x}: {exc.reason}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{filename}:1:1: invalid YAML: {exc}") from None
    except UnicodeEncodeError as exc:  # a lone surrogate (libyaml encodes the text to UTF-8 first)
        raise ManifestError(f"{_at(filename, text[: exc.start])}: invalid YAML: "
                            f"unacceptable character #x{ord(text[exc.start]):04x}") from None
    except RecursionError:
        raise ManifestError(f"{filename}:1:1: invalid YAML: nested too deeply") from None
    positions: Positions = {}
    if node is None:
        return None, positions
    return _Builder(positions, filename, environ).build(node, ()), positions


_ALIAS_SLACK = 10_000  # aliases may add as many nodes as the document holds, plus this many
_MAX_INT_DIGITS = 4300  # Python's own limit for int(str); a longer integer is refused with its position
_C_DEPTH_LIMIT = 1000  # libyaml copes with 20,000 levels; real manifests use fewer than 10
_MAX_DEPTH = 100
_BRACKETS = re.compile(r"[\[\]{}]")


def _flow_depth(text: str) -> int:
    """An upper bound of the flow-collection nesting of ``text`` (brackets inside strings count too)."""
    if text.count("[") + text.count("{") <= _C_DEPTH_LIMIT:
        return 0
    return max(accumulate(1 if b in "[{" else -1 for b in _BRACKETS.findall(text)), default=0)


def _at(filename: str, before: str) -> str:
    """``file:line:col`` of the character that follows ``before``."""
    line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
    return f"{filename}:{line}:{column}"


class _Builder:
    """One walk over the composed node graph; aliases are expanded, within a budget (no "billion laughs").

    The budget is measured, not guessed from the text size: every node met a second time was reached through
    an alias, and those repeats may not outnumber the distinct nodes seen so far by more than
    :data:`_ALIAS_SLACK`. So aliases can at most about double a document, and a hostile one stops after a
    few thousand nodes whatever its size.
    """

    def __init__(self, positions: Positions, filename: str, env: Mapping[str, str]) -> None:
        self.positions, self.filename, self.env = positions, filename, env
        self.active: set[int] = set()  # collection nodes being built: meeting one again is a recursive alias
        self.seen: set[int] = set()
        self.repeats = 0

    def build(self, node: yaml.Node, path: Path) -> Any:
        if id(node) in self.seen:
            self.repeats += 1
            if self.repeats > len(self.seen) + _ALIAS_SLACK:
                raise ManifestError(
                    f"{_where(self.filename, node)}: {_dotted(path)}: aliases expand to too much (at most as "
                    f"many values as the document writes out, plus {_ALIAS_SLACK:,})")
        else:
            self.seen.add(id(node))
        if len(path) > _MAX_DEPTH:
            raise ManifestError(f"{_where(self.filename, node)}: nested more than {_MAX_DEPTH} levels deep")
        self.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return _scalar(node, path, self.filename, self.env)
        if id(node) in self.active:
            raise ManifestError(f"{_where(self.filename, node)}: {_dotted(path)}: recursive alias")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        filename = self.filename
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ManifestError(f"{_where(filename, key_node)}: mapping keys must be plain strings")
            key = str(key_node.value)
            if key == "<<":
                raise ManifestError(f"{_where(filename, key_node)}: YAML merge keys (<<) are not supported")
            if key in out:
                raise ManifestError(f"{_where(filename, key_node)}: {_dotted((*path, key))}: duplicate key")
            out[key] = self.build(value_node, (*path, key))
            self.positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return out


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
        digits = plain.replace("_", "")
        if len(digits.lstrip("+-")) > _MAX_INT_DIGITS:
            raise ManifestError(f"{_where(filename, node)}: {_dotted(path)}: integer has {len(digits):,} digits "
                                f"(at most {_MAX_INT_DIGITS:,})")
        return int(digits)
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


def without_env_values(exc: ManifestError, text: str, env: Mapping[str, str]) -> ManifestError:
    """``exc`` with every value ``text`` takes from ``env`` (4+ characters) masked: it may be a credential."""
    values = {env[m[1]] for m in _ENV.finditer(text) if m[1] in env} if "${" in text else set()
    where, sep, message = exc.message.partition(": ")  # keep `file:line:col` intact
    for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
        message = message.replace(value, "**redacted**")
    return ManifestError(where + sep + message, hint=exc.hint) if values else exc


def _where(filename: str, node: yaml.Node) -> str:
    return f"{filename}:{node.start_mark.line + 1}:{node.start_mark.column + 1}"


def _dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top)"
