"""Kubernetes sink for rotator: keep a Secret equal to the keyset, then restart the workloads that read it."""

from __future__ import annotations

__all__ = ["KubernetesSink", "KubernetesSinkConfig"]

from rotator_kubernetes.config import KubernetesSinkConfig
from rotator_kubernetes.sink import KubernetesSink
