"""How a keyset lives in one Secrets Manager secret, as pure functions over what ``DescribeSecret`` returns.

Staging labels carry the states (AWS moves each label atomically and keeps it on one version)::

    AWSCURRENT       current
    AWSPREVIOUS      previous (grace deadline in the version's record)
    ROTATOR_RETIRED  the newest retired version, kept for the rollback window
    AWSPENDING       pending when it is a version's only state label; on the current version it is the idle
                     marker (AWS's own rotation leaves it there)

A new version is staged with ONE ``PutSecretValue(VersionStages=["AWSPENDING"])`` whose
``ClientRequestToken`` (= the AWS VersionId) is derived from the current version and the stage sequence
(:func:`stage_token`). Every actor that read the same state derives the same token; AWS refuses a token that
already names a version with another value (``ResourceExistsException``), so exactly one racer stages: a
compare-and-set in the put itself. Steps that can bring an earlier state back (discard, rollback) bump the
sequence, so a token is never needed twice.

Tags carry what labels cannot (tag values are limited to 256 characters of ``[\\w .:/=+@-]``, so JSON is
stored base64url-encoded and split over ``KEY``, ``KEY:1``, ...; the first chunk starts with ``N.``)::

    rotator:managed               "true": rotator writes this secret
    rotator:v:<version id>        a version's record: created/promoted/expires/retired times, reason (and for
                                  the first version: attempt, actor, public JWK). A staged version has none
                                  until its promotion: AWS's own VersionId and CreatedDate describe it
    rotator:meta                  keyset bookkeeping (notices sent, failures)
    rotator:seq                   stage sequence (see above)
    rotator:previous-expires-at   grace deadline of AWSPREVIOUS, for humans and alarms (ISO time or empty)
    rotator:last-rotated-at       for humans and alarms only

A staged version's public key is not stored: a JWKS derives it from the private value. The revision is a
hash of the state labels, the records and meta of labelled versions and the sequence, so anything that
changes the keyset changes it. A :class:`Plan` lists the writes of one step; :meth:`Remote.after` predicts
the describe that follows them, which is how a step returns the stored keyset without reading it again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rotator.keyset import Keyset, KeyVersion, SecretValue, State

__all__ = [
    "CURRENT", "MANAGED", "PENDING", "PREVIOUS", "RETIRED", "SEQ", "Move", "Plan", "Remote",
    "decode", "encode", "record_key", "record_of", "stage_token",
]

CURRENT, PENDING, PREVIOUS = "AWSCURRENT", "AWSPENDING", "AWSPREVIOUS"
RETIRED = "ROTATOR_RETIRED"
STATE_LABELS = frozenset({CURRENT, PENDING, PREVIOUS, RETIRED})
MANAGED = "rotator:managed"
META = "rotator:meta"
SEQ = "rotator:seq"
EXPIRES_TAG = "rotator:previous-expires-at"
ROTATED_TAG = "rotator:last-rotated-at"
_RECORD = "rotator:v:"
_CHUNK = 250
_LABEL_OF = {State.CURRENT: CURRENT, State.PREVIOUS: PREVIOUS, State.RETIRED: RETIRED, State.PENDING: PENDING,
             State.REVOKED: RETIRED}  # a revoked version is a retired one whose record says rv
_FIELDS = {"created_at": "c", "promoted_at": "p", "expires_at": "e", "retired_at": "r"}
_KEEP = {  # record fields that mean something in each state
    State.PENDING: ("created_at",),
    State.CURRENT: ("created_at", "promoted_at"),
    State.PREVIOUS: ("created_at", "promoted_at", "expires_at"),
    State.RETIRED: ("created_at", "promoted_at", "retired_at"),
    State.REVOKED: ("created_at", "promoted_at", "retired_at"),
}
_TAG_SAFE = re.compile(r"[^\w .:/=+@-]")


# --- tag codec -------------------------------------------------------------------------------------------


def record_key(version_id: str) -> str:
    return _RECORD + version_id


def encode(key: str, obj: Any) -> dict[str, str]:
    """``obj`` as compact JSON in base64url, split over ``key``, ``key:1``, ... (first chunk ``N.<data>``)."""
    raw = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    data = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    pieces = [data[i : i + _CHUNK] for i in range(0, len(data), _CHUNK)] or [""]
    tags = {key: f"{len(pieces)}.{pieces[0]}"}
    tags.update({f"{key}:{i}": piece for i, piece in enumerate(pieces[1:], start=1)})
    return tags


def _joined(tags: Mapping[str, str], key: str) -> str | None:
    first = tags.get(key)
    if first is None or "." not in first:
        return None
    count, _, head = first.partition(".")
    if not count.isdigit():
        return None
    rest = [tags.get(f"{key}:{i}") for i in range(1, int(count))]
    return None if None in rest else head + "".join(r for r in rest if r is not None)


def decode(tags: Mapping[str, str], key: str) -> Any:
    """Inverse of :func:`encode`; ``None`` when absent or damaged (a record is advisory, never fatal)."""
    data = _joined(tags, key)
    if data is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (ValueError, binascii.Error):
        return None


def _keys_of(tags: Mapping[str, str], key: str) -> list[str]:
    return [k for k in tags if k == key or (k.startswith(key + ":") and k[len(key) + 1 :].isdigit())]


def readable(text: str) -> str:
    """``text`` reduced to characters AWS accepts in a tag value (for informational tags)."""
    return _TAG_SAFE.sub("_", text)[:256]


# --- records ---------------------------------------------------------------------------------------------


def record_of(version: KeyVersion) -> dict[str, Any]:
    """The JSON record of a version's metadata (never its value)."""
    out: dict[str, Any] = {}
    for name, short in _FIELDS.items():
        if (when := getattr(version, name)) is not None:
            out[short] = when.isoformat()
    for name, short in (("reason", "why"), ("attempt", "a"), ("actor", "by")):
        if (text := getattr(version, name)) is not None:
            out[short] = text
    if version.public is not None:
        out["pub"] = dict(version.public)
    return out


