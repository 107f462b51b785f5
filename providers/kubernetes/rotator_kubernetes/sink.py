"""The ``kubernetes`` sink: a Secret kept equal to the keyset, then ``kubectl rollout restart`` of readers.

Per delivery (see README "Deliver rotated values"):

1. ``GET`` the Secret (create it if missing and ``create`` is on). Compare the keys rotator owns (``key``,
   ``previous_key``) with the desired content; other keys are left alone.
2. Only if they differ: ``PUT`` the whole object with the ``metadata.resourceVersion`` just read (409 ->
   ``GET`` again and retry). The same write records the workloads still to restart in the annotation
   ``rotator.dev/restart-pending``, so a restart that fails (or a crash) is finished by the next pass.
3. Restart each pending Deployment as ``kubectl rollout restart`` does: a strategic-merge ``PATCH`` of
   ``spec.template.metadata.annotations["kubectl.kubernetes.io/restartedAt"]`` (local time, RFC 3339). A
   paused Deployment is skipped with a note, as kubectl refuses it. Then clear the annotation (one ``PUT``).

An unchanged Secret with nothing pending costs one ``GET`` and restarts nothing.
"""

from __future__ import annotations

import base64
import contextlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from rotator.errors import ExitCode
from rotator.sinks.base import Content, Delivery, SinkConfig, SinkError
from rotator_kubernetes._client import Apis, api_error, build_apis, is_status
from rotator_kubernetes.config import KubernetesSinkConfig

__all__ = ["PENDING", "RESTARTED_AT", "VERSIONS", "KubernetesSink"]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PENDING = "rotator.dev/restart-pending"
VERSIONS = "rotator.dev/versions"
_CONFLICT_RETRIES = 5


