"""Build the official ``kubernetes`` client (in-cluster or kubeconfig) and translate its errors.

Error tree (every client exception leaves this module as a :class:`~rotator.sinks.SinkError`)::

    ApiException 401/403            exit 4, not retried   the credentials or the Role do not allow it
    ApiException 409                (handled by the caller: GET again, retry)
    ApiException 422/400/404/415    exit 1, not retried   the object or request is wrong
    ApiException 429/5xx            exit 4, retried       the API server is busy or failing
    urllib3 errors, timeouts        exit 4, retried       the API server cannot be reached
    ConfigException                 exit 4, not retried   no usable kubeconfig / service-account token
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rotator.errors import ExitCode
from rotator.sinks.base import SinkError

__all__ = ["Apis", "api_error", "build_apis", "is_status"]


class Apis:
    """The two API groups the sink uses, sharing one connection pool."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)

    def close(self) -> None:
        self.api_client.close()


def build_apis(kubeconfig: str | None, context: str | None, base_dir: Path) -> Apis:
    """In-cluster when ``KUBERNETES_SERVICE_HOST`` is set and no kubeconfig is named; else the kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            path = None
            if kubeconfig is not None:
                candidate = Path(kubeconfig).expanduser()
                path = str(candidate if candidate.is_absolute() else base_dir / candidate)
            config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, context=context, client_configuration=configuration, persist_config=False)
    except (config.ConfigException, OSError) as exc:
        raise SinkError(f"kubernetes: cannot configure the client: {exc}", transient=False,
                        exit_code=ExitCode.BACKEND,
                        hint="set 'kubeconfig'/'context' on the sink, or run in a pod with a service account") \
            from None
    configuration.retries = 0  # rotator retries whole deliveries (tenacity); no hidden urllib3 retries
    return Apis(client.ApiClient(configuration))


def is_status(exc: BaseException, code: int) -> bool:
    """True when ``exc`` is an ApiException with HTTP status ``code``."""
    from kubernetes.client.exceptions import ApiException

    return isinstance(exc, ApiException) and exc.status == code


def api_error(exc: BaseException, target: str, doing: str) -> SinkError:
    """The SinkError for a client exception raised while ``doing`` something to ``target``."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        code = int(exc.status or 0)
        message = _status_message(exc.body) or exc.reason or "no message"
        text = f"{target}: {doing}: HTTP {code}: {message}"
        if code in (401, 403):
            return SinkError(text, transient=False, exit_code=ExitCode.BACKEND,
                             hint="check the Role in deploy/k8s-sinks/ (get/update on the Secret, "
                                  "get/patch on the Deployments)")
        if code == 429 or code >= 500:
            return SinkError(text, exit_code=ExitCode.BACKEND)
        return SinkError(text, transient=False)
    reason = type(exc).__name__
    return SinkError(f"{target}: {doing}: the API server cannot be reached ({reason})", exit_code=ExitCode.BACKEND)


def _status_message(body: Any) -> str | None:
    if not body:
        return None
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return None
    message = status.get("message") if isinstance(status, dict) else None
    return str(message)[:300] if message else None
