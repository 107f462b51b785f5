"""OutcomeAction: a StrEnum that still equals, prints and serialises as the plain strings it replaced."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rotator.errors import ConflictError, ExitCode
from rotator.outcome import Outcome, OutcomeAction, exit_code_for, summarise
from rotator.plan import Action

ROOT = Path(__file__).resolve().parent.parent


def test_members_equal_and_print_as_their_old_strings() -> None:
    assert OutcomeAction.ROTATED == "rotated"
    assert f"{OutcomeAction.ROLLED_BACK}" == "rolled_back"
    assert OutcomeAction.WOULD_ROTATE == "would rotate"
    assert {"rotated": 1}[OutcomeAction.ROTATED] == 1  # same hash as the string


def test_a_plain_string_is_converted_and_an_unknown_one_refused() -> None:
    outcome = Outcome("main", "rotated")  # type: ignore[arg-type]
    assert outcome.action is OutcomeAction.ROTATED
    with pytest.raises(ValueError, match="rotatd"):
        Outcome("main", "rotatd")  # type: ignore[arg-type]


def test_to_dict_writes_the_plain_string() -> None:
    out = Outcome("main", OutcomeAction.DELIVERY_FAILED, False, "x", error=ConflictError("raced")).to_dict()
    assert type(out["action"]) is str
    assert json.dumps(out) == ('{"secret": "main", "action": "delivery_failed", "ok": false, "message": "x", '
                               '"exit_code": 3}')


@pytest.mark.parametrize("action", list(Action))
def test_every_plan_action_has_its_outcome_and_dry_run_form(action: Action) -> None:
    assert OutcomeAction.of(action) == action.value
    would = OutcomeAction.would(action)
    assert would == f"would {action.value}"
    assert would.dry_run
    assert not OutcomeAction.of(action).dry_run


def test_every_action_string_in_the_code_is_a_member() -> None:
    """Grep the sources for ``Outcome(<secret>, "<action>"`` literals: each must be a member."""
    values = {m.value for m in OutcomeAction}
    pattern = re.compile(r'Outcome\(\s*[\w.]+,\s*"([^"]+)"')
    found = {m.group(1) for path in (ROOT / "rotator").rglob("*.py") for m in pattern.finditer(path.read_text())}
    found |= {m.group(1) for path in (ROOT / "tests").glob("test_*.py") for m in pattern.finditer(path.read_text())
              if m.group(1) != "rotatd"}
    assert found <= values, found - values


def test_summarise_and_exit_codes_are_unchanged() -> None:
    steps = [Outcome("main", OutcomeAction.DISCARDED, True, "d"), Outcome("main", OutcomeAction.ROTATED, True, "r")]
    summary = summarise("main", steps)
    assert summary.action is OutcomeAction.ROTATED
    assert summary.message == "r (discarded, rotated)"
    assert summarise("main", []).action == "stopped"
    assert exit_code_for([Outcome("main", "conflict", False, error=ConflictError("x"))]) is ExitCode.CONFLICT  # type: ignore[arg-type]
