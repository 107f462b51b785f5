"""Configuration of the ``kubernetes`` sink (one entry of a secret's ``sinks:`` list)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from rotator.sinks.base import SinkConfig

__all__ = ["KubernetesSinkConfig"]

_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class KubernetesSinkConfig(SinkConfig):
    """``{type: kubernetes, namespace, secret, key, restart: [deployment/NAME, ...]}``.

    The client is configured in-cluster when ``KUBERNETES_SERVICE_HOST`` is set and no ``kubeconfig`` is
    given, else from ``kubeconfig`` (default: ``$KUBECONFIG`` or ``~/.kube/config``) and ``context``.
    """

    type: Literal["kubernetes"]
    namespace: str = Field(pattern=_DNS_LABEL, max_length=63)
    secret: str = Field(pattern=_DNS_SUBDOMAIN, max_length=253)
    restart: list[str] = Field(default_factory=list)
    kubeconfig: str | None = None
    context: str | None = None
    create: bool = True  # create the Secret when missing (needs `create` on secrets, which RBAC cannot scope)
    timeout: float = Field(default=10.0, gt=0, le=300)

    @field_validator("restart")
    @classmethod
    def _workloads(cls, value: list[str]) -> list[str]:
        for workload in value:
            kind, _, name = workload.partition("/")
            if kind not in ("deployment", "deployments", "deploy") or not re.fullmatch(_DNS_SUBDOMAIN, name):
                raise ValueError(f"'{workload}' must be deployment/NAME (what `kubectl rollout restart` takes)")
        return value

    @property
    def deployments(self) -> list[str]:
        """Deployment names to restart, in the order given, without duplicates."""
        return list(dict.fromkeys(w.partition("/")[2] for w in self.restart))
