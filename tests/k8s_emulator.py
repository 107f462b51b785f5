"""An in-process Kubernetes API server for the Secrets and Deployments endpoints, stdlib (+jsonpatch) only.

No API server can run on these machines, so the kubernetes sink is tested against this emulator, written
from the API reference (shared/reference/targets-and-delivery.md section 7) and kept honest by
tests/test_k8s_emulator.py, which drives it with the official ``kubernetes`` client:

- Status bodies for 401/403/404/409/415/422 exactly as apimachinery builds them (``details.kind`` is the
  plural resource, no ``group`` for core resources);
- ``PUT`` with a stale ``metadata.resourceVersion`` is 409 Conflict; without one the update is
  unconditional (Secrets and Deployments allow unconditional updates);
- ``stringData`` is merged into ``data`` on write and never read back; ``immutable: true`` freezes ``data``;
- ``PATCH`` takes ``application/strategic-merge-patch+json`` (maps merge, ``null`` deletes, lists of
  containers/env/volumes/ports merge by their key, other lists are replaced), ``application/merge-patch+json``
  (RFC 7386) and ``application/json-patch+json`` (RFC 6902); anything else is 415;
- Deployments are complete objects (the 37.x client validates responses) whose ``metadata.generation``
  goes up when ``spec`` changes; ``rollouts`` counts pod-template changes (what restarts pods);
- a bearer token maps to the verbs it may use on named objects, like a Role with ``resourceNames``.

Gaps (not needed by rotator): no watch, list, server-side apply, field selectors, admission or defaulting
beyond what is listed.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jsonpatch

Body = dict[str, Any]
_ROUTE = re.compile(r"^/(?:api/v1|apis/apps/v1)/namespaces/([a-z0-9.-]+)/(secrets|deployments)(?:/([a-z0-9.-]+))?$")
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
               "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}
_PATCH_TYPES = ("application/strategic-merge-patch+json", "application/merge-patch+json",
                "application/json-patch+json")
_VERBS = {"GET": "get", "PUT": "update", "PATCH": "patch", "POST": "create", "DELETE": "delete"}
_KINDS = {"secrets": ("v1", "Secret"), "deployments": ("apps/v1", "Deployment")}


class _Reply(Exception):
    def __init__(self, status: int, body: Body) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def status(code: int, reason: str, message: str, *, name: str | None = None, kind: str | None = None) -> Body:
    """A ``metav1.Status`` failure body as the API server sends it."""
    body: Body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
                  "reason": reason, "code": code}
    if not reason:
        del body["reason"]
    if name is not None or kind is not None:
        body["details"] = {k: v for k, v in (("name", name), ("kind", kind)) if v is not None}
    # apimachinery orders fields kind, apiVersion, metadata, status, message, reason, details, code
    return {k: body[k] for k in ("kind", "apiVersion", "metadata", "status", "message", "reason", "details",
                                 "code") if k in body}


def conflict(resource: str, name: str) -> Body:
    return status(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
                  "modified; please apply your changes to the latest version and try again",
                  name=name, kind=resource)


def not_found(resource: str, name: str) -> Body:
    return status(404, "NotFound", f'{resource} "{name}" not found', name=name, kind=resource)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def strategic_merge(target: Any, patch: Any, key: str | None = None) -> Any:
    """Strategic merge for the core/apps types used here: maps merge, known lists merge by their key."""
    if isinstance(patch, list) and isinstance(target, list) and key in _MERGE_KEYS:
        merge_key = _MERGE_KEYS[key]
        out = [copy.deepcopy(item) for item in target]
        for item in patch:
            index = next((i for i, old in enumerate(out) if isinstance(item, dict)
                          and old.get(merge_key) == item.get(merge_key)), None)
            if isinstance(item, dict) and item.get("$patch") == "delete":
                if index is not None:
                    out.pop(index)
            elif index is None:
                out.append(copy.deepcopy(item))
            else:
                out[index] = strategic_merge(out[index], item)
        return out
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = strategic_merge(out.get(name), value, name)
    return out


@dataclass
class Grant:
    """What one token may do: ``{(resource, namespace, name): {verbs}}``; ``None`` name = any object."""

    user: str
    rules: dict[tuple[str, str, str | None], set[str]] = field(default_factory=dict)

    def allows(self, verb: str, resource: str, namespace: str, name: str | None) -> bool:
        for (res, ns, obj), verbs in self.rules.items():
            if res == resource and ns == namespace and (obj is None or obj == name) and verb in verbs:
                return True
        return False


class KubernetesEmulator:
    """Secrets (core/v1) and Deployments (apps/v1) of a few namespaces, over HTTP on 127.0.0.1."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], Body] = {}
        self._revision = itertools.count(1000)
        self._lock = threading.RLock()
        self.grants: dict[str, Grant] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, content type)
        self.rollouts: dict[tuple[str, str], int] = {}
        self.internal_errors: list[str] = []
        self.fail_next: list[int] = []  # status codes to answer the next requests with (outage drills)
        self.before_write: list[Any] = []  # callables run inside the next write (race drills)
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubernetesEmulator:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="k8s-emulator", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> KubernetesEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- fixtures --------------------------------------------------------------------------------------

    def grant(self, token: str, user: str, rules: Iterable[tuple[str, str, str | None, Iterable[str]]]) -> None:
        """Let ``token`` use ``verbs`` on ``(resource, namespace, name)`` (name None: every object)."""
        self.grants[token] = Grant(user, {(r, ns, n): set(v) for r, ns, n, v in rules})

    def add_deployment(self, namespace: str, name: str, *, paused: bool = False) -> Body:
        labels = {"app": name}
        body: Body = {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "replicas": 2, "selector": {"matchLabels": labels}, "revisionHistoryLimit": 10,
                "progressDeadlineSeconds": 600,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": labels}, "spec": {
                    "containers": [{"name": "app", "image": "example/app:1", "imagePullPolicy": "IfNotPresent",
                                    "env": [{"name": "MODE", "value": "prod"}]}],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst"}},
            },
        }
        if paused:
            body["spec"]["paused"] = True
        return self._store("deployments", namespace, name, body, new=True)

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str], *, immutable: bool = False,
                   annotations: Mapping[str, str] | None = None) -> Body:
        body: Body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": name, "namespace": namespace, **({"annotations": dict(annotations)}
                                                                              if annotations else {})},
                      "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}
        if immutable:
            body["immutable"] = True
        return self._store("secrets", namespace, name, body, new=True)

    def get(self, resource: str, namespace: str, name: str) -> Body | None:
        with self._lock:
            found = self._objects.get((resource, namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        found = self.get("secrets", namespace, name)
        assert found is not None, f"no secret {namespace}/{name}"
        return {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}

    def writes(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] in ("PUT", "POST", "PATCH", "DELETE")]

    # --- HTTP ------------------------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], raw: bytes) -> tuple[int, Body]:
        path = urlsplit(raw_path).path
        headers = {k.lower(): v for k, v in headers.items()}  # HTTP header names are case-insensitive
        ctype = (headers.get("content-type") or "").split(";")[0].strip() or None
        with self._lock:
            self.requests.append((method, path, ctype))
            if self.fail_next:
                code = self.fail_next.pop(0)
                return code, status(code, "InternalError" if code >= 500 else "TooManyRequests",
                                    "injected failure")
        try:
            return self._route(method, path, headers, raw, ctype)
        except _Reply as reply:
            return reply.status, reply.body

    def _route(self, method: str, path: str, headers: Mapping[str, str], raw: bytes,
               ctype: str | None) -> tuple[int, Body]:
        match = _ROUTE.match(path)
        core = path.startswith("/api/v1/")
        if not match or (match.group(2) == "secrets") != core:
            raise _Reply(404, status(404, "NotFound", "the server could not find the requested resource"))
        namespace, resource, name = match.groups()
        self._authorize(headers, method, resource, namespace, name)
        if name is None:
            if method != "POST":
                raise _Reply(405, status(405, "MethodNotAllowed", "the server does not allow this method"))
            return self._create(resource, namespace, self._json(raw))
        with self._lock:
            if method == "GET":
                found = self.get(resource, namespace, name)
                if found is None:
                    raise _Reply(404, not_found(resource, name))
                return 200, found
            if method == "PUT":
                if ctype not in (None, "application/json"):
                    raise _Reply(415, status(415, "UnsupportedMediaType", 'the body of the request was in an '
                                             'unknown format - accepted media types include: application/json'))
                return 200, self._replace(resource, namespace, name, self._json(raw))
            if method == "PATCH":
                return 200, self._patch(resource, namespace, name, ctype, raw)
            if method == "DELETE":
                if self._objects.pop((resource, namespace, name), None) is None:
                    raise _Reply(404, not_found(resource, name))
                return 200, status(200, "", "deleted") | {"status": "Success"}
        raise _Reply(405, status(405, "MethodNotAllowed", "the server does not allow this method"))

    def _authorize(self, headers: Mapping[str, str], method: str, resource: str, namespace: str,
                   name: str | None) -> None:
        auth = headers.get("authorization") or ""
        grant = self.grants.get(auth.removeprefix("Bearer ").strip()) if auth.startswith("Bearer ") else None
        if grant is None:
            raise _Reply(401, status(401, "Unauthorized", "Unauthorized"))
        verb = _VERBS.get(method, method.lower())
        if not grant.allows(verb, resource, namespace, name):
            group = "" if resource == "secrets" else "apps"
            subject = f'{resource} "{name}" is forbidden' if name else f"{resource} is forbidden"
            raise _Reply(403, status(403, "Forbidden", f'{subject}: User "{grant.user}" cannot {verb} resource '
                                     f'"{resource}" in API group "{group}" in the namespace "{namespace}"',
                                     name=name, kind=resource))

    def _json(self, raw: bytes) -> Any:
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise _Reply(400, status(400, "BadRequest", f"the body of the request could not be decoded: {exc}")) \
                from None

    def _create(self, resource: str, namespace: str, body: Any) -> tuple[int, Body]:
        name = (body.get("metadata") or {}).get("name") if isinstance(body, dict) else None
        if not name:
            raise _Reply(422, status(422, "Invalid", f"{_KINDS[resource][1]} \"\" is invalid: metadata.name: "
                                     "Required value: name or generateName is required", kind=resource))
        with self._lock:
            if (resource, namespace, name) in self._objects:
                raise _Reply(409, status(409, "AlreadyExists", f'{resource} "{name}" already exists', name=name,
                                         kind=resource))
            return 201, self._store(resource, namespace, name, body, new=True)

    def _replace(self, resource: str, namespace: str, name: str, body: Any) -> Body:
        old = self.get(resource, namespace, name)
        if old is None:
            raise _Reply(404, not_found(resource, name))
        if not isinstance(body, dict) or (body.get("metadata") or {}).get("name") != name:
            raise _Reply(400, status(400, "BadRequest", "the name of the object does not match the name on the URL"))
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        self._run_race_hooks()
        current = self.get(resource, namespace, name)
        assert current is not None
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise _Reply(409, conflict(resource, name))
        return self._store(resource, namespace, name, body, old=current)

    def _patch(self, resource: str, namespace: str, name: str, ctype: str | None, raw: bytes) -> Body:
        if ctype not in _PATCH_TYPES:
            raise _Reply(415, status(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                                     f"format - accepted media types include: {', '.join(_PATCH_TYPES)}"))
        old = self.get(resource, namespace, name)
        if old is None:
            raise _Reply(404, not_found(resource, name))
        patch = self._json(raw)
        if ctype == "application/json-patch+json":
            try:
                new = jsonpatch.apply_patch(old, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise _Reply(422, status(422, "Invalid", str(exc), name=name, kind=resource)) from None
        elif ctype == "application/merge-patch+json":
            new = merge_patch(old, patch)
        else:
            new = strategic_merge(old, patch)
        wanted = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise _Reply(409, conflict(resource, name))
        new.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self._store(resource, namespace, name, new, old=old)

    def _run_race_hooks(self) -> None:
        while self.before_write:
            self.before_write.pop(0)()

    def _store(self, resource: str, namespace: str, name: str, body: Body, *, old: Body | None = None,
               new: bool = False) -> Body:
        api_version, kind = _KINDS[resource]
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = api_version, kind
        meta = obj.setdefault("metadata", {})
        meta.update(name=name, namespace=namespace)
        if old is None or new:
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        else:
            for key in ("uid", "creationTimestamp", "generation"):
                meta[key] = old["metadata"].get(key)
        if resource == "secrets":
            self._secret_rules(obj, old, name)
        else:
            self._deployment_rules(obj, old, namespace, name)
        meta["resourceVersion"] = str(next(self._revision))
        self._objects[(resource, namespace, name)] = obj
        return copy.deepcopy(obj)

    def _secret_rules(self, obj: Body, old: Body | None, name: str) -> None:
        string_data = obj.pop("stringData", None) or {}
        data = dict(obj.get("data") or {})
        data.update({k: base64.b64encode(str(v).encode()).decode() for k, v in string_data.items()})
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                raise _Reply(422, status(422, "Invalid", f'Secret "{name}" is invalid: data[{key}]: Invalid value: '
                                         '"<secret contents redacted>": illegal base64 data', name=name,
                                         kind="Secret")) from None
        obj["data"] = data
        obj.setdefault("type", "Opaque")
        if old is not None and old.get("immutable") and (old.get("data") != data or not obj.get("immutable")):
            raise _Reply(422, status(422, "Invalid", f'Secret "{name}" is invalid: data: Forbidden: field is '
                                     "immutable when `immutable` is set", name=name, kind="Secret"))

    def _deployment_rules(self, obj: Body, old: Body | None, namespace: str, name: str) -> None:
        spec = obj.get("spec") or {}
        if not spec.get("selector") or not spec.get("template"):
            raise _Reply(422, status(422, "Invalid", f'Deployment.apps "{name}" is invalid: spec.selector: Required '
                                     "value", name=name, kind="Deployment"))
        if old is not None and old.get("spec") != spec:
            obj["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if old is not None and old["spec"]["template"] != spec["template"] and not spec.get("paused"):
            self.rollouts[(namespace, name)] = self.rollouts.get((namespace, name), 0) + 1
        replicas = spec.get("replicas", 1)
        obj["status"] = {"observedGeneration": obj["metadata"]["generation"], "replicas": replicas,
                         "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _handler(emulator: KubernetesEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                code, body = emulator.handle(self.command, self.path, dict(self.headers.items()), raw)
            except Exception as exc:  # a bug in the emulator: make the test fail loudly
                emulator.internal_errors.append(repr(exc))
                code, body = 500, status(500, "InternalError", repr(exc))
            payload = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
