"""What one command did to one secret (:class:`Outcome`), and the exit code a list of outcomes maps to."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rotator.errors import ExitCode, RotatorError

__all__ = ["Outcome", "exit_code_for", "summarise"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one secret in one command. ``ok`` False carries the error for the exit code."""

    secret: str
    action: str
    ok: bool = True
    message: str = ""
    new_version: str | None = None
    old_version: str | None = None
    error: RotatorError | None = field(default=None, compare=False)
    consumers: tuple[str, ...] = ()
    # when the secret next needs attention, if the pass ended on a settled decision (the daemon schedules
    # from it instead of reading the keyset again); None: unknown
    next_at: datetime | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"secret": self.secret, "action": self.action, "ok": self.ok,
                               "message": self.message}
        if self.new_version:
            out["new_version"] = self.new_version
        if self.old_version:
            out["old_version"] = self.old_version
        if self.error is not None:
            out["exit_code"] = int(self.error.exit_code)
        if self.consumers:
            out["consumers"] = list(self.consumers)
        return out


def exit_code_for(outcomes: Iterable[Outcome]) -> ExitCode:
    """Backend trouble (4) outranks conflicts (3), which outrank other failures (1)."""
    codes = {o.error.exit_code if o.error is not None else ExitCode.FAILED for o in outcomes if not o.ok}
    for code in (ExitCode.BACKEND, ExitCode.CONFLICT, ExitCode.USAGE, ExitCode.FAILED):
        if code in codes:
            return code
    return ExitCode.OK


def summarise(secret: str, outcomes: list[Outcome]) -> Outcome:
    """One outcome per secret: the failure if any, else the most significant action taken."""
    if not outcomes:
        return Outcome(secret, "stopped", True, "shutdown requested before any step")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        return failed[-1]
    significant = [o for o in outcomes if o.action not in ("none", "discarded", "purged")]
    chosen = significant[-1] if significant else outcomes[-1]
    if len(outcomes) > 1:
        steps = ", ".join(o.action for o in outcomes)
        return Outcome(chosen.secret, chosen.action, True, f"{chosen.message} ({steps})", chosen.new_version,
                       chosen.old_version, consumers=chosen.consumers)
    return chosen
