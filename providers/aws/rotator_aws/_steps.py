"""The writes of each rotation step against one secret, planned from its current :class:`Remote` (pure).

Each planner assumes the step is legal (the provider checks that with :mod:`rotator.keyset` first) and
returns a :class:`Plan`: a stage is one put (its token is the compare-and-set); other steps tag records first
(they only mean something once the labels agree), then move labels, each move naming ``RemoveFromVersionId``
so AWS refuses it if another actor got there first, then untag records of versions that left the keyset.
Whoever crashes between two calls leaves a secret that reads as a consistent keyset: a half-finished step
reads as not done (or, for the last label of a promotion, as done) and the next run repeats or completes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from rotator.keyset import KeyVersion, State
from rotator_aws._layout import (
    CURRENT,
    EXPIRES_TAG,
    MANAGED,
    META,
    PENDING,
    PREVIOUS,
    RETIRED,
    SEQ,
    Move,
    Plan,
    Remote,
    encode,
    info_tags,
    record_key,
    record_of,
)

__all__ = [
    "plan_adopt", "plan_bump", "plan_create_tags", "plan_discard", "plan_meta", "plan_promote", "plan_purge",
    "plan_retire", "plan_rollback", "plan_stage",
]


def _rec(remote: Remote, vid: str, drop: Iterable[str] = (), **changes: Any) -> dict[str, str]:
    """Tags for ``vid``'s record with ``changes`` applied and the ``drop`` fields removed."""
    record = {k: v for k, v in remote.record(vid).items() if k not in drop}
    record.update({k: v.isoformat() if isinstance(v, datetime) else v for k, v in changes.items()})
    return encode(record_key(vid), record)


def _forget(remote: Remote, *vids: str | None) -> tuple[str, ...]:
    """Tag keys of the records of ``vids`` plus records of versions no longer in the keyset."""
    keys = {k for vid in vids if vid is not None for k in remote.chunk_keys(record_key(vid))}
    return tuple(sorted(keys | set(remote.stale_record_keys())))


def _plan(tags: Mapping[str, str], moves: Iterable[Move], untag: Iterable[str], put: str | None = None) -> Plan:
    """A plan that never untags a key it also writes."""
    return Plan(tags=dict(tags), put=put, moves=tuple(moves), untag=tuple(k for k in untag if k not in tags))


def _only(remote: Remote, state: State) -> str | None:
    found = [vid for vid, s in remote.members().items() if s is state]
    return found[0] if found else None


def plan_create_tags(version: KeyVersion, meta: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, str]:
    """Tags of a new secret: caller's labels, the managed flag, the first version's record and the meta."""
    return {
        **labels, MANAGED: "true", **encode(record_key(version.id), record_of(version)),
        **encode(META, dict(meta)), **info_tags(version.promoted_at, None),
    }


def plan_adopt(remote: Remote, current: KeyVersion, labels: Mapping[str, str]) -> Plan:
    """Mark a foreign secret as managed and record its current version as rotator saw it."""
    return _plan({**labels, MANAGED: "true", **encode(record_key(current.id), record_of(current))}, [], [])


def plan_stage(token: str) -> Plan:
    """One put of the new value as AWSPENDING under the derived token (AWS moves the label to it)."""
    return Plan(put=token)


def plan_bump(remote: Remote) -> Plan:
    """A new stage sequence: the token it derived names a version already (a discarded attempt)."""
    return Plan(tags=_next_seq(remote))


