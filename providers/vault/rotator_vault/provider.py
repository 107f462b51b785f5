"""The Vault KV v2 provider: each keyset is one KV document, each step one write with ``options.cas``.

Requests per step: ``read`` = one GET of ``<mount>/data/<path>``; every mutating step = one POST with
``cas=<KV version read>`` (``cas=0`` to create). After a write that changes what a human would want to see
(a new current, end of grace, a new due date) one PATCH of ``<mount>/metadata/<path>`` mirrors
``rotator_rotated_at``/``rotator_next_due``/``rotator_state`` into ``custom_metadata`` (best effort, never
read back; ``mirror_metadata: false`` turns it off) and, on creation/adoption, sets ``max_versions``.

Vendor errors are translated here (hvac / requests -> :mod:`rotator.errors`)::

    400 "check-and-set parameter did not match ..."  -> ConflictError      (nothing written)
    403 / 401, missing credentials                   -> AccessDenied       (names the path and the policy)
    503 sealed, 5xx, 429, refused, timeout, TLS      -> BackendUnavailable (names the address)
    other 400 / 404 on a write                       -> ProviderError
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import hvac
import hvac.exceptions
import requests
from pydantic import BaseModel, ConfigDict, Field

from rotator._paths import require_canonical
from rotator.errors import AccessDenied, BackendUnavailable, ConflictError, ProviderError
from rotator.keyset import Keyset
from rotator.logs import get_logger
from rotator.provider import DocumentProvider, SecretRef
from rotator_vault import _document
from rotator_vault.auth import AuthConfig, TokenAuth, VaultSession

__all__ = ["VaultConfig", "VaultProvider"]

_log = get_logger("rotator.vault")
_T = TypeVar("_T")
_CAS_MISMATCH = "check-and-set parameter did not match"
_POLICY_HINT = "check the policy in deploy/policies/vault-policy.hcl"


class VaultConfig(BaseModel):
    """``providers.<name>`` for ``type: vault`` in the manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["vault"] = "vault"
    url: str
    mount: str = "secret"
    namespace: str | None = None
    auth: AuthConfig = Field(default_factory=TokenAuth)
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    verify: bool = True
    timeout: float = Field(10, gt=0)
    max_versions: int | None = Field(None, ge=0)
    path_prefix: str = ""
    mirror_metadata: bool = True


