"""A Secrets Manager rotation Lambda that rotates with rotator's generators and verify hook.

For teams that keep Secrets Manager's own rotation schedule: deploy with handler
``rotator_aws.lambda_handler.handler``. Secrets Manager calls it four times per rotation with
``{"Step", "SecretId", "ClientRequestToken"}``; every step may be retried and is idempotent, like AWS's
published template::

    createSecret   a value already stored for the token -> nothing; else generate and put it as AWSPENDING
    setSecret      nothing to push (consumers read Secrets Manager; verifiers already accept AWSPENDING),
                   except for a database secret tagged ``rotator:target``: the target sets the password
    testSecret     read the pending value back: it must be a valid value of its kind and pass the verify hook;
                   a database secret must also log in (``_lambda_target``)
    finishSecret   token already AWSCURRENT -> nothing; else move AWSCURRENT to it (RemoveFromVersionId set)

Before any step: rotation must be enabled, the token must be a version of the secret, and it must be
AWSPENDING unless it is already AWSCURRENT (then the step is a no-op).

Configuration, in order: ``ROTATOR_MANIFEST`` + ``ROTATOR_SECRET`` (a manifest file in the deployment
package and the secret's entry: kind, generator options, verify hook, grace), else the secret's tags
``rotator:kind`` (required), ``rotator:bytes``, ``rotator:encoding``, ``rotator:prefix``, ``rotator:length``,
``rotator:rsa-bits``. Version records are tagged like the provider does, so ``rotator status`` shows them.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rotator.errors import IllegalTransition, ManifestError, VerifyFailed
from rotator.generators import GeneratorParams, check_params, generate, matches_kind
from rotator.keyset import SecretValue
from rotator_aws._client import build_client, snake, translate
from rotator_aws._lambda_target import DatabaseRotation, database_rotation
from rotator_aws._layout import CURRENT, PENDING, Remote, encode, info_tags, record_key
from rotator_aws.config import AwsConfig

__all__ = ["STEPS", "Settings", "handler", "settings_from_tags"]

log = logging.getLogger("rotator.aws.lambda")
STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")
_INT_TAGS = {"rotator:bytes": "bytes", "rotator:length": "length", "rotator:rsa-bits": "rsa_bits"}
_STR_TAGS = {"rotator:encoding": "encoding", "rotator:prefix": "prefix"}


@dataclass(frozen=True)
class Settings:
    """How to generate and check values for one secret."""

    params: GeneratorParams
    verify: list[str] | None = None
    verify_timeout: timedelta = timedelta(seconds=30)
    grace: timedelta | None = None
    base_dir: Path = Path(".")


def settings_from_tags(tags: Mapping[str, str]) -> Settings:
    """Generator settings from the secret's ``rotator:*`` tags."""
    kind = tags.get("rotator:kind")
    if not kind:
        raise ManifestError("rotation Lambda: the secret has no rotator:kind tag and ROTATOR_MANIFEST is not set")
    options: dict[str, Any] = {field: tags[tag] for tag, field in _STR_TAGS.items() if tag in tags}
    for tag, field in _INT_TAGS.items():
        if tag in tags:
            try:
                options[field] = int(tags[tag])
            except ValueError:
                raise ManifestError(f"rotation Lambda: tag {tag} must be a whole number") from None
    params = GeneratorParams(kind=kind, **options)  # type: ignore[arg-type]
    try:
        check_params(params)
    except ValueError as exc:
        raise ManifestError(f"rotation Lambda: secret tags: {exc}") from None
    return Settings(params=params)


def _settings_from_manifest(path: str, secret: str) -> Settings:
    from rotator.manifest import load_manifest

    manifest = load_manifest(path)
    policy = manifest.secrets.get(secret)
    if policy is None:
        raise ManifestError(f"rotation Lambda: ROTATOR_SECRET={secret!r} is not a secret of {path}")
    hook = policy.spec.verify
    return Settings(params=policy.params, verify=list(hook.command) if hook else None,
                    verify_timeout=hook.timeout if hook else timedelta(seconds=30), grace=policy.grace,
                    base_dir=manifest.base_dir)