def plan_promote(remote: Remote, vid: str, created: datetime, now: datetime, grace: timedelta,
                 reason: str | None, *, revoke: bool = False) -> Plan:
    """AWSCURRENT to the pending version (CAS on the old current); AWSPREVIOUS follows by itself."""
    current = remote.holder(CURRENT)
    assert current is not None
    previous, retired = _only(remote, State.PREVIOUS), remote.holder(RETIRED)
    tags = _rec(remote, vid, ("e", "r", "why"), c=created, p=now)
    moves = [Move(CURRENT, current, vid)]
    gone: list[str | None] = []
    if grace > timedelta(0):
        tags |= _rec(remote, current, ("r", "why"), e=now + grace)
        tags |= info_tags(now, now + grace)
        if previous is not None:
            tags |= _rec(remote, previous, ("e",), r=now, why="superseded")
            moves.append(Move(RETIRED, retired if retired != previous else None, previous))
            gone.append(retired if retired != previous else None)
    else:
        # the expiry keeps a crash between the moves below safe: the old current would read as a
        # previous version that is already due for retirement
        fields: dict[str, Any] = {"r": now, "why": _short(reason or ("revoked" if revoke else "grace 0")), "e": now}
        if revoke:
            fields["rv"] = 1  # revoked: terminal, never made current again (read back as State.REVOKED)
        tags |= _rec(remote, current, (), **fields)
        tags |= info_tags(now, None)
        moves.append(Move(PREVIOUS, current, None))
        if retired != current:
            moves.append(Move(RETIRED, retired, current))
        gone += [retired if retired != current else None, previous]
    return _plan(tags, moves, _forget(remote, *gone))


def plan_retire(remote: Remote, vid: str, now: datetime, reason: str, *, revoke: bool = False) -> Plan:
    """ROTATOR_RETIRED to the previous version first, then AWSPREVIOUS off it (``revoke``: marked revoked)."""
    retired = remote.holder(RETIRED)
    moves = [] if retired == vid else [Move(RETIRED, retired, vid)]
    moves.append(Move(PREVIOUS, vid, None))
    extra: dict[str, Any] = {"rv": 1} if revoke else {}
    tags = _rec(remote, vid, ("e",), r=now, why=_short(reason), **extra) | {EXPIRES_TAG: ""}
    return _plan(tags, moves, _forget(remote, retired if retired != vid else None))


def plan_rollback(remote: Remote, target: str, now: datetime, reason: str) -> Plan:
    """AWSCURRENT back to ``target`` (previous or retired), the idle marker with it, the old current retired."""
    current = remote.holder(CURRENT)
    assert current is not None
    retired = remote.holder(RETIRED)
    tags = _rec(remote, target, ("e", "r", "why"), p=now)
    tags |= _rec(remote, current, ("e",), r=now, why=_short(f"rolled back: {reason}"))
    tags |= info_tags(now, None) | _next_seq(remote)
    moves = [Move(CURRENT, current, target)]
    if PENDING in remote.stages.get(current, frozenset()):
        moves.append(Move(PENDING, current, target))
    moves.append(Move(PREVIOUS, current, None))
    if retired != current:
        moves.append(Move(RETIRED, retired, current))
    gone = retired if retired not in (target, current) else None
    return _plan(tags, moves, _forget(remote, gone))


def plan_discard(remote: Remote, vid: str) -> Plan:
    """AWSPENDING back to the current version (idle marker); the abandoned version loses every label."""
    current = remote.holder(CURRENT)
    target = current if current is not None and PENDING not in remote.stages.get(current, frozenset()) else None
    return _plan(_next_seq(remote), [Move(PENDING, vid, target)], _forget(remote, vid))


def plan_purge(remote: Remote, vids: Iterable[str]) -> Plan:
    """Take ROTATOR_RETIRED off retired versions past the rollback window and forget their records."""
    chosen = tuple(vids)
    return _plan({}, [Move(RETIRED, vid, None) for vid in chosen], _forget(remote, *chosen))


def plan_meta(remote: Remote, meta: Mapping[str, Any]) -> Plan:
    """Rewrite the bookkeeping tags (chunks a shorter encoding no longer needs are removed)."""
    return _plan(encode(META, dict(meta)), [], remote.chunk_keys(META))


def _next_seq(remote: Remote) -> dict[str, str]:
    """Discard and rollback can bring back a state whose stage token is used up: move to the next one."""
    return {SEQ: str(remote.seq + 1)}


def _short(reason: str) -> str:
    """Reasons are free text; keep them short enough that a record stays a few tags long."""
    return reason if len(reason) <= 200 else reason[:197] + "..."
