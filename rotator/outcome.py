"""What one command did to one secret (:class:`Outcome`), and the exit code a list of outcomes maps to.

:class:`OutcomeAction` names every action an outcome reports. It is a ``StrEnum``: each member equals its old
plain string (``OutcomeAction.ROTATED == "rotated"``), so JSON output, ``--json`` consumers and comparisons
written against strings keep working; ``Outcome`` also accepts the plain string and converts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from rotator.errors import ExitCode, RotatorError

__all__ = ["Outcome", "OutcomeAction", "exit_code_for", "summarise"]


class OutcomeAction(StrEnum):
    """What a command did to one secret (or, in a dry run, ``would <decision>``)."""

    # steps taken
    CREATED = "created"
    ADOPTED = "adopted"
    ROTATED = "rotated"
    RESUMED = "resumed"
    REVOKED = "revoked"
    ROLLED_BACK = "rolled_back"
    RETIRED = "retired"
    NOTICED = "noticed"
    DISCARDED = "discarded"
    PURGED = "purged"
    MARKED = "marked"  # rotated by hand (rotator.manual)
    OVERDUE = "overdue"
    DELIVERED = "delivered"
    # nothing (more) to do: a settled decision, reported as its plan action
    NONE = "none"
    PAUSED = "paused"
    BACKOFF = "backoff"
    WAIT = "wait"
    FROZEN = "frozen"
    REMIND = "remind"
    ALREADY_ROTATED = "already_rotated"
    STOPPED = "stopped"
    # failures
    FAILED = "failed"
    CONFLICT = "conflict"
    POST_CHECK_FAILED = "post_check_failed"
    DELIVERY_FAILED = "delivery_failed"
    # the other plan actions, reported as-is when a decision is the outcome
    CREATE = "create"
    ADOPT = "adopt"
    RESUME = "resume"
    DISCARD = "discard"
    RETIRE = "retire"
    ROTATE = "rotate"
    NOTICE = "notice"
    UNMANAGED = "unmanaged"
    PURGE = "purge"
    REVOKE = "revoke"
    BLOCKED = "blocked"
    # dry runs (``rotator run --dry-run``): what a run would do, one per plan action
    WOULD_CREATE = "would create"
    WOULD_ADOPT = "would adopt"
    WOULD_RESUME = "would resume"
    WOULD_DISCARD = "would discard"
    WOULD_RETIRE = "would retire"
    WOULD_ROTATE = "would rotate"
    WOULD_NOTICE = "would notice"
    WOULD_BACKOFF = "would backoff"
    WOULD_PAUSED = "would paused"
    WOULD_UNMANAGED = "would unmanaged"
    WOULD_PURGE = "would purge"
    WOULD_REVOKE = "would revoke"
    WOULD_ALREADY_ROTATED = "would already_rotated"
    WOULD_BLOCKED = "would blocked"
    WOULD_WAIT = "would wait"
    WOULD_FROZEN = "would frozen"
    WOULD_REMIND = "would remind"
    WOULD_OVERDUE = "would overdue"
    WOULD_NONE = "would none"

    @classmethod
    def of(cls, decision: str) -> OutcomeAction:
        """The outcome that reports plan action ``decision`` (a :class:`rotator.plan.Action`) as it is."""
        return cls(str(decision))

    @classmethod
    def would(cls, decision: str) -> OutcomeAction:
        """The dry-run outcome for plan action ``decision``: ``would <decision>``."""
        return cls(f"would {decision}")

    @property
    def dry_run(self) -> bool:
        """True for the ``would <decision>`` forms of a dry run."""
        return self.value.startswith("would ")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one secret in one command. ``ok`` False carries the error for the exit code."""

    secret: str
    action: OutcomeAction
    ok: bool = True
    message: str = ""
    new_version: str | None = None
    old_version: str | None = None
    error: RotatorError | None = field(default=None, compare=False)
    consumers: tuple[str, ...] = ()
    # when the secret next needs attention, if the pass ended on a settled decision (the daemon schedules
    # from it instead of reading the keyset again); None: unknown
    next_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if type(self.action) is not OutcomeAction:  # a plain string from older callers: same value, typed
            object.__setattr__(self, "action", OutcomeAction(self.action))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"secret": self.secret, "action": str(self.action), "ok": self.ok,
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


_MINOR = (OutcomeAction.NONE, OutcomeAction.DISCARDED, OutcomeAction.PURGED)


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
        return Outcome(secret, OutcomeAction.STOPPED, True, "shutdown requested before any step")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        return failed[-1]
    significant = [o for o in outcomes if o.action not in _MINOR]
    chosen = significant[-1] if significant else outcomes[-1]
    if len(outcomes) > 1:
        steps = ", ".join(o.action for o in outcomes)
        return Outcome(chosen.secret, chosen.action, True, f"{chosen.message} ({steps})", chosen.new_version,
                       chosen.old_version, consumers=chosen.consumers)
    return chosen