class VaultProvider(DocumentProvider):
    """Keysets as KV v2 documents in Vault (see the module docstring for requests and errors)."""

    type_name: ClassVar[str] = "vault"
    config_model: ClassVar[type[BaseModel]] = VaultConfig

    def __init__(self, *, name: str, config: VaultConfig, base_dir: Path) -> None:
        self.name, self.config = name, config
        self._mount = config.mount.strip("/")
        self._prefix = config.path_prefix.strip("/")

        def local(path: str | None) -> str | None:
            return None if path is None else str(Path(path) if Path(path).is_absolute() else base_dir / path)

        client_cert, client_key = local(config.client_cert), local(config.client_key)
        cert = (client_cert, client_key or client_cert) if client_cert else None
        self._session = VaultSession(
            url=config.url, auth=config.auth, base_dir=base_dir,
            verify=local(config.ca_cert) or config.verify, cert=cert,
            timeout=config.timeout, namespace=config.namespace,
        )

    def __repr__(self) -> str:
        return f"VaultProvider(name={self.name!r}, url={self.config.url!r}, mount={self._mount!r})"

    # --- the DocumentProvider contract ------------------------------------------------------------------
    def read(self, ref: SecretRef) -> Keyset | None:
        path = self._path(ref)
        try:
            response = self._call("read", path, lambda c: c.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._mount, raise_on_deleted_version=True))
        except _Missing as missing:
            if missing.metadata is None:
                return None
            raise ProviderError(
                f"vault: the latest version ({missing.metadata.get('version')}) of {self._where(path)} is "
                "deleted or destroyed; undelete it, or delete its metadata to start over",
            ) from None
        data = response["data"]
        return _document.decode(ref.name, data.get("data") or {}, data["metadata"], self._where(path))

    def write(self, ref: SecretRef, expected: Keyset | None, new: Keyset) -> Keyset:
        path = self._path(ref)
        doc = _document.encode(new, self._where(path))
        revision = "0" if expected is None else expected.revision
        if not revision.isdigit():
            raise ConflictError(f"vault: {ref.name}: revision {revision!r} is not a KV version")
        cas = int(revision)
        response = self._call("write", path, lambda c: c.secrets.kv.v2.create_or_update_secret(
            path=path, secret=doc, cas=cas, mount_point=self._mount))
        stored = new.replace(revision=str(response["data"]["version"]), managed=True)
        fresh = expected is None or not expected.managed
        self._update_metadata(path, expected, stored, fresh)
        return stored

    def list(self) -> list[str]:
        def keys_under(folder: str) -> list[str]:
            listed = f"{self._prefix}/{folder}" if self._prefix else folder
            try:
                response = self._call("list", listed, lambda c: c.secrets.kv.v2.list_secrets(
                    path=listed, mount_point=self._mount))
            except _Missing:
                return []
            return [str(key) for key in response["data"]["keys"]]

        found: list[str] = []
        pending = [""]
        while pending:
            folder = pending.pop()
            keys = keys_under(folder)
            for key in keys:
                (pending.append if key.endswith("/") else found.append)(folder + key)
        return sorted(found)

    def check(self) -> None:
        self._call("check", "auth/token/lookup-self", lambda c: c.auth.token.lookup_self())

    def close(self) -> None:
        self._session.close()

    # --- helpers --------------------------------------------------------------------------------------------
    def _path(self, ref: SecretRef) -> str:
        where = f"mount {self._mount!r}" + (f" prefix {self._prefix!r}" if self._prefix else "")
        path = require_canonical(ref.path, ref.name, f"vault {where}")  # Vault resolves '..' itself
        return f"{self._prefix}/{path}" if self._prefix else path

    def _where(self, path: str, kind: str = "data") -> str:
        return f"{self._mount}/{kind}/{path}"

    def _update_metadata(self, path: str, expected: Keyset | None, stored: Keyset, fresh: bool) -> None:
        """Best effort: ``max_versions`` on creation/adoption; the ``custom_metadata`` mirror if changed."""
        body: dict[str, Any] = {}
        if fresh and self.config.max_versions is not None:
            body["max_versions"] = self.config.max_versions
        if self.config.mirror_metadata:
            wanted = _document.mirror(stored)
            if fresh or expected is None or _document.mirror(expected) != wanted:
                body["custom_metadata"] = wanted
        if not body:
            return
        url = f"/v1/{self._mount}/metadata/{path}"
        headers = {"Content-Type": "application/merge-patch+json"}
        try:
            self._call("metadata", path, lambda c: c.adapter.request("PATCH", url, json=body,
                                                                     headers=headers))
        except ProviderError as exc:
            if "max_versions" in body:  # the one field that is not cosmetic: say so
                _log.warning("vault: could not set max_versions", path=self._where(path, "metadata"),
                             error=exc.message)
            else:
                _log.info("vault: custom_metadata mirror not updated", path=self._where(path, "metadata"),
                          error=exc.message)

    def _call(self, action: str, path: str, request: Callable[[hvac.Client], _T]) -> _T:
        """Run one hvac request; vendor exceptions come out as :mod:`rotator.errors`."""
        try:
            return self._session.call(request)
        except hvac.exceptions.InvalidPath as exc:
            body = exc.json if isinstance(exc.json, dict) else {}
            metadata = (body.get("data") or {}).get("metadata")
            if action in ("read", "list"):
                raise _Missing(metadata) from exc
            raise ProviderError(f"vault: {action} of {self._where(path)} failed: not found "
                                f"(is '{self._mount}' a KV v2 mount?)") from exc
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            kind = {"metadata": "metadata", "list": "metadata"}.get(action, "data")
            where = path if action == "check" else self._where(path, kind)
            why = "the token is invalid or expired" if "invalid token" in str(exc) else _POLICY_HINT
            raise AccessDenied(f"vault: permission denied on {where} ({why})") from exc
        except hvac.exceptions.InvalidRequest as exc:
            text = ", ".join(str(e) for e in (exc.errors or []))[:300]
            if _CAS_MISMATCH in text:
                raise ConflictError(
                    f"vault: {self._where(path)} changed since it was read (check-and-set)") from exc
            raise ProviderError(f"vault: {action} of {self._where(path)} rejected: {text}") from exc
        except (hvac.exceptions.VaultDown, hvac.exceptions.VaultNotInitialized) as exc:
            state = "sealed" if "sealed" in str(exc).lower() else "not ready"
            raise BackendUnavailable(f"vault at {self.config.url} is {state}") from exc
        except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway,
                hvac.exceptions.RateLimitExceeded, hvac.exceptions.UnexpectedError) as exc:
            status = type(exc).__name__
            raise BackendUnavailable(f"vault at {self.config.url} failed the {action} ({status})") from exc
        except requests.exceptions.SSLError as exc:
            raise BackendUnavailable(
                f"vault at {self.config.url}: TLS failed (check ca_cert / verify)") from exc
        except requests.exceptions.Timeout as exc:
            raise BackendUnavailable(
                f"vault at {self.config.url} did not answer within {self.config.timeout}s") from exc
        except requests.exceptions.RequestException as exc:
            raise BackendUnavailable(
                f"vault at {self.config.url} is unreachable ({type(exc).__name__})") from exc


class _Missing(Exception):
    def __init__(self, metadata: dict[str, Any] | None) -> None:
        super().__init__("not found")
        self.metadata = metadata
