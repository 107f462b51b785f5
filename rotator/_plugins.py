"""Finding plugin classes (stores, targets, sinks) in their entry-point groups, imported only when used."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = ["installed", "load_plugin"]


def installed(group: str) -> dict[str, EntryPoint]:
    """Type names registered in ``group``, mapped to their (not yet loaded) entry points."""
    return {ep.name: ep for ep in entry_points(group=group)}


def load_plugin(group: str, type_name: str, kind: str, *, hints: Mapping[str, str], attrs: tuple[str, ...],
                error: type[Exception]) -> Any:
    """Import the class registered as ``type_name`` in ``group``; ``error`` names what is installed, or that the
    entry point is not a ``kind`` class (it lacks one of ``attrs``)."""
    found = installed(group)
    if type_name not in found:
        names = ", ".join(sorted(found)) or "none"
        hint = hints.get(type_name, f"install the package that provides the '{type_name}' {kind}")
        raise error(f"unknown {kind} type '{type_name}' (installed: {names}); to add it: {hint}")
    cls = found[type_name].load()
    if not isinstance(cls, type) or not all(hasattr(cls, attr) for attr in attrs):
        raise error(f"entry point '{type_name}' in {group} is not a {kind} class")
    return cls
