"""AWS Secrets Manager provider: keyset states are native staging labels (layout in :mod:`rotator_aws._layout`).

Compare-and-set without a CAS API: every step first checks ``expected.revision`` (a hash of the labels and
rotator's tags) against the secret's last known state, re-reading with ``DescribeSecret`` unless this
instance itself produced or observed that exact state. Then the write itself is conditional in AWS: a stage
puts under a token every racer derives alike (AWS refuses a second value for a token), and every label move
names ``RemoveFromVersionId``, which Secrets Manager refuses if another process moved the label first.
Writers of one secret inside a process are serialised by a lock, so threads never race each other. Values
are read with an explicit ``VersionId`` + ``VersionStage`` (never the default version: moto can get it wrong)
and cached by version id, since a version's value never changes.

The staged version's id is the derived token, not ``version.id`` (``ASSIGNS_VERSION_IDS``); its attempt,
actor and public key are not stored (AWS's VersionId and CreatedDate describe a pending version).

Calls per step: stage 1 (put), promote 2 (tag, move; a third move when a previous version is still in
grace), a read 1 describe plus one ``GetSecretValue`` per version not seen before (``read_state``: only a
pending one). A rotation in a fresh process is therefore describe, put, read-back, tag, move: 5 calls.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from rotator import keyset as ks
from rotator.errors import AccessDenied, ConflictError, IllegalTransition, ProviderError, SecretNotFound
from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.provider import SecretRef, StepMethods
from rotator.target import Capability
from rotator.transitions import (
    Adopt,
    Create,
    Discard,
    Promote,
    Purge,
    Retire,
    Revoke,
    Rollback,
    Stage,
    Transition,
    UpdateMeta,
)
from rotator_aws import _steps as steps
from rotator_aws._client import build_client, snake, translate
from rotator_aws._layout import CURRENT, PENDING, Move, Plan, Remote, label_for, stage_token
from rotator_aws.config import AwsConfig

__all__ = ["AwsProvider"]

log = logging.getLogger("rotator.aws")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")
_LABEL_RACE = frozenset({"InvalidParameterException", "InvalidRequestException"})
_CACHE_SIZE = 20_000
Source = tuple[SecretValue | None, datetime | None]


@dataclass
class _Entry:
    """What this instance knows about one secret: the writer lock and the last state seen or written."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int = 0
    remote: Remote | None = None


