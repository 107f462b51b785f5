"""An in-process HashiCorp Vault server (KV v2 + token/AppRole/Kubernetes auth) for tests, stdlib only.

Faithful to the HTTP facts in shared/reference/vault-kv2-and-secrets-manager.md: response envelope, 200 vs
204, ``Content-Type: application/json`` without charset, CAS error strings, 404 shapes, ``max_versions``
pruning, ``custom_metadata`` limits, a path policy per token, ``sys/seal`` (503 while sealed).

    with VaultEmulator(root_token="root") as vault:
        hvac.Client(url=vault.address, token="root").secrets.kv.v2.read_secret_version("app", ...)

Standalone (for CLI subprocess tests): ``python tests/vault_emulator.py --port 0 --token root`` prints the
address on stdout and serves until killed; ``PUT /v1/sys/seal`` (root) and ``/v1/sys/unseal`` toggle sealing.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Body = dict[str, Any] | None
Policy = Mapping[str, "set[str] | list[str] | tuple[str, ...]"]
_CAS_MISMATCH = "check-and-set parameter did not match the current version"
_DENIED = "1 error occurred:\n\t* permission denied\n\n"
_BAD_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"
_UNSUPPORTED = "1 error occurred:\n\t* unsupported operation\n\n"
_PATCH_TYPE = "application/merge-patch+json"
_ROUTE = re.compile(r"^(.*?/(?:data|metadata|delete|undelete|destroy))/.*")


class _Reply(Exception):
    def __init__(self, status: int, body: Body) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def _fail(status: int, *errors: str) -> _Reply:
    return _Reply(status, {"errors": list(errors)})


def _ts(ns: int | None) -> str:
    """RFC 3339 with nanoseconds, trailing zeros trimmed (Go's RFC3339Nano); ``""`` when unset."""
    if ns is None:
        return ""
    secs, frac = divmod(ns, 1_000_000_000)
    digits = f"{frac:09d}".rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + (f".{digits}" if digits else "") + "Z"


def _go_duration(seconds: int) -> str:
    if seconds == 0:
        return "0s"
    h, rest = divmod(abs(seconds), 3600)
    m, s = divmod(rest, 60)
    text = (f"{h}h{m}m" if h else f"{m}m" if m else "") + f"{s}s"
    return ("-" if seconds < 0 else "") + text


def _parse_duration(raw: Any) -> int:
    if isinstance(raw, bool):
        raise _fail(400, "invalid duration")
    if isinstance(raw, int | float):
        return int(raw)
    parts = re.fullmatch(r"(-?)(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?|(-?\d+)", str(raw))
    if not parts or not str(raw):
        raise _fail(400, f"error converting input {raw} to a duration")
    if parts.group(5) is not None:
        return int(parts.group(5))
    sign = -1 if parts.group(1) else 1
    return sign * (int(parts.group(2) or 0) * 3600 + int(parts.group(3) or 0) * 60 + int(parts.group(4) or 0))


def _weak_int(raw: Any) -> int:
    """mapstructure.WeakDecode to int: bools, floats, numeric strings ("" is 0)."""
    if raw is None or raw == "":
        return 0
    if isinstance(raw, bool | int | float):
        return int(raw)
    if isinstance(raw, str):
        return int(raw, 0)
    raise ValueError(raw)


def _weak_str(raw: Any) -> str:
    if isinstance(raw, bool):
        return "1" if raw else "0"
    return "" if raw is None else str(raw)


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _multierror(errors: list[str]) -> str:
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "".join(f"\n\t* {e}" for e in errors) + "\n\n"


def _check_custom_metadata(raw: Any, *, drop_nulls: bool) -> dict[str, str | None]:
    prefix = "custom_metadata validation failed"
    if not isinstance(raw, dict):
        raise _fail(400, f"{prefix}: expected a map")
    meta = {k: (None if v is None and drop_nulls else _weak_str(v)) for k, v in raw.items()}
    checked = {k: v for k, v in meta.items() if v is not None}
    if len(checked) > 64:
        too_many = f"{prefix}: payload must contain at most 64 keys, provided {len(checked)}"
        raise _fail(400, _multierror([too_many]))
    errors: list[str] = []
    for key, value in sorted(checked.items()):
        if not 0 < len(key.encode()) <= 128:
            errors.append(f"{prefix}: length of key {json.dumps(key)} is {len(key.encode())} but must be "
                          "0 < len(key) <= 128")
        if not 0 < len(value.encode()) <= 512:
            errors.append(f"{prefix}: length of value for key {json.dumps(key)} is {len(value.encode())} but "
                          "must be 0 < len(value) <= 512")
        if not key.isprintable():
            errors.append(f"{prefix}: key {json.dumps(key)} ({key}) contains unprintable characters")
        if not value.isprintable():
            errors.append(f"{prefix}: value for key {json.dumps(key)} contains unprintable characters")
    if errors:
        raise _fail(400, _multierror(errors))
    return meta


@dataclass
class _Version:
    data: dict[str, Any] | None
    created: int
    deletion: int | None = None
    destroyed: bool = False

    def meta(self) -> dict[str, Any]:
        return {"created_time": _ts(self.created), "deletion_time": _ts(self.deletion),
                "destroyed": self.destroyed}


@dataclass
class _Key:
    created: int
    updated: int
    versions: dict[int, _Version] = field(default_factory=dict)
    current: int = 0
    oldest: int = 0
    max_versions: int = 0
    cas_required: bool = False
    dva: int = 0
    custom: dict[str, str] | None = None


@dataclass
class _Mount:
    keys: dict[str, _Key] = field(default_factory=dict)
    max_versions: int = 0
    cas_required: bool = False
    dva: int = 0


@dataclass
class _Token:
    id: str
    rules: dict[str, frozenset[str]] | None  # None: root
    ttl: int  # seconds granted at issue/renewal; 0 = never expires
    renewable: bool
    issued: int
    expires: int | None
    max_ttl: int = 0
    accessor: str = field(default_factory=lambda: str(uuid.uuid4()))


class VaultEmulator:
    """A Vault server on 127.0.0.1 (port 0 = any free port) holding KV v2 mounts in memory."""

    def __init__(self, *, root_token: str = "root", latency: float = 0.0, port: int = 0,
                 mounts: tuple[str, ...] = ("secret",)) -> None:
        self.latency = latency
        self.sealed = False
        self.root_token = root_token
        self.requests = 0
        self.request_log: list[tuple[str, str]] = []
        self.by_route: Counter[str] = Counter()
        self.internal_errors: list[str] = []
        self.namespaces_seen: set[str] = set()
        self.clock_offset = 0.0
        self.before_request: Callable[[VaultEmulator, str, str], None] | None = None  # e.g. seal at step N
        self._lock = threading.RLock()
        self._mounts = {m: _Mount() for m in mounts}
        self._tokens: dict[str, _Token] = {}
        self._approles: dict[str, dict[str, tuple[str, Policy, int]]] = {}
        self._k8s: dict[str, dict[str, tuple[str, Policy, int]]] = {}
        self.add_token(root_token, None, ttl=0, renewable=False)
        self._port = port
        self._server: ThreadingHTTPServer | None = None

    # --- lifecycle ------------------------------------------------------------------------------------
    @property
    def address(self) -> str:
        assert self._server is not None, "emulator not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> VaultEmulator:
        handler = type("Handler", (_Handler,), {"emulator": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        serve = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="vault-emulator",
                                 daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> VaultEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls -----------------------------------------------------------------------------------
    def now_ns(self) -> int:
        return time.time_ns() + int(self.clock_offset * 1e9)

    def advance(self, seconds: float) -> None:
        """Move the server clock forward (token expiry, deletion times)."""
        self.clock_offset += seconds

    def reset_counters(self) -> None:
        with self._lock:
            self.requests, self.request_log, self.by_route = 0, [], Counter()

    def enable_kv(self, mount: str, *, max_versions: int = 0, cas_required: bool = False) -> None:
        with self._lock:
            self._mounts[mount.strip("/")] = _Mount(max_versions=max_versions, cas_required=cas_required)

    def add_token(self, token: str, policy: Policy | None, *, ttl: int = 0, renewable: bool = True,
                  max_ttl: int = 0) -> str:
        """Register ``token`` allowed ``policy`` ({path glob: capabilities}; None = root)."""
        rules = None if policy is None else {p: frozenset(c) for p, c in policy.items()}
        now = self.now_ns()
        with self._lock:
            expires = now + ttl * 10**9 if ttl else None
            self._tokens[token] = _Token(token, rules, ttl, renewable, now, expires, max_ttl)
        return token

    def add_approle(self, role_id: str, secret_id: str, policy: Policy, *, ttl: int = 3600,
                    mount: str = "approle") -> None:
        self._approles.setdefault(mount, {})[role_id] = (secret_id, policy, ttl)

    def add_kubernetes_role(self, role: str, jwt: str, policy: Policy, *, ttl: int = 3600,
                            mount: str = "kubernetes") -> None:
        self._k8s.setdefault(mount, {})[role] = (jwt, policy, ttl)

    def revoke(self, token: str) -> None:
        """Forget ``token``: its next use answers 403 (invalid token)."""
        with self._lock:
            self._tokens.pop(token, None)

    def token_ttl(self, token: str) -> int | None:
        """Seconds left for ``token`` (None: unknown or never expires)."""
        tok = self._tokens.get(token)
        if tok is None or tok.expires is None:
            return None
        return max(0, (tok.expires - self.now_ns()) // 10**9)

    # --- request handling -------------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Mapping[str, str], raw: bytes) -> tuple[int, Body]:
        """Answer one HTTP request: (status, JSON body or None for 204)."""
        url = urlsplit(raw_path)
        path, query = unquote(url.path), parse_qs(url.query)
        with self._lock:
            self.requests += 1
            self.request_log.append((method, path))
        if self.latency:
            time.sleep(self.latency)
        if self.before_request is not None:
            self.before_request(self, method, path)
        if method == "GET" and query.get("list") == ["true"]:
            method = "LIST"
        if namespace := headers.get("X-Vault-Namespace"):
            self.namespaces_seen.add(namespace)
        try:
            if not path.startswith("/v1/"):
                raise _fail(404)
            path = path[4:]
            body = json.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise _fail(400, "failed to parse JSON input: expected an object")
            if method == "PATCH" and headers.get("Content-Type", "") != _PATCH_TYPE:
                raise _fail(415, f"PATCH requires Content-Type of {_PATCH_TYPE}, provided "
                                 f"{headers.get('Content-Type', '')}")
            with self._lock:
                return self._route(method, path, query, headers, body)
        except _Reply as reply:
            return reply.status, reply.body
        except json.JSONDecodeError:
            return 400, {"errors": ["failed to parse JSON input"]}
        except Exception as exc:  # a bug in the emulator: visible to tests through internal_errors
            self.internal_errors.append(f"{method} {path}: {exc!r}")
            return 500, {"errors": ["1 error occurred:\n\t* internal error\n\n"]}

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str],
               body: dict[str, Any]) -> tuple[int, Body]:
        if path in ("sys/health", "sys/seal-status"):
            state = {"initialized": True, "sealed": self.sealed, "standby": False, "version": "1.18.1-emu"}
            return (503 if self.sealed and path == "sys/health" else 200), state
        if path == "sys/unseal" and method in ("PUT", "POST"):
            self.sealed = False
            return 200, {"sealed": False, "t": 1, "n": 1, "progress": 0, "type": "shamir"}
        if self.sealed:
            raise _fail(503, "Vault is sealed")
        self.by_route[method + " " + _ROUTE.sub(r"\1", path)] += 1
        if path.startswith("auth/") and path.endswith("/login") and method in ("PUT", "POST"):
            return self._login(path[5:-6], body)
        token = self._token(headers)
        if path == "sys/seal" and method in ("PUT", "POST"):
            if token.rules is not None:
                raise _fail(403, _DENIED)
            self.sealed = True
            return 204, None
        if path == "auth/token/lookup-self" and method in ("GET", "POST"):
            return 200, self._envelope(self._token_data(token), mount_type="token")
        if path == "auth/token/renew-self" and method in ("PUT", "POST"):
            return self._renew(token, body)
        mounts = sorted(self._mounts, key=len, reverse=True)
        mount = next((m for m in mounts if path.startswith(m + "/")), None)
        if mount is None:
            raise _fail(404, f'no handler for route "{path}". route entry not found.')
        kv = _KV(self, mount, self._mounts[mount], token)
        return kv.dispatch(method, path[len(mount) + 1:], query, body)

    # --- auth ----------------------------------------------------------------------------------------------
    def _token(self, headers: Mapping[str, str]) -> _Token:
        raw = headers.get("X-Vault-Token") or ""
        if not raw and (bearer := headers.get("Authorization", "")).startswith("Bearer "):
            raw = bearer[7:]
        tok = self._tokens.get(raw)
        if tok is None:
            raise _fail(403, _BAD_TOKEN if raw else "permission denied")
        if tok.expires is not None and tok.expires <= self.now_ns():
            del self._tokens[raw]
            raise _fail(403, _BAD_TOKEN)
        return tok

    def allowed(self, token: _Token, acl_path: str, capability: str) -> bool:
        """Vault-style path policy: exact rule beats globs, longer globs beat shorter; ``deny`` wins."""
        if token.rules is None:
            return True
        best: tuple[int, int, frozenset[str]] | None = None
        for pattern, caps in token.rules.items():
            regex = re.escape(pattern).replace(r"\+", "[^/]+")
            exact = not pattern.endswith("*") and "+" not in pattern
            regex = regex[:-2] + ".*" if pattern.endswith("*") else regex
            if re.fullmatch(regex, acl_path):
                rank = (1 if exact else 0, len(pattern), caps)
                if best is None or rank[:2] > best[:2]:
                    best = rank
        return best is not None and "deny" not in best[2] and capability in best[2]

    def _issue(self, policy: Policy, ttl: int, mount_type: str) -> tuple[int, Body]:
        token = self.add_token("hvs." + uuid.uuid4().hex, policy, ttl=ttl, renewable=True)
        return 200, self._envelope(None, auth=self._auth(self._tokens[token], ttl), mount_type=mount_type)

    @staticmethod
    def _auth(tok: _Token, ttl: int) -> dict[str, Any]:
        return {"client_token": tok.id, "accessor": tok.accessor, "policies": ["default"],
                "token_policies": ["default"], "metadata": None, "lease_duration": ttl, "renewable": True,
                "entity_id": "", "token_type": "service", "orphan": True, "mfa_requirement": None,
                "num_uses": 0}

    def _login(self, mount: str, body: dict[str, Any]) -> tuple[int, Body]:
        if mount in self._approles:
            if not body.get("role_id"):
                raise _fail(400, "missing role_id")
            secret_id, policy, ttl = self._approles[mount].get(str(body["role_id"]), ("", {}, 0))
            if not secret_id or body.get("secret_id") != secret_id:
                raise _fail(400, "invalid role or secret ID")
            return self._issue(policy, ttl, "approle")
        if mount in self._k8s:
            role = str(body.get("role", ""))
            if role not in self._k8s[mount]:
                raise _fail(400, f'invalid role name "{role}"')
            jwt, policy, ttl = self._k8s[mount][role]
            if body.get("jwt") != jwt:
                raise _fail(403, "permission denied")
            return self._issue(policy, ttl, "kubernetes")
        raise _fail(404, f'no handler for route "auth/{mount}/login". route entry not found.')

    def _token_data(self, tok: _Token) -> dict[str, Any]:
        ttl = self.token_ttl(tok.id) or 0
        return {"accessor": tok.accessor, "creation_time": tok.issued // 10**9, "creation_ttl": tok.ttl,
                "display_name": "token", "entity_id": "", "expire_time": None if tok.expires is None
                else _ts(tok.expires), "explicit_max_ttl": tok.max_ttl, "id": tok.id, "meta": None,
                "num_uses": 0, "orphan": True, "path": "auth/token/create",
                "policies": ["root"] if tok.rules is None else ["default"], "renewable": tok.renewable,
                "ttl": ttl, "type": "service"}

    def _renew(self, tok: _Token, body: dict[str, Any]) -> tuple[int, Body]:
        if not tok.renewable or tok.expires is None:
            raise _fail(400, "lease is not renewable")
        ttl = _parse_duration(body["increment"]) if body.get("increment") else tok.ttl
        now = self.now_ns()
        warnings = None
        if tok.max_ttl:
            left = (tok.issued + tok.max_ttl * 10**9 - now) // 10**9
            if ttl > left:
                ttl, warnings = max(0, left), ["TTL of requested lease exceeds the max TTL; capped"]
        tok.expires = now + ttl * 10**9
        return 200, self._envelope(None, auth=self._auth(tok, ttl), warnings=warnings, mount_type="token")

    @staticmethod
    def _envelope(data: Any, *, auth: Any = None, warnings: list[str] | None = None,
                  mount_type: str = "kv") -> dict[str, Any]:
        return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False, "lease_duration": 0,
                "data": data, "wrap_info": None, "warnings": warnings, "auth": auth, "mount_type": mount_type}


class _KV:
    """One request against a KV v2 mount (the caller holds the emulator lock)."""

    def __init__(self, emu: VaultEmulator, name: str, mount: _Mount, token: _Token) -> None:
        self.emu, self.name, self.mount, self.token = emu, name, mount, token
        self.now = emu.now_ns()

    def _require(self, acl_path: str, capability: str) -> None:
        if not self.emu.allowed(self.token, f"{self.name}/{acl_path}", capability):
            raise _fail(403, _DENIED)

    def _write_cap(self, method: str, exists: bool) -> str:
        return "patch" if method == "PATCH" else "update" if exists else "create"

    def dispatch(self, method: str, sub: str, query: dict[str, list[str]],
                 body: dict[str, Any]) -> tuple[int, Body]:
        kind, _, key = sub.partition("/")
        write = method in ("POST", "PUT")
        if sub == "config" and method in ("GET", "POST", "PUT"):
            self._require(sub, "read" if method == "GET" else "update")
            return self._config(body if write else None)
        op = {("data", "GET"): "read", ("data", "DELETE"): "delete", ("metadata", "GET"): "read",
              ("metadata", "LIST"): "list", ("metadata", "DELETE"): "delete"}.get((kind, method))
        if kind in ("delete", "undelete", "destroy") and write and key:
            self._require(sub, "update")
            return self._versions(kind, key, body)
        if kind == "metadata" and method == "LIST":
            prefix = key if not key or key.endswith("/") else key + "/"
            self._require(f"metadata/{prefix}", "list")
            return self._list(prefix)
        if kind not in ("data", "metadata") or not key or key.endswith("/"):
            raise _fail(404, f'no handler for route "{self.name}/{sub}". route entry not found.')
        exists = key in self.mount.keys
        if write or method == "PATCH":
            op = self._write_cap(method, exists)
        if op is None:
            raise _fail(405, _UNSUPPORTED)
        self._require(sub, op)
        handler = getattr(self, f"_{kind}_{op if op not in ('create', 'update') else 'write'}")
        return handler(key, query, body)  # type: ignore[no-any-return]

    def _envelope(self, data: Any, warnings: list[str] | None = None) -> dict[str, Any]:
        return VaultEmulator._envelope(data, warnings=warnings)

    # --- data/ -------------------------------------------------------------------------------------------
    def _check_cas(self, body: dict[str, Any], meta: _Key) -> None:
        options = body.get("options") if isinstance(body.get("options"), dict) else {}
        if "cas" in options:
            try:
                cas = _weak_int(options["cas"])
            except ValueError:
                raise _fail(400, "error parsing check-and-set parameter") from None
            if cas != meta.current:
                raise _fail(400, _CAS_MISMATCH)
        elif self.mount.cas_required or meta.cas_required:
            raise _fail(400, "check-and-set parameter required for this call")

    def _add_version(self, key: str, meta: _Key, data: dict[str, Any]) -> tuple[int, Body]:
        dvas = [d for d in (meta.dva, self.mount.dva) if d > 0] if self.mount.dva >= 0 else []
        version = _Version(data, self.now, self.now + min(dvas) * 10**9 if dvas else None)
        meta.current += 1
        meta.versions[meta.current] = version
        meta.updated = self.now
        limit = max(meta.max_versions, self.mount.max_versions) or 10
        if meta.current - meta.oldest >= limit:
            drop = meta.current - limit
            for number in range(meta.oldest, drop + 1):
                meta.versions.pop(number, None)
            meta.oldest = drop + 1
        self.mount.keys[key] = meta
        return 200, self._envelope({**version.meta(), "custom_metadata": meta.custom,
                                    "version": meta.current})

    def _data_write(self, key: str, _q: object, body: dict[str, Any]) -> tuple[int, Body]:
        if not isinstance(body.get("data"), dict):
            raise _fail(400, "no data provided")
        meta = self.mount.keys.get(key) or _Key(created=self.now, updated=self.now)
        self._check_cas(body, meta)
        return self._add_version(key, meta, body["data"])

    def _gone(self, version: _Version) -> bool:
        return version.destroyed or (version.deletion is not None and version.deletion <= self.now)

    def _data_read(self, key: str, query: dict[str, list[str]], _b: object) -> tuple[int, Body]:
        meta = self.mount.keys.get(key)
        if meta is None:
            raise _fail(404)
        try:
            number = _weak_int(query.get("version", ["0"])[0]) or meta.current
        except ValueError:
            raise _fail(400, _multierror(['error converting input for field "version"'])) from None
        version = meta.versions.get(number)
        if version is None:
            raise _fail(404)
        info = {**version.meta(), "custom_metadata": meta.custom, "version": number}
        if self._gone(version):
            raise _Reply(404, self._envelope({"data": None, "metadata": info}))
        return 200, self._envelope({"data": version.data, "metadata": info})

    def _data_patch(self, key: str, _q: object, body: dict[str, Any]) -> tuple[int, Body]:
        if not isinstance(body.get("data"), dict):
            raise _fail(400, "no data provided")
        meta = self.mount.keys.get(key)
        if meta is None:
            raise _fail(404)
        self._check_cas(body, meta)
        version = meta.versions.get(meta.current)
        if version is None:
            raise _fail(404)
        if self._gone(version):
            info = {**version.meta(), "custom_metadata": meta.custom, "version": meta.current}
            raise _Reply(404, self._envelope(info))
        return self._add_version(key, meta, _merge_patch(version.data, body["data"]))

    def _data_delete(self, key: str, _q: object, _b: object) -> tuple[int, Body]:
        meta = self.mount.keys.get(key)
        version = meta.versions.get(meta.current) if meta else None
        if version is not None and not self._gone(version):
            version.deletion = self.now
        return 204, None

    def _versions(self, action: str, key: str, body: dict[str, Any]) -> tuple[int, Body]:
        numbers = body.get("versions")
        if not numbers:
            first = "n" if action == "destroy" else "N"  # sic: Vault's two spellings
            raise _fail(400, f"{first}o version number provided")
        meta = self.mount.keys.get(key)
        for number in [_weak_int(n) for n in numbers] if meta else []:
            version = meta.versions.get(number) if meta else None
            if version is None or version.destroyed:
                continue
            if action == "delete" and not self._gone(version):
                version.deletion = self.now
            elif action == "undelete" and meta is not None:
                dvas = [d for d in (meta.dva, self.mount.dva) if d > 0]
                version.deletion = self.now + min(dvas) * 10**9 if dvas else None
            elif action == "destroy":
                version.destroyed, version.data = True, None
        return 204, None

    # --- metadata/ -------------------------------------------------------------------------------------
    def _metadata_read(self, key: str, _q: object, _b: object) -> tuple[int, Body]:
        meta = self.mount.keys.get(key)
        if meta is None:
            raise _fail(404)
        return 200, self._envelope({
            "cas_required": meta.cas_required, "created_time": _ts(meta.created),
            "current_version": meta.current, "custom_metadata": meta.custom,
            "delete_version_after": _go_duration(meta.dva), "max_versions": meta.max_versions,
            "oldest_version": meta.oldest, "updated_time": _ts(meta.updated),
            "versions": {str(n): v.meta() for n, v in sorted(meta.versions.items())},
        })

    def _apply_meta(self, meta: _Key, body: dict[str, Any], custom: dict[str, str] | None) -> Body:
        if "max_versions" in body:
            meta.max_versions = _weak_int(body["max_versions"])
        if "cas_required" in body:
            meta.cas_required = bool(body["cas_required"])
        if "delete_version_after" in body:
            if (dva := _parse_duration(body["delete_version_after"])) < 0:
                raise _fail(400, "delete_version_after cannot be negative")
            meta.dva = dva
        if custom is not None:
            meta.custom = custom
        if body.get("cas_required") is False and self.mount.cas_required:
            warning = ('"cas_required" set to false, but is mandated by backend config. '
                       "This value will be ignored.")
            return self._envelope(None, warnings=[warning])
        return None

    def _metadata_write(self, key: str, _q: object, body: dict[str, Any]) -> tuple[int, Body]:
        fields = ("max_versions", "cas_required", "delete_version_after", "custom_metadata")
        if not any(f in body for f in fields):
            return 204, None
        custom = None
        if "custom_metadata" in body:
            checked = _check_custom_metadata(body["custom_metadata"], drop_nulls=False)
            custom = {k: v or "" for k, v in checked.items()}
        meta = self.mount.keys.get(key) or _Key(created=self.now, updated=self.now)
        reply = self._apply_meta(meta, body, custom)
        self.mount.keys[key] = meta
        return (200, reply) if reply else (204, None)

    def _metadata_patch(self, key: str, _q: object, body: dict[str, Any]) -> tuple[int, Body]:
        custom = None
        if "custom_metadata" in body:
            changes = _check_custom_metadata(body["custom_metadata"], drop_nulls=True)
        meta = self.mount.keys.get(key)
        if meta is None:
            raise _fail(404)
        if "custom_metadata" in body:
            merged = _merge_patch(meta.custom or {}, changes)
            custom = merged or None
        reply = self._apply_meta(meta, body, custom)
        return (200, reply) if reply else (204, None)

    def _metadata_delete(self, key: str, _q: object, _b: object) -> tuple[int, Body]:
        self.mount.keys.pop(key, None)
        return 204, None

    def _list(self, prefix: str) -> tuple[int, Body]:
        children = {rest.split("/")[0] + ("/" if "/" in rest else "")
                    for k in self.mount.keys if k.startswith(prefix) and (rest := k[len(prefix):])}
        if not children:
            raise _fail(404)
        return 200, self._envelope({"keys": sorted(children)})

    def _config(self, body: dict[str, Any] | None) -> tuple[int, Body]:
        if body is None:
            m = self.mount
            return 200, self._envelope({"cas_required": m.cas_required, "delete_version_after":
                                        _go_duration(m.dva), "max_versions": m.max_versions})
        if "max_versions" in body:
            self.mount.max_versions = _weak_int(body["max_versions"])
        if "cas_required" in body:
            self.mount.cas_required = bool(body["cas_required"])
        if "delete_version_after" in body:
            self.mount.dva = _parse_duration(body["delete_version_after"])
        return 204, None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    emulator: VaultEmulator
    timeout = 30

    def _serve(self) -> None:
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test): fine
            self.close_connection = True

    def _answer(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = self.emulator.handle(self.command, self.path, self.headers, raw)  # type: ignore[arg-type]
        self.send_response(status)
        self.send_header("Cache-Control", "no-store")
        if body is None:
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = json.dumps(body).encode()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        return None


def main() -> None:
    """Run the emulator as a process: print its address, serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="root")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    emulator = VaultEmulator(root_token=args.token, port=args.port, latency=args.latency_ms / 1000).start()
    print(emulator.address, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