class _Rotation:
    """One step of one rotation: the secret as described when the step started."""

    def __init__(self, client: Any, event: Mapping[str, Any]) -> None:
        self.client = client
        self.arn = str(event["SecretId"])
        self.token = str(event["ClientRequestToken"])
        self.desc = self._call("DescribeSecret", SecretId=self.arn)
        self.tags = {t["Key"]: t.get("Value", "") for t in self.desc.get("Tags") or []}
        self.stages: dict[str, list[str]] = dict(self.desc.get("VersionIdsToStages") or {})

    def _call(self, action: str, **request: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(self.client, snake(action))
        try:
            return method(**request)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, action=action, name=self.arn, endpoint=self.client.meta.endpoint_url) from exc

    def settings(self) -> Settings:
        manifest, secret = os.environ.get("ROTATOR_MANIFEST"), os.environ.get("ROTATOR_SECRET")
        if manifest and secret:
            return _settings_from_manifest(manifest, secret)
        return settings_from_tags(self.tags)

    def already_done(self) -> bool:
        """Validate the event; True when the token is already AWSCURRENT (every step is then a no-op)."""
        if not self.desc.get("RotationEnabled"):
            raise IllegalTransition(f"rotation is not enabled for secret {self.arn}")
        if self.token not in self.stages:
            raise IllegalTransition(f"secret {self.arn} has no version {self.token} to rotate")
        labels = self.stages[self.token]
        if CURRENT in labels:
            log.info("rotation.already_current secret=%s version=%s", self.arn, self.token)
            return True
        if PENDING not in labels:
            raise IllegalTransition(f"version {self.token} of secret {self.arn} is not AWSPENDING")
        return False

    def pending_value(self) -> SecretValue | None:
        text = self._read(self.arn, PENDING, version=self.token)
        return SecretValue(text) if text is not None else None

    def _read(self, ref: str, stage: str, *, version: str | None = None) -> str | None:
        """The SecretString of ``ref`` at ``stage`` (and ``version``), None when there is none."""
        from botocore.exceptions import ClientError

        request = {"SecretId": ref, "VersionStage": stage, **({"VersionId": version} if version else {})}
        try:
            answer = self.client.get_secret_value(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise translate(exc, action="GetSecretValue", name=ref, endpoint=self.client.meta.endpoint_url) from exc
        text = answer.get("SecretString")
        return str(text) if text is not None else None

    def database(self) -> DatabaseRotation | None:
        """The target rotation of a database secret (tag ``rotator:target``), else None."""
        if "rotator:target" not in self.tags:
            return None
        return database_rotation(self.arn, self.tags, self._read(self.arn, CURRENT),
                                 lambda ref, stage: self._read(ref, stage))

    def set(self) -> None:
        database = self.database()
        pending = self.pending_value()
        if database is None or pending is None:
            log.info("rotation.set_skipped secret=%s version=%s", self.arn, self.token)
            return
        database.set(pending)
        log.info("rotation.set secret=%s version=%s target=%s", self.arn, self.token, self.tags["rotator:target"])

    def create(self) -> None:
        self._call("GetSecretValue", SecretId=self.arn, VersionStage=CURRENT)  # there must be a current
        if self.pending_value() is not None:
            log.info("rotation.create_skipped secret=%s version=%s reason=value exists", self.arn, self.token)
            return
        settings = self.settings()
        made = generate(settings.params)
        database = self.database()
        value = database.pending_document(made.value) if database else made.value
        record: dict[str, Any] = {"c": datetime.now(UTC).isoformat(), "a": self.token, "by": "aws-lambda"}
        if made.public:
            record["pub"] = dict(made.public, kid=self.token)
        if self.tags.get("rotator:managed") == "true":
            self._call("TagResource", SecretId=self.arn,
                       Tags=[{"Key": k, "Value": v} for k, v in encode(record_key(self.token), record).items()])
        self._call("PutSecretValue", SecretId=self.arn, ClientRequestToken=self.token,
                   SecretString=value.reveal(), VersionStages=[PENDING])
        log.info("rotation.created secret=%s version=%s", self.arn, self.token)

    def test(self) -> None:
        value = self.pending_value()
        if value is None:
            raise VerifyFailed(f"secret {self.arn}: no pending value for version {self.token}; run createSecret")
        settings = self.settings()
        database = self.database()
        checked = SecretValue(database.test(value)) if database else value  # a database secret: its password
        if not matches_kind(settings.params.kind, checked.reveal(), settings.params):
            raise VerifyFailed(f"secret {self.arn}: pending version {self.token} is not a valid "
                               f"{settings.params.kind}")
        if settings.verify:
            from rotator.hooks import run_hook

            result = run_hook(settings.verify, value, timeout=settings.verify_timeout, cwd=settings.base_dir,
                              secret=self.arn, version=self.token, kind=settings.params.kind)
            if not result.ok:
                raise VerifyFailed(f"secret {self.arn}: verify hook failed for {self.token}: {result.reason}")
        log.info("rotation.tested secret=%s version=%s", self.arn, self.token)

    def finish(self) -> None:
        current = next((vid for vid, labels in self.stages.items() if CURRENT in labels), None)
        if current == self.token:
            return
        if self.tags.get("rotator:managed") == "true" and current is not None:
            self._record_promotion(current)
        request: dict[str, Any] = {"SecretId": self.arn, "VersionStage": CURRENT, "MoveToVersionId": self.token}
        if current is not None:
            request["RemoveFromVersionId"] = current
        self._call("UpdateSecretVersionStage", **request)
        log.info("rotation.finished secret=%s version=%s previous=%s", self.arn, self.token, current)

    def _record_promotion(self, current: str) -> None:
        now = datetime.now(UTC)
        remote = Remote.from_describe(self.desc)
        new = {k: v for k, v in remote.record(self.token).items() if k not in ("e", "r", "why")}
        new["p"] = now.isoformat()
        old = {k: v for k, v in remote.record(current).items() if k not in ("r", "why")}
        grace = self.settings().grace if os.environ.get("ROTATOR_MANIFEST") else None
        expires = now + grace if grace else None
        if expires is not None:
            old["e"] = expires.isoformat()
        tags = {**encode(record_key(self.token), new), **encode(record_key(current), old),
                **info_tags(now, expires)}
        self._call("TagResource", SecretId=self.arn, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


@functools.lru_cache(maxsize=4)
def _client(region: str | None, endpoint: str | None) -> Any:
    """One client per warm Lambda container (botocore reads AWS_ENDPOINT_URL itself)."""
    return build_client(AwsConfig(region=region))


def handler(event: Mapping[str, Any], context: Any) -> None:
    """Entry point for Secrets Manager's rotation: run ``event["Step"]`` for ``event["ClientRequestToken"]``."""
    step = event.get("Step")
    if step not in STEPS:
        raise IllegalTransition(f"unknown rotation step {step!r}; expected one of {', '.join(STEPS)}")
    rotation = _Rotation(_client(os.environ.get("AWS_REGION"), os.environ.get("AWS_ENDPOINT_URL")), event)
    if rotation.already_done():
        return
    if step == "createSecret":
        rotation.create()
    elif step == "testSecret":
        rotation.test()
    elif step == "finishSecret":
        rotation.finish()
    else:
        rotation.set()
