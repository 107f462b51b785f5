"""The ``aws_iam`` target: an IAM user's access keys, rotated with the ``dual`` strategy (two keys per user).

IAM issues the credential (``ISSUES``): :meth:`IamTarget.issue` calls CreateAccessKey and returns
``{username, access_key_id, secret_access_key}``; the secret exists only in that answer. IAM allows two keys per
user and **Inactive keys count** (reference section 5), so before creating a key, ``issue`` deletes every key of
the user that is not in ``keep``: those are leftovers of a crashed attempt whose secret nobody holds. The user must
therefore be one whose keys only rotator manages.

``disable`` (retire, revoke, discard) sets the key Inactive; with ``on_disable: delete`` it is then deleted at
once. Inactive is the default because a rollback can still re-enable the key (``enable`` = UpdateAccessKey
Active) and the next ``issue`` deletes it anyway when it makes room. ``login`` calls ``sts:GetCallerIdentity``
with the key, polling with backoff for up to ``login_timeout`` seconds (IAM is eventually consistent), and
checks the answer names the user.

Error translation (botocore exceptions never leave this module)::

    AccessDenied, InvalidClientTokenId, SignatureDoesNotMatch (admin) -> TargetDenied naming the IAM action
    the same codes during login                                       -> CredentialRefused
    throttling, 5xx, connection errors, timeouts                      -> TargetUnavailable
    NoSuchEntity on the user                                          -> OperationFailed (create the user)
    LimitExceeded after leftovers were deleted                        -> OperationFailed naming the kept keys
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from rotator.spi import (
    AdminCredentials,
    Binding,
    Capability,
    Credential,
    CredentialRefused,
    OperationFailed,
    TargetDenied,
    TargetUnavailable,
)
from rotator_aws._client import _DENIED, _UNAVAILABLE, build_client
from rotator_aws.config import AwsConfig

__all__ = ["IamTarget", "IamTargetConfig"]

log = logging.getLogger("rotator.targets.aws_iam")
T = TypeVar("T")
AdminKey = tuple[str, str] | None  # (access key id, secret), or None for boto3's credential chain
POLICY = "deploy/policies/aws-iam-target-policy.json"
_REFUSED = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken"})
_BAD_KEY = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch"})  # the admin key itself is wrong


class IamTargetConfig(BaseModel):
    """How to reach IAM (the connection keys mean what they mean for the ``aws`` store) and how keys retire."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None  # moto, LocalStack or a VPC endpoint (IAM and STS)
    assume_role_arn: str | None = None
    external_id: str | None = Field(default=None, min_length=2, max_length=1224)
    role_session_name: str = Field(default="rotator", pattern=r"^[\w+=,.@-]{2,64}$")
    max_attempts: int = Field(default=6, ge=1, le=20)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    read_timeout: float = Field(default=15.0, gt=0, le=300)
    on_disable: Literal["deactivate", "delete"] = "deactivate"
    login_timeout: float = Field(default=60.0, ge=0, le=600)  # seconds to wait for a new key to work

    def aws(self) -> AwsConfig:
        """The connection settings as the shared client builder takes them."""
        return AwsConfig(region=self.region, profile=self.profile, endpoint_url=self.endpoint_url,
                         assume_role_arn=self.assume_role_arn, external_id=self.external_id,
                         role_session_name=self.role_session_name, max_attempts=self.max_attempts,
                         connect_timeout=self.connect_timeout, read_timeout=self.read_timeout)


