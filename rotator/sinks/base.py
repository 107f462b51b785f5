"""The sink protocol (one place a rotated value is delivered to), its content, errors and registry.

A sink is told the *desired* content of its target (the current value under ``key`` and, while the previous
value is still in grace, that one under ``previous_key``) and makes the target hold exactly that:

- compare with what the target holds; write only if different (a write is atomic: never a partial target);
- reload / restart the consumers only after a write, or when an earlier reload did not complete;
- raise :class:`SinkError` on failure (``transient`` says whether retrying can help; ``exit_code`` is 4 when
  the target is unreachable or refuses the credentials, else 1). Nothing else may escape ``deliver``.

Built-in and third-party sinks register the same way, in the ``rotator.sinks`` entry-point group
(``file = "rotator.sinks.file:FileSink"``); a sink module must not import heavy clients at import time,
because the manifest loader imports it to validate the sink's configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, WithJsonSchema, WrapValidator

from rotator._plugins import installed, load_plugin
from rotator.errors import ExitCode, RotatorError
from rotator.keyset import SecretValue
from rotator.notify.config import DeliveryPolicy

__all__ = [
    "ENTRY_POINT_GROUP",
    "Content",
    "Delivery",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkSpec",
    "installed_sinks",
    "load_sink_class",
]

ENTRY_POINT_GROUP = "rotator.sinks"
_INSTALL_HINTS = {
    "kubernetes": "pip install 'rotator[kubernetes]'  (or: pip install -e providers/kubernetes)",
}
KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class SinkError(RotatorError):
    """Delivery to one sink failed; the message names the secret and the target, never a value."""

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = True,
                 exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient
        self.exit_code = exit_code


class SinkConfig(BaseModel):
    """Fields every sink shares; a sink's ``config_model`` subclasses this."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: str
    key: str = Field(pattern=KEY_PATTERN, max_length=253)
    previous_key: str | None = Field(default=None, pattern=KEY_PATTERN, max_length=253)
    retry: DeliveryPolicy = DeliveryPolicy(attempts=3, initial=0.5, max=5.0)

    @property
    def previous_name(self) -> str:
        """Where the previous value goes during grace: ``previous_key``, else ``<key>_PREVIOUS``."""
        return self.previous_key or f"{self.key}_PREVIOUS"

    def target_config(self) -> dict[str, Any]:
        """The fields that describe the target (everything but the keys): equal for sinks that share it."""
        return self.model_dump(exclude={"key", "previous_key"})


@dataclass(frozen=True, slots=True)
class Content:
    """What a target should hold: key -> value, plus a value-free fingerprint (key -> version id)."""

    values: Mapping[str, SecretValue]
    versions: Mapping[str, str]
    secrets: tuple[str, ...] = ()
    managed: frozenset[str] = frozenset()  # keys rotator owns at the target: absent from values = remove

    @property
    def fingerprint(self) -> str:
        """``API_KEY=5f0c1a2b...,API_KEY_PREVIOUS=...``: identifies the content without revealing it."""
        return ",".join(f"{k}={self.versions[k]}" for k in sorted(self.versions))

    def __repr__(self) -> str:
        return f"Content(keys={sorted(self.values)}, secrets={list(self.secrets)})"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What one ``deliver`` call did. ``wrote`` False and no reloads: the target already matched."""

    target: str
    wrote: bool
    reloaded: tuple[str, ...] = ()
    skipped: tuple[str, ...] = field(default=())  # consumers deliberately not restarted, with the reason

    @property
    def changed(self) -> bool:
        return self.wrote or bool(self.reloaded)

    def describe(self) -> str:
        parts = ["written" if self.wrote else "unchanged"]
        if self.reloaded:
            parts.append("reloaded " + ", ".join(self.reloaded))
        parts.extend(self.skipped)
        return f"{self.target}: " + "; ".join(parts)


@runtime_checkable
class Sink(Protocol):
    """One delivery target. Constructed as ``Cls(config=..., base_dir=...)`` without touching the target."""

    type_name: ClassVar[str]
    config_model: ClassVar[type[SinkConfig]]

    @property
    def target(self) -> str:
        """A value-free name for logs, events and metrics (``file:/run/app.env``); equal targets share one."""

    def deliver(self, content: Content) -> Delivery:
        """Make the target hold exactly ``content``; reload only after a write. Raises only SinkError."""

    def close(self) -> None:
        """Release connections."""


def installed_sinks() -> dict[str, EntryPoint]:
    """Sink type names that are installed, mapped to their (not yet loaded) entry points."""
    return installed(ENTRY_POINT_GROUP)


def load_sink_class(type_name: str) -> type[Sink]:
    """Import the sink class registered as ``type_name``; a clear error names what is installed."""
    cls: type[Sink] = load_plugin(ENTRY_POINT_GROUP, type_name, "sink", hints=_INSTALL_HINTS,
                                  attrs=("config_model",), error=ValueError)
    return cls


def _validate_sink(value: Any, handler: ValidatorFunctionWrapHandler) -> SinkConfig:
    """Validate one ``sinks:`` entry with the config model of its ``type`` (errors keep their location)."""
    del handler
    if isinstance(value, SinkConfig):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise ValueError(f"a sink is a mapping with a 'type' (one of: {', '.join(sorted(installed_sinks()))})")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", value["type"]):
        raise ValueError(f"sink type '{value['type']}' is not a valid name")
    config = load_sink_class(value["type"]).config_model.model_validate(value)
    return config


SinkSpec = Annotated[
    SinkConfig,
    WrapValidator(_validate_sink),
    WithJsonSchema({"type": "object", "required": ["type", "key"],
                    "properties": {"type": {"type": "string"}, "key": {"type": "string"}},
                    "description": "where the value is delivered: file, kubernetes, or an installed sink"}),
]


def build_sink(config: SinkConfig, base_dir: Path) -> Sink:
    """The sink object for a validated config."""
    cls = load_sink_class(config.type)
    return cls(config=config, base_dir=base_dir)  # type: ignore[call-arg]
