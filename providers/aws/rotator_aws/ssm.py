"""AWS SSM Parameter Store provider (``type: ssm``): values as SecureString versions, states as labels.

Layout for a secret at path ``app/hmac`` (name = ``name_prefix`` + path, with a leading ``/`` when it has
one inside)::

    /app/hmac            SecureString; one parameter version per key version (plain value, KMS ``kms_key_id``)
                         labels: current, previous, pending on the versions in those states
    /app/hmac.rotator    String; the state document: {"versions": [metadata + "ssm": N], "meta": {...}}

Consumers read ``GetParameter(Name="/app/hmac:current", WithDecryption=True)`` (verifiers also ``:previous``
and ``:pending``). Never read the bare name: its latest version may be a pending or abandoned value.

The document is the source of truth (labels can hold no times or attempt tokens; a version holds at most
10 labels). ``revision`` is the document's parameter version. A step is: GetParameter of the document (the
compare: its Version must still be ``expected.revision``), PutParameter of a new value if the step stages
one, PutParameter of the document with Overwrite, then the label moves.

Compare-and-set guarantee: SSM has no conditional put. Overwrite always creates version N+1, so a racing
writer shows up as a returned Version other than ``expected + 1``. The loser (the writer whose put did not
get ``expected + 1``) restores the document of version ``expected + 1`` (the winner's) and raises
ConflictError; for the length of that restore (two calls) a reader may see the loser's document. A third
writer interfering with the restore makes it raise BackendUnavailable; the next pass re-reads and decides.
Values a loser put stay in the history unlabelled. Threads of one process never race: writers of a
parameter take a lock. For strict CAS across processes run one writer per secret (the daemon).

Calls per rotation in a fresh process: read_state 1 (document); stage 4 (get, put value, put document,
label pending); verify 2 (document, ``name:N``); promote 5 (get, put document, label current, label
previous, unlabel pending) = 12. ``read`` with values adds one GetParameters per 10 versions.

SSM keeps 100 versions of a parameter; a put that would drop a *labelled* oldest version fails with
ParameterMaxVersionLimitExceeded. rotator's labels sit only on current/previous/pending, so this can only
happen after ~98 abandoned stages under one current; the error then says how to recover.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel

from rotator.errors import BackendUnavailable, ConflictError, SecretNotFound
from rotator.keyset import Keyset, KeyVersion, SecretValue, State, version_from_json, version_to_json
from rotator.provider import DocumentProvider, SecretRef
from rotator_aws.config import AwsConfig
from rotator_aws.ssm_client import build_ssm_client, translate

__all__ = ["LABELS", "SsmConfig", "SsmProvider"]

LABELS = {State.CURRENT: "current", State.PREVIOUS: "previous", State.PENDING: "pending"}  # previous: newest
_DOC_SUFFIX = ".rotator"
_FOREIGN = "ssm-"  # version id of a value rotator did not write: "ssm-<parameter version>"
_COMPACT = (",", ":")


class SsmConfig(AwsConfig):
    """``providers: {params: {type: ssm, region: eu-west-1, kms_key_id: alias/rotator}}``."""

    type: Literal["ssm"] = "ssm"  # type: ignore[assignment]
    tier: Literal["Standard", "Advanced", "Intelligent-Tiering"] = "Standard"


class SsmProvider(DocumentProvider):
    """SSM parameters as keysets; safe to share between threads."""

    type_name: ClassVar[str] = "ssm"
    config_model: ClassVar[type[BaseModel]] = SsmConfig

    def __init__(self, *, name: str = "ssm", config: SsmConfig | None = None, base_dir: Path | None = None) -> None:
        del base_dir
        self.name = name
        self.config = config if config is not None else SsmConfig()
        self._client: Any = None
        self._lock = threading.Lock()
        self._writers: dict[str, threading.Lock] = {}  # one writer per parameter inside this process

    def __repr__(self) -> str:
        where = self.config.endpoint_url or self.config.region or "default region"
        return f"SsmProvider(name={self.name!r}, at={where!r}, prefix={self.config.name_prefix!r})"

    # --- DocumentProvider ----------------------------------------------------------------------------

    def read(self, ref: SecretRef) -> Keyset | None:
        name = self._param(ref)
        found = self._document(name)
        if found is None:
            return self._foreign(ref, name)
        doc, revision = found
        numbers = {str(e["id"]): int(e["ssm"]) for e in doc["versions"] if e.get("ssm")}
        values = self._values(name, numbers.values())
        versions = tuple(version_from_json(e, values.get(numbers.get(str(e["id"]), -1))) for e in doc["versions"])
        return Keyset(name=ref.name, revision=str(revision), versions=versions, meta=dict(doc.get("meta") or {}))

    def read_state(self, ref: SecretRef) -> Keyset | None:
        """The keyset for deciding and stepping: the state document only (one call), values ``None``."""
        name = self._param(ref)
        found = self._document(name)
        if found is None:
            return self._foreign(ref, name)
        doc, revision = found
        versions = tuple(version_from_json(e, None) for e in doc["versions"])
        return Keyset(name=ref.name, revision=str(revision), versions=versions, meta=dict(doc.get("meta") or {}))

    def read_value(self, ref: SecretRef, version_id: str) -> SecretValue | None:
        """One GetParameter ``name:N`` of the number the document records for ``version_id``."""
        name = self._param(ref)
        found = self._document(name)
        entry = next((e for e in found[0]["versions"] if e["id"] == version_id), None) if found else None
        if entry is None or not entry.get("ssm"):
            return None
        return self._values(name, [int(entry["ssm"])]).get(int(entry["ssm"]))

    def write(self, ref: SecretRef, expected: Keyset | None, new: Keyset) -> Keyset:
        name = self._param(ref)
        with self._lock:
            writer = self._writers.setdefault(name, threading.Lock())
        with writer:
            return self._write(ref, name, expected, new)

    def _write(self, ref: SecretRef, name: str, expected: Keyset | None, new: Keyset) -> Keyset:
        found = self._document(name)
        if expected is None and found is not None:
            raise ConflictError(f"{ref.name}: {name} already exists")
        if expected is not None and expected.managed and (found is None or str(found[1]) != expected.revision):
            raise ConflictError(f"{ref.name}: the keyset changed since revision {expected.revision} was read")
        old_doc = found[0] if found else {"versions": []}
        numbers = {str(e["id"]): int(e["ssm"]) for e in old_doc["versions"] if e.get("ssm")}
        if expected is not None and not expected.managed:  # adopt: the foreign value is version N already
            numbers.update({v.id: int(v.id.removeprefix(_FOREIGN)) for v in expected.versions
                            if v.id.startswith(_FOREIGN)})
        for version in new.versions:
            if version.id not in numbers and version.value is not None:  # the first put of a new secret must
                numbers[version.id] = self._put(name, version.value.reveal(), secure=True,  # not clobber one
                                                overwrite=found is not None)
        entries = []
        for version in new.versions:
            entry = version_to_json(version)
            if version.id in numbers:
                entry["ssm"] = numbers[version.id]
            entries.append(entry)
        doc = json.dumps({"versions": entries, "meta": dict(new.meta)}, separators=_COMPACT, sort_keys=True)
        revision = self._put_document(name, doc, found[1] if found else None)
        labelled = _labels(expected, numbers) if expected is not None and expected.managed else {}
        self._move_labels(name, labelled, _labels(new, numbers))
        return new.replace(revision=str(revision), managed=True)

    def _foreign(self, ref: SecretRef, name: str) -> Keyset | None:
        """A parameter without a state document: an unmanaged keyset (``adopt: true`` takes it over)."""
        try:
            parameter = self._call("GetParameter", name, Name=name, WithDecryption=True)["Parameter"]
        except SecretNotFound:
            return None
        when = parameter["LastModifiedDate"]
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
        current = KeyVersion(id=f"{_FOREIGN}{parameter['Version']}", state=State.CURRENT, created_at=when,
                             promoted_at=when, value=SecretValue(str(parameter["Value"])))
        return Keyset(name=ref.name, revision="", versions=(current,), managed=False)

    def list(self) -> list[str]:
        """Paths (without a leading ``/``) of the parameters that have a state document."""
        prefix = _qualified(self.config.name_prefix) if self.config.name_prefix else ""
        return [str(p["Name"]).removesuffix(_DOC_SUFFIX).removeprefix(prefix).lstrip("/")
                for p in self._describe() if str(p["Name"]).endswith(_DOC_SUFFIX)]

    def check(self) -> None:
        self._call("DescribeParameters", "-", MaxResults=1)

    def close(self) -> None:
        with self._lock:
            self._client = None

    # --- SSM calls -----------------------------------------------------------------------------------

    def _param(self, ref: SecretRef) -> str:
        return _qualified(self.config.name_prefix + ref.path.lstrip("/"))

    def _document(self, name: str) -> tuple[dict[str, Any], int] | None:
        try:
            answer = self._call("GetParameter", name + _DOC_SUFFIX, Name=name + _DOC_SUFFIX)
        except SecretNotFound:
            return None
        parameter = answer["Parameter"]
        try:
            doc = json.loads(parameter["Value"])
            if not isinstance(doc, dict) or not isinstance(doc.get("versions"), list):
                raise ValueError("not a rotator state document")
        except ValueError as exc:
            raise BackendUnavailable(f"{name}{_DOC_SUFFIX} is not a rotator state document ({exc})",
                                     transient=False) from None
        return doc, int(parameter["Version"])

    def _values(self, name: str, numbers: Any) -> dict[int, SecretValue]:
        wanted = sorted(set(numbers))
        out: dict[int, SecretValue] = {}
        for start in range(0, len(wanted), 10):  # GetParameters takes at most 10 names
            selectors = [f"{name}:{n}" for n in wanted[start:start + 10]]
            answer = self._call("GetParameters", name, Names=selectors, WithDecryption=True)
            for parameter in answer.get("Parameters", []):
                out[int(parameter["Version"])] = SecretValue(str(parameter["Value"]))
        return out

    def _put(self, name: str, value: str, *, secure: bool, overwrite: bool = True) -> int:
        request: dict[str, Any] = {"Name": name, "Value": value, "Overwrite": overwrite, "Tier": self.config.tier,
                                   "Type": "SecureString" if secure else "String"}
        if secure and self.config.kms_key_id:
            request["KeyId"] = self.config.kms_key_id
        return int(self._call("PutParameter", name, **request)["Version"])

    def _put_document(self, name: str, doc: str, read_version: int | None) -> int:
        """Put the document; detect a racing writer by the returned version (see module docstring)."""
        doc_name = name + _DOC_SUFFIX
        if read_version is None:
            return self._put(doc_name, doc, secure=False, overwrite=False)  # ParameterAlreadyExists: conflict
        got = self._put(doc_name, doc, secure=False)
        if got == read_version + 1:
            return got
        winner = self._call("GetParameter", doc_name, Name=f"{doc_name}:{read_version + 1}")["Parameter"]["Value"]
        restored = self._put(doc_name, str(winner), secure=False)
        if restored != got + 1:
            raise BackendUnavailable(f"{doc_name}: several writers raced (versions {read_version + 1}..{restored})",
                                     hint="the next pass re-reads; run one writer per secret for strict CAS")
        raise ConflictError(f"{doc_name}: another writer saved version {read_version + 1} first; restored it")

    def _move_labels(self, name: str, before: dict[str, int], after: dict[str, int]) -> None:
        """Label moves: one LabelParameterVersion per target version, one Unlabel per dropped label."""
        by_version: dict[int, list[str]] = {}
        for label, number in after.items():
            if before.get(label) != number:
                by_version.setdefault(number, []).append(label)
        for number, labels in sorted(by_version.items()):
            answer = self._call("LabelParameterVersion", name, Name=name, ParameterVersion=number, Labels=labels)
            if answer.get("InvalidLabels"):
                raise BackendUnavailable(f"{name}: SSM refused the labels {answer['InvalidLabels']}", transient=False)
        for label, number in before.items():
            if label not in after:
                self._call("UnlabelParameterVersion", name, Name=name, ParameterVersion=number, Labels=[label])

    def _describe(self) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {"MaxResults": 50}
        if self.config.name_prefix:
            request["ParameterFilters"] = [{"Key": "Name", "Option": "BeginsWith",
                                            "Values": [_qualified(self.config.name_prefix)]}]
        while True:
            answer = self._call("DescribeParameters", "-", **request)
            yield from answer.get("Parameters", [])
            if not answer.get("NextToken"):
                return
            request["NextToken"] = answer["NextToken"]

    def _call(self, action: str, name: str, **request: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._ssm()
        method = getattr(client, "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_"))
        try:
            return method(**request)
        except (BotoCoreError, ClientError) as exc:
            raise translate(exc, action=action, name=name, endpoint=self.config.endpoint_url) from exc

    def _ssm(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = build_ssm_client(self.config)
            return self._client


def _qualified(name: str) -> str:
    """SSM wants a leading ``/`` on hierarchical names: ``app/hmac`` -> ``/app/hmac``."""
    return "/" + name if "/" in name and not name.startswith("/") else name


def _labels(keyset: Keyset | None, numbers: dict[str, int]) -> dict[str, int]:
    """``label -> parameter version`` that ``keyset``'s states imply (``previous``: the newest one)."""
    out: dict[str, int] = {}
    if keyset is None:
        return out
    for label, version in (("current", keyset.current), ("previous", keyset.previous), ("pending", keyset.pending)):
        if version is not None and version.id in numbers:
            out[label] = numbers[version.id]
    return out
