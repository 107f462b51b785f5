"""Manifest configuration of a ``redis`` target (``targets: {cache: {type: redis, host: ..., persist: ...}}``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RedisTargetConfig", "TlsConfig"]


class TlsConfig(BaseModel):
    """TLS to the Redis server: verification is on unless turned off explicitly (and loudly)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str | None = None  # PEM bundle; default: the system trust store
    cert_file: str | None = None  # client certificate (Redis `tls-auth-clients yes`)
    key_file: str | None = None
    verify: bool = True  # false: no certificate or hostname check (test set-ups only)

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class RedisTargetConfig(BaseModel):
    """Where the Redis server is and how ACL changes are made durable.

    ``persist`` has no default on purpose: an ACL change that only lives in memory is lost at the next restart,
    and which command makes it durable depends on how the server is configured (see the README, "Redis").
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=6379, ge=1, le=65535)
    db: int = Field(default=0, ge=0)
    tls: TlsConfig | None = None
    persist: Literal["acl_save", "config_rewrite", "none"]
    connect_timeout: float = Field(default=5.0, gt=0, le=120)  # seconds
    timeout: float = Field(default=10.0, gt=0, le=300)  # seconds per command
