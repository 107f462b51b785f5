"""The boto3 client rotator uses, and the one place botocore exceptions become rotator errors.

Translation (everything leaves with ``raise ... from exc``)::

    ClientError ResourceNotFoundException          -> SecretNotFound (read() returns None instead)
    ClientError AccessDenied*, bad/expired token   -> AccessDenied   naming the IAM action and the secret
    NoCredentialsError and friends                 -> AccessDenied   (no usable credentials in the chain)
    ClientError ResourceExistsException            -> ConflictError
    ClientError throttling (after adaptive retry),
      5xx, KMS/decryption failures                 -> BackendUnavailable
    EndpointConnectionError, timeouts, closed conn -> BackendUnavailable naming the endpoint
    ProfileNotFound, NoRegionError                 -> ManifestError  (fix the provider configuration)
    anything else                                  -> ProviderError  with the AWS error code only

AWS messages are only quoted for access and existence errors: validation messages may echo parameters.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from rotator.errors import (
    AccessDenied,
    BackendUnavailable,
    ConflictError,
    ManifestError,
    ProviderError,
    RotatorError,
    SecretNotFound,
)
from rotator_aws._quota import QuotaRegistry
from rotator_aws.config import AwsConfig

__all__ = ["POLICY_HINT", "QUOTAS", "build_client", "snake", "translate"]

POLICY_HINT = "grant it to the caller (deploy/policies/aws-iam-policy.json lists what rotator needs)"
_DENIED = frozenset({
    "AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId",
    "ExpiredToken", "ExpiredTokenException", "SignatureDoesNotMatch", "InvalidSignatureException",
    "IncompleteSignature", "MissingAuthenticationToken", "AuthFailure", "UnauthorizedOperation",
})
_UNAVAILABLE = frozenset({
    "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
    "InternalServiceError", "InternalFailure", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException", "DecryptionFailure", "EncryptionFailure",
    "KMSAccessDeniedException", "KMSDisabledException", "KMSInvalidStateException", "KMSNotFoundException",
})
# botocore logs request and response bodies (secret values) at DEBUG: never let them through
_CHATTY = ("botocore.endpoint", "botocore.parsers", "botocore.hooks", "botocore.auth", "botocore.retryhandler",
           "urllib3.connectionpool")


# the process's token buckets, one set per account/region/endpoint: every client build_client makes for Secrets
# Manager draws from them, so all threads and all providers aimed at one account share its quota
QUOTAS = QuotaRegistry()


def _quiet_botocore() -> None:
    for name in _CHATTY:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


def build_client(config: AwsConfig, service: str = "secretsmanager", *,
                 keys: tuple[str, str] | None = None, quotas: QuotaRegistry | None = QUOTAS) -> Any:
    """A thread-safe client for ``service`` (default Secrets Manager): adaptive retries, timeouts, optional
    AssumeRole. ``keys`` (access key id, secret) replace boto3's credential chain, e.g. a managed admin key.
    A Secrets Manager client waits for a token of ``quotas`` before each HTTP attempt (None: no pacing)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError

    _quiet_botocore()
    try:
        if keys is not None:
            session = boto3.Session(aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
                                    region_name=config.region)
        else:
            session = boto3.Session(profile_name=config.profile, region_name=config.region)
        if config.assume_role_arn:
            session = _assume_role(session, config)
        settings = Config(
            retries={"mode": "adaptive", "max_attempts": config.max_attempts},
            connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
            max_pool_connections=config.max_pool_connections, user_agent_extra="rotator",
        )
        client = session.client(service, endpoint_url=config.endpoint_url, config=settings)
    except BotoCoreError as exc:
        raise translate(exc, action="CreateClient", name="-", endpoint=config.endpoint_url) from exc
    if service == "secretsmanager" and quotas is not None:
        key = (config.endpoint_url, client.meta.region_name, config.profile, config.assume_role_arn)
        quotas.get(key, config.quotas).attach(client)
    return client


def _assume_role(base: Any, config: AwsConfig) -> Any:
    """A session whose credentials come from STS AssumeRole, refreshed shortly before they expire."""
    import boto3
    import botocore.session
    from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials
    from botocore.exceptions import NoCredentialsError

    source = base.get_credentials()
    if source is None:
        raise NoCredentialsError()
    extra: dict[str, Any] = {"RoleSessionName": config.role_session_name}
    if config.external_id:
        extra["ExternalId"] = config.external_id

    def sts(service: str, **kwargs: Any) -> Any:
        return base.client(service, region_name=base.region_name, endpoint_url=config.endpoint_url, **kwargs)

    fetcher = AssumeRoleCredentialFetcher(sts, source, config.assume_role_arn, extra_args=extra)
    credentials = DeferredRefreshableCredentials(fetcher.fetch_credentials, "assume-role")
    core = botocore.session.Session()
    core._credentials = credentials  # botocore has no public setter; this is how its own docs wire it up
    return boto3.Session(botocore_session=core, region_name=base.region_name)


def snake(action: str) -> str:
    """The boto3 method name of an API action (``PutSecretValue`` -> ``put_secret_value``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", action).lower()


def _iam_action(action: str) -> str:
    return action if ":" in action else f"secretsmanager:{action}"


def translate(exc: Exception, *, action: str, name: str, endpoint: str | None) -> RotatorError:
    """The rotator error for a botocore exception raised by ``action`` on the secret called ``name``."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
        ProfileNotFound,
        ReadTimeoutError,
    )

    where = endpoint or "the AWS regional endpoint"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", ""))[:300]
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "ResourceNotFoundException":
            return SecretNotFound(f"AWS Secrets Manager has no secret {name} ({action})")
        if code in _DENIED:
            return AccessDenied(f"AWS denied {_iam_action(action)} on secret {name}: {code}: {message}",
                                hint=POLICY_HINT)
        if code == "ResourceExistsException":
            return ConflictError(f"{name}: {action} found it already exists (another actor was first)")
        if code in _UNAVAILABLE or status >= 500:
            return BackendUnavailable(f"AWS Secrets Manager at {where} failed {action} on {name}: {code}",
                                      hint="retry later; KMS errors mean the key cannot be used")
        return ProviderError(f"AWS Secrets Manager refused {action} on {name}: {code}")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | ConnectionClosedError):
        return BackendUnavailable(f"cannot reach AWS Secrets Manager at {where} ({action} {name}): "
                                  f"{type(exc).__name__}", hint="check endpoint_url, network and proxies")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AccessDenied(f"no usable AWS credentials for {_iam_action(action)} on {name}: "
                            f"{type(exc).__name__}",
                            hint="set AWS_PROFILE / AWS_ACCESS_KEY_ID, or run with an IAM role (IRSA)")
    if isinstance(exc, ProfileNotFound):
        return ManifestError(f"aws provider: profile {exc.kwargs.get('profile')!r} is not configured")
    if isinstance(exc, NoRegionError):
        return ManifestError("aws provider: no region: set `region` or AWS_REGION")
    if isinstance(exc, ParamValidationError):
        return ProviderError(f"invalid {action} request for {name} (rejected by botocore before sending)")
    return BackendUnavailable(f"AWS Secrets Manager at {where}: {action} on {name} failed: "
                              f"{type(exc).__name__}")
