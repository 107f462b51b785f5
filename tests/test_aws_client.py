"""Error translation at the botocore boundary and validation of the ``aws`` provider configuration."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    ProfileNotFound,
    ReadTimeoutError,
)
from pydantic import ValidationError
from rotator_aws._client import translate
from rotator_aws.config import AwsConfig

from rotator.errors import (
    AccessDenied,
    BackendUnavailable,
    ConflictError,
    ManifestError,
    ProviderError,
    SecretNotFound,
)


def client_error(code: str, status: int = 400, message: str = "detail") -> ClientError:
    response: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "PutSecretValue")


@pytest.mark.parametrize(("exc", "kind"), [
    (client_error("ResourceNotFoundException"), SecretNotFound),
    (client_error("AccessDeniedException"), AccessDenied),
    (client_error("UnrecognizedClientException"), AccessDenied),
    (client_error("ExpiredTokenException"), AccessDenied),
    (client_error("ResourceExistsException"), ConflictError),
    (client_error("ThrottlingException"), BackendUnavailable),
    (client_error("DecryptionFailure"), BackendUnavailable),
    (client_error("SomethingNew", status=503), BackendUnavailable),
    (client_error("ValidationException"), ProviderError),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), BackendUnavailable),
    (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), BackendUnavailable),
    (NoCredentialsError(), AccessDenied),
    (NoRegionError(), ManifestError),
    (ProfileNotFound(profile="nope"), ManifestError),
])
def test_translation_table(exc: Exception, kind: type[Exception]) -> None:
    """Each botocore failure becomes the rotator error the provider contract promises."""
    assert type(translate(exc, action="PutSecretValue", name="app/key", endpoint="http://x")) is kind


def test_access_denied_names_action_secret_and_policy_file() -> None:
    """AccessDenied says which IAM action on which secret, and where the least-privilege policy is."""
    error = translate(client_error("AccessDeniedException", message="not authorized"), action="PutSecretValue",
                      name="arn:aws:secretsmanager:eu-west-1:1:secret:app/key", endpoint=None)
    assert "secretsmanager:PutSecretValue" in str(error)
    assert "arn:aws:secretsmanager:eu-west-1:1:secret:app/key" in str(error)
    assert "aws-iam-policy.json" in str(error.hint)


def test_unreachable_endpoint_is_named() -> None:
    """BackendUnavailable names the endpoint that could not be reached."""
    error = translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), action="DescribeSecret",
                      name="k", endpoint="http://127.0.0.1:9")
    assert "http://127.0.0.1:9" in str(error)


def test_validation_messages_are_not_quoted() -> None:
    """AWS validation messages can echo parameters (a value), so only the error code is kept."""
    secret = "hunter2-super-secret-value"
    error = translate(client_error("ValidationException", message=f"Value '{secret}' failed"),
                      action="PutSecretValue", name="k", endpoint=None)
    assert secret not in str(error)
    param = translate(ParamValidationError(report=f"value: {secret}"), action="PutSecretValue", name="k",
                      endpoint=None)
    assert secret not in str(param)


@pytest.mark.parametrize("bad", [
    {"endpoint_url": "localhost:4566"},
    {"assume_role_arn": "role/rotator"},
    {"name_prefix": "bad prefix!"},
    {"max_attempts": 0},
    {"regoin": "eu-west-1"},
])
def test_config_rejects_mistakes(bad: dict[str, Any]) -> None:
    """Typos and malformed values are refused when the manifest is loaded, naming the field."""
    with pytest.raises(ValidationError) as caught:
        AwsConfig.model_validate({"type": "aws", **bad})
    assert next(iter(bad)) in str(caught.value)


def test_config_defaults_need_nothing() -> None:
    """``{type: aws}`` alone is valid: region and credentials come from the standard AWS chain."""
    config = AwsConfig.model_validate({"type": "aws"})
    assert (config.region, config.endpoint_url, config.max_attempts) == (None, None, 6)