class IamTarget:
    """Issue, enable, disable and test IAM access keys; see the module docstring for the contract."""

    type_name: ClassVar[str] = "aws_iam"
    config_model: ClassVar[type[IamTargetConfig]] = IamTargetConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DUAL, Capability.ISSUES})

    def __init__(self, *, name: str, config: IamTargetConfig, base_dir: Path, admin: AdminCredentials) -> None:
        self.name = name
        self.config = config
        self._admin = admin
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[Any, AdminKey]] = {}  # service -> (client, admin key used)
        self._sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"IamTarget(name={self.name!r}, endpoint={self.config.endpoint_url or 'aws'!r})"

    # --- the primitives ---------------------------------------------------------------------------------

    def fields(self, binding: Binding) -> dict[str, Any]:
        """``region`` when configured (what an SDK reading the document needs beside the key)."""
        return {"region": self.config.region} if self.config.region else {}

    def prepare(self, binding: Binding) -> None:
        """Check the IAM user exists: rotator manages its keys, never the user or its policies."""
        for username in binding.identities():
            self._get_user(username)

    def issue(self, binding: Binding, username: str, keep: Sequence[Credential]) -> Credential:
        """CreateAccessKey, after deleting the user's keys that are not in ``keep`` (crash leftovers)."""
        kept = {str(c["access_key_id"]) for c in keep if "access_key_id" in c}
        for attempt in (1, 2):
            present = self._remove_leftovers(username, kept)
            if len(present) >= 2:
                raise OperationFailed(
                    f"aws_iam target {self.name}: user {username} already holds two access keys rotator must "
                    f"keep ({', '.join(sorted(present))})",
                    hint="retire the previous credential first: IAM allows two keys per user")
            try:
                answer = self._call("CreateAccessKey", username,
                                    lambda iam: iam.create_access_key(UserName=username), passthrough=True)
            except _LimitExceeded:
                if attempt == 2:
                    raise OperationFailed(f"aws_iam target {self.name}: user {username} is at IAM's limit of two "
                                          "access keys (LimitExceeded) after leftovers were removed") from None
                continue
            key = answer["AccessKey"]
            log.info("IAM access key created", extra={"target": self.name, "username": username,
                                                      "access_key_id": key["AccessKeyId"]})
            return Credential({"username": username, "access_key_id": key["AccessKeyId"],
                               "secret_access_key": key["SecretAccessKey"], **self.fields(binding)})
        raise AssertionError("unreachable")  # pragma: no cover

    def enable(self, binding: Binding, credential: Credential) -> None:
        """UpdateAccessKey Active (a rollback re-enabling the previous key); a deleted key cannot come back."""
        username, key_id = self._key(binding, credential)
        try:
            self._call("UpdateAccessKey", username, lambda iam: iam.update_access_key(
                UserName=username, AccessKeyId=key_id, Status="Active"), passthrough=True)
        except _NoSuchEntity:
            raise OperationFailed(f"aws_iam target {self.name}: access key {key_id} of user {username} no longer "
                                  "exists, so it cannot be re-enabled",
                                  hint="rotate to issue a new key") from None

    def disable(self, binding: Binding, credential: Credential) -> None:
        """UpdateAccessKey Inactive, and DeleteAccessKey too with ``on_disable: delete``; absent is fine."""
        username, key_id = self._key(binding, credential)
        try:
            self._call("UpdateAccessKey", username, lambda iam: iam.update_access_key(
                UserName=username, AccessKeyId=key_id, Status="Inactive"), passthrough=True)
            if self.config.on_disable == "delete":
                self._delete(username, key_id)
        except _NoSuchEntity:
            return
        log.info("IAM access key disabled", extra={"target": self.name, "username": username,
                                                   "access_key_id": key_id, "action": self.config.on_disable})

    def login(self, binding: Binding, credential: Credential) -> None:
        """``sts:GetCallerIdentity`` signed with the key, polled with backoff while IAM propagates it."""
        from botocore.exceptions import BotoCoreError, ClientError

        username, key_id = self._key(binding, credential)
        sts = build_client(self.config.aws(), "sts", keys=(key_id, credential.secret))
        deadline, delay = time.monotonic() + self.config.login_timeout, 0.25
        while True:
            try:
                arn = str(sts.get_caller_identity()["Arn"])
                break
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in _REFUSED:
                    raise self._translate(exc, "sts:GetCallerIdentity", username) from exc
                if time.monotonic() >= deadline or not self._active(username, key_id):
                    raise CredentialRefused(f"aws_iam target {self.name}: access key {key_id} of user {username} "
                                            f"was refused ({code})") from exc
                self._sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 8.0)
            except BotoCoreError as exc:
                raise self._translate(exc, "sts:GetCallerIdentity", username) from exc
        if ":user/" not in arn or arn.rpartition(":user/")[2].rpartition("/")[2] != username:
            raise CredentialRefused(f"aws_iam target {self.name}: access key {key_id} logs in as another "
                                    f"identity, not user {username}")

    def check(self) -> None:
        """The admin credential works (``sts:GetCallerIdentity``)."""
        self._call("sts:GetCallerIdentity", "(rotator's admin)", lambda sts: sts.get_caller_identity(),
                   service="sts")

    def close(self) -> None:
        with self._lock:
            self._clients.clear()

    # --- helpers ----------------------------------------------------------------------------------------

    def _key(self, binding: Binding, credential: Credential) -> tuple[str, str]:
        username = credential.username or binding.username
        if username not in binding.identities():
            raise OperationFailed(f"aws_iam target {self.name}: user {username} is not an identity of secret "
                                  f"{binding.secret}")
        if "access_key_id" not in credential:
            raise OperationFailed(f"aws_iam target {self.name}: the credential of {username} has no access_key_id")
        return username, str(credential["access_key_id"])

    def _active(self, username: str, key_id: str) -> bool:
        """Whether IAM lists the key as Active (a refused key that is not will never start working)."""
        keys = self._list_keys(username)
        return keys.get(key_id) == "Active"

    def _list_keys(self, username: str) -> dict[str, str]:
        pages = self._call("ListAccessKeys", username, lambda iam: list(
            iam.get_paginator("list_access_keys").paginate(UserName=username)))
        return {k["AccessKeyId"]: k["Status"] for page in pages for k in page["AccessKeyMetadata"]}

    def _remove_leftovers(self, username: str, kept: set[str]) -> set[str]:
        """Delete the user's keys not in ``kept``; return the kept keys that exist."""
        keys = self._list_keys(username)
        for key_id, status in keys.items():
            if key_id in kept:
                continue
            log.warning("deleting an IAM access key rotator does not hold (leftover of an interrupted rotation)",
                        extra={"target": self.name, "username": username, "access_key_id": key_id,
                               "status": status})
            with contextlib.suppress(_NoSuchEntity):
                self._delete(username, key_id)
        return {k for k in keys if k in kept}

    def _get_user(self, username: str) -> None:
        self._call("GetUser", username, lambda iam: iam.get_user(UserName=username))

    def _delete(self, username: str, key_id: str) -> None:
        self._call("DeleteAccessKey", username, lambda iam: iam.delete_access_key(
            UserName=username, AccessKeyId=key_id), passthrough=True)

    def _admin_keys(self) -> list[AdminKey]:
        """The admin access keys, best first; ``[None]`` (boto3's credential chain) when none is configured."""
        keys: list[AdminKey] = [
            (str(c["access_key_id"]), c.secret) for c in self._admin() if "access_key_id" in c]
        return keys or [None]

    def _client(self, service: str, keys: AdminKey = None, *, switch: bool = False) -> tuple[Any, AdminKey]:
        """The cached admin client for ``service`` and the admin key it signs with; ``switch`` replaces it with a
        client for ``keys``."""
        with self._lock:
            if switch or service not in self._clients:
                use = keys if switch else self._admin_keys()[0]
                self._clients[service] = (build_client(self.config.aws(), service, keys=use), use)
            return self._clients[service]

    def _call(self, action: str, username: str, call: Callable[[Any], T], *, passthrough: bool = False,
              service: str = "iam") -> T:
        """Run ``call`` on the admin client, trying the next admin key when AWS does not know the one used
        (a managed admin key mid-rotation); NoSuchEntity/LimitExceeded raise markers when ``passthrough``."""
        from botocore.exceptions import BotoCoreError, ClientError

        client, used = self._client(service)
        tried: list[AdminKey] = []
        while True:
            try:
                return call(client)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code in _BAD_KEY:
                    tried.append(used)
                    untried = [k for k in self._admin_keys() if k not in tried]
                    if untried:
                        client, used = self._client(service, untried[0], switch=True)
                        continue
                if passthrough and code == "NoSuchEntity":
                    raise _NoSuchEntity from exc
                if passthrough and code == "LimitExceeded":
                    raise _LimitExceeded from exc
                raise self._translate(exc, action, username) from exc
            except BotoCoreError as exc:
                raise self._translate(exc, action, username) from exc

    def _translate(self, exc: Exception, action: str, username: str) -> Exception:
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        iam_action = action if ":" in action else f"iam:{action}"
        who = f"aws_iam target {self.name}"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _DENIED:
                return TargetDenied(f"{who}: AWS denied {iam_action} for user {username}: {code}",
                                    hint=f"attach {POLICY} to rotator's IAM identity")
            if code in _UNAVAILABLE or status >= 500:
                return TargetUnavailable(f"{who}: {iam_action} failed for user {username}: {code}")
            if code == "NoSuchEntity":
                return OperationFailed(f"{who}: IAM user {username} does not exist",
                                       hint="create the user; rotator manages its access keys only")
            return OperationFailed(f"{who}: IAM refused {iam_action} for user {username}: {code}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return TargetDenied(f"{who}: no usable AWS credentials for {iam_action}")
        return TargetUnavailable(f"{who}: cannot reach IAM at {self.config.endpoint_url or 'AWS'} ({iam_action}): "
                                 f"{type(exc).__name__}")


class _NoSuchEntity(Exception):
    """Internal marker: IAM answered NoSuchEntity (the caller decides whether that is fine)."""


class _LimitExceeded(Exception):
    """Internal marker: IAM answered LimitExceeded (two keys already)."""