def _version(vid: str, state: State, record: Mapping[str, Any], created: datetime,
             value: SecretValue | None) -> KeyVersion:
    times: dict[str, datetime | None] = {}
    for name in _KEEP[state]:
        text = record.get(_FIELDS[name])
        times[name] = datetime.fromisoformat(text) if isinstance(text, str) else None
    if state is State.RETIRED and record.get("rv"):
        state = State.REVOKED
    reason = record.get("why") if state in (State.RETIRED, State.REVOKED) else None
    public = record.get("pub")
    return KeyVersion(
        id=vid, state=state, value=value, created_at=times.pop("created_at") or created,
        reason=reason if isinstance(reason, str) else None,
        attempt=record.get("a") if isinstance(record.get("a"), str) else None,
        actor=record.get("by") if isinstance(record.get("by"), str) else None,
        public=public if isinstance(public, dict) else None, **times,
    )


# --- label moves -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Move:
    """One ``UpdateSecretVersionStage`` call; AWS refuses it unless ``label`` is on ``remove_from``."""

    label: str
    remove_from: str | None
    move_to: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    """The writes of one step, executed in this order: put (staging a value as AWSPENDING), tag, moves, untag.

    The put comes first: it is the compare-and-set of a stage, so a racer that loses it has written nothing.
    """

    tags: Mapping[str, str] = field(default_factory=dict)
    put: str | None = None
    moves: tuple[Move, ...] = ()
    untag: tuple[str, ...] = ()


def _move(stages: dict[str, set[str]], move: Move) -> None:
    """Apply ``move`` the way Secrets Manager does (AWSCURRENT drags AWSPREVIOUS along)."""
    if move.remove_from is not None:
        stages.setdefault(move.remove_from, set()).discard(move.label)
    if move.move_to is not None:
        stages.setdefault(move.move_to, set()).add(move.label)
    if move.label == CURRENT:
        if move.remove_from is not None:
            for labels in stages.values():
                labels.discard(PREVIOUS)
            stages[move.remove_from].add(PREVIOUS)
        if move.move_to is not None:
            stages[move.move_to].discard(PREVIOUS)


