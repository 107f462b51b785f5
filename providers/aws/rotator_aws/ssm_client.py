"""The SSM client the ``ssm`` provider uses, and the one place its botocore exceptions become rotator errors.

Translation (everything leaves with ``raise ... from exc``)::

    ParameterNotFound, ParameterVersionNotFound   -> SecretNotFound
    ParameterAlreadyExists                        -> ConflictError  (another writer created it first)
    AccessDenied*, bad/expired token, no creds    -> AccessDenied   naming the IAM action and the parameter
    ParameterMaxVersionLimitExceeded,
      ParameterVersionLabelLimitExceeded          -> BackendUnavailable(transient=False) with what to do
    throttling, 5xx, KMS errors, network          -> BackendUnavailable
    anything else                                 -> ProviderError  with the AWS error code only
"""

from __future__ import annotations

from typing import Any

from rotator.errors import (
    AccessDenied,
    BackendUnavailable,
    ConflictError,
    ProviderError,
    RotatorError,
    SecretNotFound,
)
from rotator_aws._client import _DENIED, _UNAVAILABLE, _assume_role, _quiet_botocore
from rotator_aws._client import translate as translate_secretsmanager
from rotator_aws.config import AwsConfig

__all__ = ["SSM_POLICY_HINT", "build_ssm_client", "translate"]

SSM_POLICY_HINT = "grant it to the caller (deploy/policies/aws-ssm-policy.json lists what the ssm provider needs)"
_UNAVAILABLE_SSM = _UNAVAILABLE | {"InternalServerError", "TooManyUpdates"}


def build_ssm_client(config: AwsConfig) -> Any:
    """A thread-safe SSM client: adaptive retries (throttling), timeouts, optional AssumeRole."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    _quiet_botocore()
    try:
        session = boto3.Session(profile_name=config.profile, region_name=config.region)
        if config.assume_role_arn:
            session = _assume_role(session, config)
        settings = Config(
            retries={"mode": "adaptive", "max_attempts": config.max_attempts},
            connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
            max_pool_connections=config.max_pool_connections, user_agent_extra="rotator",
        )
        return session.client("ssm", endpoint_url=config.endpoint_url, config=settings)
    except BotoCoreError as exc:
        raise translate(exc, action="CreateClient", name="-", endpoint=config.endpoint_url) from exc


def translate(exc: Exception, *, action: str, name: str, endpoint: str | None) -> RotatorError:
    """The rotator error for a botocore exception raised by SSM ``action`` on parameter ``name``."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):  # network, credentials, configuration: same as Secrets Manager
        error = translate_secretsmanager(exc, action=f"ssm:{action}", name=name, endpoint=endpoint)
        error.message = error.message.replace("AWS Secrets Manager", "AWS SSM").replace("on secret", "on parameter")
        return error
    detail = exc.response.get("Error", {})
    code = str(detail.get("Code", "Unknown"))
    message = str(detail.get("Message", ""))[:300]
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    if code in ("ParameterNotFound", "ParameterVersionNotFound"):
        return SecretNotFound(f"AWS SSM has no parameter {name} ({action})")
    if code == "ParameterAlreadyExists":
        return ConflictError(f"{name}: {action} found it already exists (another actor was first)")
    if code in _DENIED:
        return AccessDenied(f"AWS denied ssm:{action} on parameter {name}: {code}: {message}", hint=SSM_POLICY_HINT)
    if code == "ParameterMaxVersionLimitExceeded":
        return BackendUnavailable(
            f"AWS SSM keeps 100 versions of {name} and its oldest still carries a label, so {action} is refused",
            hint="rotator moves its labels off old versions; remove foreign labels from the oldest version "
                 "(aws ssm unlabel-parameter-version)", transient=False)
    if code == "ParameterVersionLabelLimitExceeded":
        return BackendUnavailable(f"a version of {name} already has 10 labels ({action})",
                                  hint="remove labels that are not rotator's", transient=False)
    if code in _UNAVAILABLE_SSM or status >= 500:
        return BackendUnavailable(f"AWS SSM at {endpoint or 'the AWS regional endpoint'} failed {action} on "
                                  f"{name}: {code}", hint="retry later; KMS errors mean the key cannot be used")
    return ProviderError(f"AWS SSM refused {action} on {name}: {code}")
