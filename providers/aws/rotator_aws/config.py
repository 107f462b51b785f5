"""Manifest configuration of the ``aws`` provider (``providers: {aws: {type: aws, region: eu-west-1}}``).

Credentials never appear here: boto3's standard chain finds them (environment, shared profile, container or
instance role, IRSA web identity). ``assume_role_arn`` adds an STS AssumeRole on top of that chain, refreshed
automatically before the temporary credentials expire.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rotator_aws._quota import QuotaConfig

__all__ = ["AwsConfig"]

_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
_PREFIX = re.compile(r"[A-Za-z0-9/_+=.@-]*")


class AwsConfig(BaseModel):
    """Where the secrets live and how to reach them; every field is optional."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["aws"] = "aws"
    region: str | None = None  # default: AWS_REGION / AWS_DEFAULT_REGION / the profile's region
    profile: str | None = None  # a named profile of ~/.aws/config
    endpoint_url: str | None = None  # LocalStack, moto or a VPC endpoint
    assume_role_arn: str | None = None
    external_id: str | None = Field(default=None, min_length=2, max_length=1224)
    role_session_name: str = Field(default="rotator", pattern=r"^[\w+=,.@-]{2,64}$")
    kms_key_id: str | None = None  # for secrets rotator creates; default: aws/secretsmanager
    name_prefix: str = ""  # AWS secret name = name_prefix + the secret's path
    max_attempts: int = Field(default=6, ge=1, le=20)  # botocore adaptive retry mode (throttling)
    connect_timeout: float = Field(default=5.0, gt=0, le=120)  # seconds
    read_timeout: float = Field(default=15.0, gt=0, le=300)  # seconds
    max_pool_connections: int = Field(default=32, ge=1, le=512)
    # requests/s per quota class, paced client-side (defaults: AWS's published quotas)
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("assume_role_arn")
    @classmethod
    def _role_arn(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.fullmatch(value):
            raise ValueError("must be an IAM role ARN like arn:aws:iam::123456789012:role/rotator")
        return value

    @field_validator("name_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX.fullmatch(value):
            raise ValueError("may only contain letters, digits and / _ + = . @ -")
        return value