class AwsProvider(StepMethods):
    """Secrets Manager secrets as keysets; safe to share between threads.

    One previous version at most (AWSPREVIOUS): no ``MULTI_PREVIOUS``.
    """

    type_name: ClassVar[str] = "aws"
    config_model: ClassVar[type[BaseModel]] = AwsConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.STATE_READ,
        Capability.ASSIGNS_VERSION_IDS,  # a staged version's id is its derived stage token
    })

    def __init__(self, *, name: str = "aws", config: AwsConfig | None = None, base_dir: Path | None = None) -> None:
        self.name = name
        self.config = config if config is not None else AwsConfig()
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._values: OrderedDict[tuple[str, str], Source] = OrderedDict()

    def __repr__(self) -> str:
        where = self.config.endpoint_url or self.config.region or "default region"
        return f"AwsProvider(name={self.name!r}, at={where!r}, prefix={self.config.name_prefix!r})"

    # --- Provider protocol ---------------------------------------------------------------------------

    def read(self, ref: SecretRef) -> Keyset | None:
        return self._read(ref, every_value=True)

    def read_state(self, ref: SecretRef) -> Keyset | None:
        """The keyset for deciding and stepping: one describe, plus the value of a pending version not seen
        before (its CreatedDate decides staleness); other values are None unless this instance saw them."""
        return self._read(ref, every_value=False)

    def read_value(self, ref: SecretRef, version_id: str) -> SecretValue | None:
        """One GetSecretValue by version id (no describe, no cache): the read-back of verify."""
        name = self._aws_name(ref)
        try:
            answer = self._call("GetSecretValue", name, SecretId=name, VersionId=version_id)
        except SecretNotFound:
            return None
        found = self._remember(name, version_id, answer)
        return found[0]

    def apply(self, ref: SecretRef, expected: Keyset | None, transition: Transition | Create) -> Keyset:
        """Map each transition onto its Secrets Manager calls (layout in :mod:`rotator_aws._layout`)."""
        if isinstance(transition, Create):
            return self._create(ref, transition.version, transition.meta)
        if expected is None:
            raise IllegalTransition(f"{ref.name}: {type(transition).__name__} needs the keyset it applies to")
        match transition:
            case Adopt():
                return self._adopt(ref, expected)
            case Stage(version=version, meta=meta):
                return self._stage(ref, ks.with_meta(expected, **meta) if meta else expected, version)
            case Promote():
                return self._promote(ref, expected, transition)
            case Retire(version_id=vid, now=now, reason=reason):
                return self._retire(ref, expected, vid, now, reason)
            case Revoke(version_ids=vids, now=now, reason=reason):
                return self._revoke(ref, expected, vids, now, reason)
            case Rollback(now=now, reason=reason, window=window):
                return self._rollback(ref, expected, now, reason, window)
            case Discard(version_id=vid):
                return self._discard(ref, expected, vid)
            case Purge(now=now, window=window):
                return self._purge(ref, expected, now, window)
            case UpdateMeta(changes=changes):
                return self._update_meta(ref, expected, changes)
        raise IllegalTransition(f"{ref.name}: unknown step {type(transition).__name__}")  # pragma: no cover

    def _create(self, ref: SecretRef, version: KeyVersion, meta: Mapping[str, Any]) -> Keyset:
        value = self._writable(ref, version)
        name = self._aws_name(ref)
        tags = steps.plan_create_tags(version, meta, ref.labels)
        request: dict[str, Any] = {"Name": name, "ClientRequestToken": version.id, "SecretString": value.reveal(),
                                   "Tags": _tag_list(tags)}
        if ref.description:
            request["Description"] = ref.description
        if self.config.kms_key_id:
            request["KmsKeyId"] = self.config.kms_key_id
        entry = self._entry(name)
        with entry.lock:
            created = self._call("CreateSecret", name, **request)
            remote = Remote(str(created.get("ARN", name)), {version.id: frozenset({CURRENT})}, tags)
            after = self._run(name, entry, remote, Plan(moves=(Move(PENDING, None, version.id),)))
        return after.keyset(ref.name, {version.id: (value, None)})

    def _adopt(self, ref: SecretRef, expected: Keyset) -> Keyset:
        current = expected.current
        if current is None:
            raise IllegalTransition(f"{ref.name}: {self._aws_name(ref)} has no AWSCURRENT value to adopt")
        return self._step(ref, expected, lambda r: steps.plan_adopt(r, current, ref.labels), check=True,
                          every_value=True)  # now readable under the least-privilege policy

    def _stage(self, ref: SecretRef, expected: Keyset, version: KeyVersion) -> Keyset:
        pending = expected.pending
        if pending is not None and ((version.attempt is not None and pending.attempt == version.attempt)
                                    or (pending.value is not None and pending.value == version.value)):
            return expected  # the same attempt staged again (a retried request): nothing to do
        ks.stage(expected, version)
        value = self._writable(ref, version, own_id=False)
        name = self._aws_name(ref)
        entry = self._entry(name)
        with entry.lock:
            remote = self._confirm(ref, name, entry, expected, fresh=False)
            token = stage_token(name, remote)
            try:
                after = self._run(name, entry, remote, steps.plan_stage(token), value)
            except ConflictError:
                remote = self._used_token(ref, name, entry, expected, token)
                token = stage_token(name, remote)
                after = self._run(name, entry, remote, steps.plan_stage(token), value)
        self._cache(name, token, (value, version.created_at))
        known = {v.id: v.value for v in expected.versions if v.value is not None}
        return after.keyset(ref.name, self._sources(name, after, known, every_value=False))

    def _promote(self, ref: SecretRef, expected: Keyset, t: Promote) -> Keyset:
        t.apply(expected)  # the transition's own checks; AWS keeps one previous whatever keep_previous says
        self._need_current(ref, expected)
        created = next(v.created_at for v in expected.versions if v.id == t.version_id)
        return self._step(ref, expected, lambda r: steps.plan_promote(
            r, t.version_id, created, t.now, timedelta(0) if t.revoke else t.grace, t.reason, revoke=t.revoke))

    def _retire(self, ref: SecretRef, expected: Keyset, version_id: str, now: datetime, reason: str) -> Keyset:
        ks.retire(expected, version_id, now, reason)
        return self._step(ref, expected, lambda r: steps.plan_retire(r, version_id, now, reason))

    def _revoke(self, ref: SecretRef, expected: Keyset, vids: tuple[str, ...], now: datetime,
                reason: str) -> Keyset:
        ks.revoke(expected, vids, now, reason)
        keyset = expected
        for vid in vids:  # AWS holds one previous: in practice one id
            if keyset.get(vid).state is State.PREVIOUS:
                keyset = self._step(ref, keyset, functools.partial(_plan_revoke, vid=vid, now=now, reason=reason))
        return keyset

    def _rollback(self, ref: SecretRef, expected: Keyset, now: datetime, reason: str, window: timedelta) -> Keyset:
        restored = ks.rollback(expected, now, reason, window).current
        assert restored is not None  # ks.rollback raises IllegalTransition otherwise
        return self._step(ref, expected, lambda r: steps.plan_rollback(r, restored.id, now, reason))

    def _discard(self, ref: SecretRef, expected: Keyset, version_id: str) -> Keyset:
        ks.discard(expected, version_id)
        return self._step(ref, expected, lambda r: steps.plan_discard(r, version_id))

    def _purge(self, ref: SecretRef, expected: Keyset, now: datetime, window: timedelta) -> Keyset:
        kept = ks.purge(expected, now, window)
        if kept is expected:
            return expected
        gone = {v.id for v in expected.versions} - {v.id for v in kept.versions}
        return self._step(ref, expected, lambda r: steps.plan_purge(r, sorted(gone)))

    def _update_meta(self, ref: SecretRef, expected: Keyset, changes: Mapping[str, Any]) -> Keyset:
        meta = ks.with_meta(expected, **changes).meta
        return self._step(ref, expected, lambda r: steps.plan_meta(r, meta), check=True)

    def list(self) -> list[str]:
        prefix = self.config.name_prefix
        filters = [{"Key": "tag-key", "Values": ["rotator:managed"]}]
        if prefix:
            filters.append({"Key": "name", "Values": [prefix]})
        names: list[str] = []
        request: dict[str, Any] = {"Filters": filters, "MaxResults": 100}
        while True:
            page = self._call("ListSecrets", prefix + "*", **request)
            names += [s["Name"][len(prefix):] for s in page.get("SecretList", []) if s["Name"].startswith(prefix)]
            if not page.get("NextToken"):
                return sorted(set(names))
            request["NextToken"] = page["NextToken"]

    def check(self) -> None:
        self._call("ListSecrets", self.config.name_prefix + "*", MaxResults=1)

    def close(self) -> None:
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # --- steps ---------------------------------------------------------------------------------------

    def _step(self, ref: SecretRef, expected: Keyset, planner: Callable[[Remote], Plan], *,
              check: bool = False, every_value: bool = False) -> Keyset:
        """Check ``expected`` is still what is stored, run the planned writes, return the keyset after.

        The result carries the values ``expected`` carried (a version's value never changes in AWS)."""
        name = self._aws_name(ref)
        entry = self._entry(name)
        with entry.lock:
            remote = self._confirm(ref, name, entry, expected, fresh=check)
            after = self._run(name, entry, remote, planner(remote))
        known = {v.id: v.value for v in expected.versions if v.value is not None}
        return after.keyset(ref.name, self._sources(name, after, known, every_value=every_value))

    def _used_token(self, ref: SecretRef, name: str, entry: _Entry, expected: Keyset, token: str) -> Remote:
        """The stage token names a version already. A racer's stage: ConflictError. A version without labels
        (an attempt discarded by hand, or by a crashed discard): move to the next sequence and go on."""
        remote = self._confirm(ref, name, entry, expected, fresh=True)
        if remote.stages.get(token):
            raise ConflictError(f"{ref.name}: another actor staged {name} first; re-read and decide")
        log.warning("aws.stage_token_used secret=%s token=%s", name, token[:8])
        return self._run(name, entry, remote, steps.plan_bump(remote))

    def _confirm(self, ref: SecretRef, name: str, entry: _Entry, expected: Keyset, *, fresh: bool) -> Remote:
        """The stored state if its revision is ``expected.revision``; ConflictError otherwise."""
        with self._state_lock:
            known = entry.remote
        if not fresh and known is not None and known.revision == expected.revision:
            return known  # this instance wrote or read exactly this state; label moves re-check in AWS
        remote = self._describe(name)
        if remote is None:
            raise SecretNotFound(f"{ref.name}: AWS Secrets Manager has no secret {name} any more")
        with self._state_lock:
            entry.remote, entry.generation = remote, entry.generation + 1
        if remote.revision != expected.revision:
            raise ConflictError(f"{ref.name}: {name} changed since revision {expected.revision} was read; "
                                "re-read and decide")
        return remote

    def _run(self, name: str, entry: _Entry, remote: Remote, plan: Plan, value: SecretValue | None = None) -> Remote:
        """Execute ``plan`` in order; the predicted state becomes what this instance knows."""
        try:
            if plan.put is not None:
                assert value is not None
                self._call("PutSecretValue", name, SecretId=name, ClientRequestToken=plan.put,
                           SecretString=value.reveal(), VersionStages=[PENDING])
            if plan.tags:
                self._call("TagResource", name, SecretId=name, Tags=_tag_list(plan.tags))
            for move in plan.moves:
                self._move(name, move)
        except BaseException:
            with self._state_lock:
                entry.remote, entry.generation = None, entry.generation + 1
            raise
        if plan.untag:
            try:
                self._call("UntagResource", name, SecretId=name, TagKeys=list(plan.untag))
            except ProviderError as exc:  # leftover records are harmless and pruned by a later step
                log.warning("aws.untag_failed secret=%s error=%s", name, exc)
                plan = replace(plan, untag=())
        after = remote.after(plan)
        with self._state_lock:
            entry.remote, entry.generation = after, entry.generation + 1
        return after

    def _move(self, name: str, move: Move) -> None:
        request: dict[str, Any] = {"SecretId": name, "VersionStage": move.label}
        if move.remove_from is not None:
            request["RemoveFromVersionId"] = move.remove_from
        if move.move_to is not None:
            request["MoveToVersionId"] = move.move_to
        self._call("UpdateSecretVersionStage", name, race=_LABEL_RACE, **request)

    # --- reading -------------------------------------------------------------------------------------

    def _describe(self, name: str) -> Remote | None:
        try:
            desc = self._call("DescribeSecret", name, SecretId=name)
        except SecretNotFound:
            return None
        if desc.get("DeletedDate"):
            raise ProviderError(f"AWS secret {name} is scheduled for deletion",
                                hint=f"restore it (aws secretsmanager restore-secret --secret-id {name}) or "
                                     "choose another path")
        remote = Remote.from_describe(desc)
        if len(remote.holders(CURRENT)) > 1:  # only moto does this; ask which one it serves
            answer = self._call("GetSecretValue", name, SecretId=name, VersionStage=CURRENT)
            remote = remote.with_current(str(answer["VersionId"]))
        return remote

    def _read(self, ref: SecretRef, *, every_value: bool) -> Keyset | None:
        name = self._aws_name(ref)
        entry = self._entry(name)
        for _ in range(3):
            generation = entry.generation
            remote = self._describe(name)
            if remote is None:
                self._observed(entry, generation, None)
                return None
            try:
                sources = self._sources(name, remote, every_value=every_value)
            except ConflictError:
                continue  # a label moved between describe and get: read again
            self._observed(entry, generation, remote)
            return remote.keyset(ref.name, sources)
        raise ConflictError(f"{ref.name}: staging labels of {name} kept moving while reading; retry")

    def _sources(self, name: str, remote: Remote, known: Mapping[str, SecretValue] | None = None, *,
                 every_value: bool) -> dict[str, Source]:
        """Value and CreatedDate of the versions in the keyset: cache, then ``known``, then AWS (every
        version, or only a pending one; the others then carry no value)."""
        out: dict[str, Source] = {}
        for vid, state in remote.members().items():
            with self._state_lock:
                hit = self._values.get((name, vid))
            if hit is not None:
                out[vid] = hit
            elif known is not None and vid in known:
                out[vid] = (known[vid], None)
            elif every_value or state is State.PENDING:
                # a least-privilege reader may not read a foreign secret (adopting it needs no value) nor a
                # retired value (deploy/policies/aws-readonly-policy.json): those read as having none
                optional = not remote.managed or state is State.RETIRED
                out[vid] = self._fetch(name, vid, label_for(state), optional=optional)
        return out

    def _fetch(self, name: str, vid: str, label: str, *, optional: bool = False) -> Source:
        try:
            answer = self._call("GetSecretValue", name, race=_LABEL_RACE, SecretId=name, VersionId=vid,
                                VersionStage=label)
        except SecretNotFound:
            return (None, None)  # the version is gone (deprecated and deleted by AWS)
        except AccessDenied:
            if optional:
                return (None, None)
            raise
        return self._remember(name, vid, answer)

    def _remember(self, name: str, vid: str, answer: Mapping[str, Any]) -> Source:
        """Cache the value and CreatedDate of a GetSecretValue answer (a version never changes)."""
        text = answer.get("SecretString")
        if text is None and isinstance(answer.get("SecretBinary"), bytes):
            try:
                text = answer["SecretBinary"].decode("utf-8")
            except UnicodeDecodeError:
                text = None
        created = answer.get("CreatedDate")
        found: Source = (SecretValue(text) if isinstance(text, str) else None,
                         created.astimezone(UTC) if isinstance(created, datetime) else None)
        self._cache(name, vid, found)
        return found

    def _cache(self, name: str, vid: str, found: Source) -> None:
        with self._state_lock:
            self._values[(name, vid)] = found
            while len(self._values) > _CACHE_SIZE:
                self._values.popitem(last=False)

    # --- plumbing ------------------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 client, created on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = build_client(self.config)
            return self._client

    def _call(self, action: str, secret: str, *, race: frozenset[str] = frozenset(), **request: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(self.client, snake(action))
        try:
            return method(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in race:
                raise ConflictError(f"{secret}: another actor moved a staging label first ({action}); "
                                    "re-read and decide") from exc
            raise translate(exc, action=action, name=secret, endpoint=self.config.endpoint_url) from exc
        except BotoCoreError as exc:
            raise translate(exc, action=action, name=secret, endpoint=self.config.endpoint_url) from exc

    def _aws_name(self, ref: SecretRef) -> str:
        return self.config.name_prefix + ref.path

    def _entry(self, name: str) -> _Entry:
        with self._state_lock:
            return self._entries.setdefault(name, _Entry())

    def _observed(self, entry: _Entry, generation: int, remote: Remote | None) -> None:
        """Remember what a read saw, unless a write of this instance finished meanwhile."""
        with self._state_lock:
            if entry.generation == generation:
                entry.remote, entry.generation = remote, generation + 1

    @staticmethod
    def _writable(ref: SecretRef, version: KeyVersion, *, own_id: bool = True) -> SecretValue:
        if own_id and not _TOKEN.fullmatch(version.id):
            raise IllegalTransition(f"{ref.name}: version id {version.id[:16]!r} cannot be an AWS VersionId "
                                    "(32-64 letters, digits, '-' or '_')")
        if version.value is None:
            raise IllegalTransition(f"{ref.name}: version {version.id[:8]} has no value to store")
        return version.value

    @staticmethod
    def _need_current(ref: SecretRef, expected: Keyset) -> None:
        if expected.current is None:
            raise IllegalTransition(f"{ref.name}: no AWSCURRENT version to promote over")


def _plan_revoke(remote: Remote, *, vid: str, now: datetime, reason: str) -> Plan:
    return steps.plan_retire(remote, vid, now, reason, revoke=True)


def _tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]