class KubernetesSink:
    """Deliver to one Secret in one namespace and restart the Deployments that read it."""

    type_name: ClassVar[str] = "kubernetes"
    config_model: ClassVar[type[SinkConfig]] = KubernetesSinkConfig

    def __init__(self, *, config: SinkConfig, base_dir: Path) -> None:
        assert isinstance(config, KubernetesSinkConfig)
        self.config = config
        self.base_dir = base_dir
        self._apis: Apis | None = None

    @property
    def target(self) -> str:
        where = f"{self.config.context}/" if self.config.context else ""
        return f"kubernetes:{where}{self.config.namespace}/{self.config.secret}"

    def deliver(self, content: Content) -> Delivery:
        wrote, pending = self._update_secret(content)
        if not pending:
            return Delivery(self.target, wrote)
        restarted: list[str] = []
        skipped: list[str] = []
        done: list[str] = []
        try:
            for name in pending:
                note = self._restart(name)
                done.append(name)
                (skipped if note else restarted).append(note or f"deployment/{name}")
        except SinkError:
            if done:  # at most once per rotation: what did restart is not restarted again next pass
                with contextlib.suppress(SinkError):
                    self._settle(done)
            raise
        self._settle(done)
        return Delivery(self.target, wrote, reloaded=tuple(restarted), skipped=tuple(skipped))

    def close(self) -> None:
        if self._apis is not None:
            self._apis.close()
            self._apis = None

    # --- the Secret --------------------------------------------------------------------------------

    def _update_secret(self, content: Content) -> tuple[bool, list[str]]:
        """Write the Secret if it differs; return (wrote, deployments still to restart)."""
        desired = {k: base64.b64encode(v.reveal().encode()).decode() for k, v in content.values.items()}
        for _ in range(_CONFLICT_RETRIES):
            secret = self._read_secret()
            if secret is None:
                if self._create(desired, content):
                    return True, self.config.deployments
                continue  # someone created it meanwhile: read and compare
            if secret.immutable:
                raise SinkError(f"{self.target}: the Secret is immutable; rotator cannot update it",
                                transient=False, hint="delete it (rotator recreates it) or drop immutable")
            held = dict(secret.data or {})
            new = {k: v for k, v in held.items() if k not in content.managed} | desired
            annotations = dict(secret.metadata.annotations or {})
            pending = [name for name in _pending(annotations) if name in self.config.deployments]
            if new == held:
                return False, pending
            pending = list(dict.fromkeys([*pending, *self.config.deployments]))
            annotations[VERSIONS] = content.fingerprint
            if pending:
                annotations[PENDING] = json.dumps(pending)
            secret.data = new
            secret.string_data = None
            secret.metadata.annotations = annotations
            if self._replace(secret):
                return True, pending
        raise SinkError(f"{self.target}: the Secret kept changing under us ({_CONFLICT_RETRIES} conflicts)",
                        exit_code=ExitCode.CONFLICT)

    def _settle(self, done: list[str]) -> None:
        """Drop the restarted Deployments from the pending annotation (the annotation goes when empty)."""
        for _ in range(_CONFLICT_RETRIES):
            secret = self._read_secret()
            if secret is None:
                return
            annotations = dict(secret.metadata.annotations or {})
            left = [name for name in _pending(annotations) if name not in done]
            if PENDING not in annotations:
                return
            if left:
                annotations[PENDING] = json.dumps(left)
            else:
                del annotations[PENDING]
            secret.metadata.annotations = annotations
            if self._replace(secret):
                return
        raise SinkError(f"{self.target}: restarted, but could not clear {PENDING} (conflicts); the next pass "
                        "restarts again", exit_code=ExitCode.CONFLICT)

    def _read_secret(self) -> Any:
        try:
            return self._api().core.read_namespaced_secret(self.config.secret, self.config.namespace,
                                                           _request_timeout=self.config.timeout)
        except Exception as exc:
            if is_status(exc, 404):
                return None
            raise api_error(exc, self.target, "read the Secret") from None

    def _replace(self, secret: Any) -> bool:
        """PUT ``secret`` at the resourceVersion it was read with; False on 409 (read again)."""
        try:
            self._api().core.replace_namespaced_secret(self.config.secret, self.config.namespace, secret,
                                                       _request_timeout=self.config.timeout)
        except Exception as exc:
            if is_status(exc, 409):
                return False
            raise api_error(exc, self.target, "update the Secret") from None
        return True

    def _create(self, data: dict[str, str], content: Content) -> bool:
        if not self.config.create:
            raise SinkError(f"{self.target}: the Secret does not exist and 'create' is off", transient=False,
                            hint=f"kubectl -n {self.config.namespace} create secret generic {self.config.secret}")
        annotations = {VERSIONS: content.fingerprint}
        if self.config.deployments:
            annotations[PENDING] = json.dumps(self.config.deployments)
        from kubernetes.client import V1ObjectMeta, V1Secret

        body = V1Secret(api_version="v1", kind="Secret", type="Opaque", data=data, metadata=V1ObjectMeta(
            name=self.config.secret, namespace=self.config.namespace, annotations=annotations,
            labels={"app.kubernetes.io/managed-by": "rotator"}))
        try:
            self._api().core.create_namespaced_secret(self.config.namespace, body,
                                                      _request_timeout=self.config.timeout)
        except Exception as exc:
            if is_status(exc, 409):
                return False
            error = api_error(exc, self.target, "create the Secret")
            if is_status(exc, 403):  # the least-privilege Role has no create: RBAC cannot scope it to a name
                error.hint = (f"create it once: kubectl -n {self.config.namespace} create secret generic "
                              f"{self.config.secret}; or grant create on secrets")
            raise error from None
        return True

    # --- restarts ----------------------------------------------------------------------------------

    def _restart(self, name: str) -> str | None:
        """Restart one Deployment like ``kubectl rollout restart``; a note instead when it is paused."""
        apps = self._api().apps
        workload = f"deployment/{name}"
        try:
            deployment = apps.read_namespaced_deployment(name, self.config.namespace,
                                                         _request_timeout=self.config.timeout)
        except Exception as exc:
            if not is_status(exc, 403):  # without `get`, restart without the paused check (kubectl needs it)
                raise api_error(exc, self.target, f"read {workload}") from None
            deployment = None
        if deployment is not None and deployment.spec is not None and deployment.spec.paused:
            return f"{workload} is paused: not restarted (run `kubectl rollout resume {workload}`)"
        stamp = datetime.now().astimezone().isoformat(timespec="seconds")  # kubectl: local time with offset
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        try:
            apps.patch_namespaced_deployment(name, self.config.namespace, patch, field_manager="rotator",
                                             _request_timeout=self.config.timeout)
        except Exception as exc:
            raise api_error(exc, self.target, f"restart {workload}") from None
        return None

    def _api(self) -> Apis:
        if self._apis is None:
            self._apis = build_apis(self.config.kubeconfig, self.config.context, self.base_dir)
        return self._apis


def _pending(annotations: dict[str, str]) -> list[str]:
    raw = annotations.get(PENDING)
    if not raw:
        return []
    try:
        names = json.loads(raw)
    except ValueError:
        return []
    return [str(n) for n in names] if isinstance(names, list) else []