# --- the remote state ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Remote:
    """What ``DescribeSecret`` says about one secret (labels per version and tags), or will say."""

    arn: str
    stages: Mapping[str, frozenset[str]]
    tags: Mapping[str, str]
    created: datetime | None = None

    @classmethod
    def from_describe(cls, desc: Mapping[str, Any]) -> Remote:
        stages = {vid: frozenset(labels) for vid, labels in (desc.get("VersionIdsToStages") or {}).items()}
        tags = {t["Key"]: t.get("Value", "") for t in desc.get("Tags") or []}
        return cls(str(desc.get("ARN", desc.get("Name", ""))), {k: v for k, v in stages.items() if v}, tags,
                   desc.get("CreatedDate"))

    def holders(self, label: str) -> list[str]:
        return sorted(vid for vid, labels in self.stages.items() if label in labels)

    def holder(self, label: str) -> str | None:
        found = self.holders(label)
        return found[0] if found else None

    def state_of(self, vid: str) -> State | None:
        """The keyset state of a version: current > previous > retired > pending (only if alone)."""
        labels = self.stages.get(vid, frozenset())
        for label, state in ((CURRENT, State.CURRENT), (PREVIOUS, State.PREVIOUS), (RETIRED, State.RETIRED),
                             (PENDING, State.PENDING)):
            if label in labels:
                return state
        return None

    def members(self) -> dict[str, State]:
        """Every version in the keyset with its state."""
        return {vid: state for vid in self.stages if (state := self.state_of(vid)) is not None}

    def with_current(self, vid: str) -> Remote:
        """Drop AWSCURRENT from every version but ``vid`` (moto can leave it on two)."""
        fixed = {k: (v if k == vid else v - {CURRENT}) for k, v in self.stages.items()}
        return Remote(self.arn, {k: v for k, v in fixed.items() if v}, self.tags, self.created)

    def record(self, vid: str) -> dict[str, Any]:
        found = decode(self.tags, record_key(vid))
        return dict(found) if isinstance(found, dict) else {}

    @property
    def meta(self) -> dict[str, Any]:
        found = decode(self.tags, META)
        return dict(found) if isinstance(found, dict) else {}

    @property
    def seq(self) -> int:
        text = self.tags.get(SEQ, "0")
        return int(text) if text.isdigit() else 0

    @property
    def managed(self) -> bool:
        return self.tags.get(MANAGED) == "true"

    @property
    def revision(self) -> str:
        members = self.members()
        body = {
            "stages": {vid: sorted(self.stages[vid] & STATE_LABELS) for vid in members},
            "records": {vid: _joined(self.tags, record_key(vid)) for vid in members},
            "meta": _joined(self.tags, META),
            "managed": self.managed,
            "seq": self.seq,
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]

    def stale_record_keys(self, keep: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """Tag keys of records whose version left the keyset (crashed or lost stages), except ``keep``."""
        members = set(self.members()) | keep
        return tuple(sorted(k for k in self.tags if k.startswith(_RECORD)
                            and k[len(_RECORD):].split(":")[0] not in members))

    def chunk_keys(self, key: str) -> tuple[str, ...]:
        """Every tag key holding a chunk of ``key``."""
        return tuple(_keys_of(self.tags, key))

    def after(self, plan: Plan) -> Remote:
        """The describe that follows ``plan`` (Secrets Manager's label rules applied)."""
        stages = {vid: set(labels) for vid, labels in self.stages.items()}
        tags = {**self.tags, **plan.tags}
        if plan.put is not None:
            for labels in stages.values():
                labels.discard(PENDING)
            stages[plan.put] = {PENDING}
        for move in plan.moves:
            _move(stages, move)
        for key in plan.untag:
            tags.pop(key, None)
        return Remote(self.arn, {k: frozenset(v) for k, v in stages.items() if v}, tags, self.created)

    def keyset(self, name: str, sources: Mapping[str, tuple[SecretValue | None, datetime | None]]) -> Keyset:
        """The keyset this state holds; ``sources`` gives each version's value and AWS CreatedDate."""
        versions = []
        for vid, state in self.members().items():
            value, created = sources.get(vid, (None, None))
            fallback = created or self.created or datetime.fromtimestamp(0, UTC)
            versions.append(_version(vid, state, self.record(vid), fallback, value))
        versions.sort(key=lambda v: (v.created_at, v.id))
        return Keyset(name=name, revision=self.revision, versions=tuple(versions), meta=self.meta,
                      managed=self.managed)


def stage_token(name: str, remote: Remote) -> str:
    """The VersionId of the next staged version: the same for every actor that saw this state."""
    current = remote.holder(CURRENT) or ""
    digest = hashlib.sha256(f"rotator-stage\0{name}\0{current}\0{remote.seq}".encode()).hexdigest()
    return digest[:32]


def label_for(state: State) -> str:
    """The staging label that puts a version in ``state``."""
    return _LABEL_OF[state]


def info_tags(current_promoted: datetime | None, previous_expires: datetime | None) -> dict[str, str]:
    """The human-readable tags (not part of the revision)."""
    return {
        ROTATED_TAG: readable(current_promoted.isoformat()) if current_promoted else "",
        EXPIRES_TAG: readable(previous_expires.isoformat()) if previous_expires else "",
    }
