"""How the provider logs in to Vault, and keeps its token alive in long-running daemons.

One typed config class per auth method (``auth: {method: token|approle|kubernetes, ...}`` in the manifest)
and a dispatch table ``LOGINS`` from method to login function; :class:`VaultSession` owns the hvac client,
renews the token (``renew-self``) once half its TTL has passed, and logs in again (AppRole, Kubernetes) when
renewal fails or Vault answers "invalid token". Credentials are read from the environment or files at login
time, never stored in the config and never shown in a message or ``repr``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import hvac
import hvac.exceptions
import requests
from pydantic import BaseModel, ConfigDict, Discriminator, Tag
from requests.adapters import HTTPAdapter

from rotator.errors import AccessDenied
from rotator.logs import get_logger

__all__ = ["LOGINS", "AppRoleAuth", "AuthConfig", "KubernetesAuth", "Login", "TokenAuth", "VaultSession"]

_log = get_logger("rotator.vault")
_T = TypeVar("_T")
DEFAULT_K8S_JWT = "/var/run/secrets/kubernetes.io/serviceaccount/token"


class _Auth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenAuth(_Auth):
    """A token from ``token_file`` if set, else from the environment variable ``token_env`` (VAULT_TOKEN)."""

    method: Literal["token"] = "token"
    token_file: str | None = None
    token_env: str = "VAULT_TOKEN"  # noqa: S105 - the variable's name


class AppRoleAuth(_Auth):
    """AppRole: role_id inline, from a file or the environment; secret_id from a file or the environment."""

    method: Literal["approle"] = "approle"
    role_id: str | None = None
    role_id_file: str | None = None
    role_id_env: str = "VAULT_ROLE_ID"
    secret_id_file: str | None = None
    secret_id_env: str = "VAULT_SECRET_ID"  # noqa: S105 - the variable's name
    mount: str = "approle"


class KubernetesAuth(_Auth):
    """Kubernetes: the pod's service-account JWT file and the Vault role bound to it."""

    method: Literal["kubernetes"] = "kubernetes"
    role: str
    jwt_file: str = DEFAULT_K8S_JWT
    mount: str = "kubernetes"


def _method(raw: Any) -> str:
    return str(raw.get("method", "token") if isinstance(raw, dict) else getattr(raw, "method", "token"))


AuthConfig = Annotated[
    Annotated[TokenAuth, Tag("token")] | Annotated[AppRoleAuth, Tag("approle")]
    | Annotated[KubernetesAuth, Tag("kubernetes")],
    Discriminator(_method),
]


@dataclass(frozen=True)
class Login:
    """What a login yields: the token (kept out of ``repr``), its TTL in seconds (0 = none), renewability."""

    token: str = field(repr=False)
    ttl: int
    renewable: bool
    can_relogin: bool


def _credential(what: str, *, inline: str | None, path: str | None, env: str, base_dir: Path) -> str:
    if inline:
        return inline
    if path:
        file = Path(path) if Path(path).is_absolute() else base_dir / path
        try:
            text = file.read_text().strip()
        except OSError as exc:
            raise AccessDenied(f"vault: cannot read the {what} file {file}: {exc.strerror}") from exc
        if text:
            return text
        raise AccessDenied(f"vault: the {what} file {file} is empty")
    if value := os.environ.get(env, "").strip():
        return value
    raise AccessDenied(f"vault: no {what}: set {env} or the auth {what}_file option")


def _auth_block(response: Any, method: str) -> Login:
    auth = response.get("auth") if isinstance(response, dict) else None
    if not isinstance(auth, dict) or not auth.get("client_token"):
        raise AccessDenied(f"vault: the {method} login returned no token")
    ttl = int(auth.get("lease_duration") or 0)
    return Login(auth["client_token"], ttl, bool(auth.get("renewable")), can_relogin=True)


def _token_login(cfg: TokenAuth, client: hvac.Client, base_dir: Path) -> Login:
    token = _credential("token", inline=None, path=cfg.token_file, env=cfg.token_env, base_dir=base_dir)
    client.token = token
    try:  # learn the TTL once, so a daemon can renew; a token without lookup-self rights just is not renewed
        data = client.auth.token.lookup_self()["data"]
    except hvac.exceptions.Forbidden:
        return Login(token, 0, False, False)
    return Login(token, int(data.get("ttl") or 0), bool(data.get("renewable")), False)


def _approle_login(cfg: AppRoleAuth, client: hvac.Client, base_dir: Path) -> Login:
    role_id = _credential("role_id", inline=cfg.role_id, path=cfg.role_id_file, env=cfg.role_id_env,
                          base_dir=base_dir)
    secret_id = _credential("secret_id", inline=None, path=cfg.secret_id_file, env=cfg.secret_id_env,
                            base_dir=base_dir)
    return _auth_block(client.auth.approle.login(role_id, secret_id, use_token=False, mount_point=cfg.mount),
                       "approle")


def _kubernetes_login(cfg: KubernetesAuth, client: hvac.Client, base_dir: Path) -> Login:
    jwt = _credential("jwt", inline=None, path=cfg.jwt_file, env="", base_dir=base_dir)
    return _auth_block(client.auth.kubernetes.login(cfg.role, jwt, use_token=False, mount_point=cfg.mount),
                       "kubernetes")


LOGINS: dict[str, Callable[[Any, hvac.Client, Path], Login]] = {
    "token": _token_login,
    "approle": _approle_login,
    "kubernetes": _kubernetes_login,
}


class VaultSession:
    """The hvac client of one provider, logged in on first use and kept logged in; safe across threads."""

    def __init__(self, *, url: str, auth: TokenAuth | AppRoleAuth | KubernetesAuth, base_dir: Path,
                 verify: bool | str, cert: tuple[str, str] | None, timeout: float, namespace: str | None,
                 clock: Callable[[], float] | None = None) -> None:
        self._auth, self._base_dir = auth, base_dir
        self._clock = clock or (lambda: time.monotonic())
        self._lock = threading.Lock()
        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_maxsize=32))
        session.mount("https://", HTTPAdapter(pool_maxsize=32))
        session.verify, session.cert = verify, cert
        self.client = hvac.Client(url=url, verify=verify, cert=cert, timeout=timeout, namespace=namespace,
                                  session=session)
        self._login: Login | None = None
        self._since = 0.0

    def __repr__(self) -> str:
        return f"VaultSession(method={self._auth.method!r}, logged_in={self._login is not None})"

    def call(self, request: Callable[[hvac.Client], _T]) -> _T:
        """Run ``request`` with a live token; one fresh login and retry if Vault calls the token invalid."""
        self.ensure()
        try:
            return request(self.client)
        except hvac.exceptions.Forbidden as exc:
            if "invalid token" not in str(exc) or self._login is None or not self._login.can_relogin:
                raise
            _log.info("vault token rejected; logging in again", method=self._auth.method)
            with self._lock:
                self._do_login()
            return request(self.client)

    def ensure(self) -> None:
        """Log in if needed; renew the token once half of its TTL has passed."""
        with self._lock:
            if self._login is None:
                self._do_login()
            elif self._login.ttl > 0 and self._clock() - self._since >= self._login.ttl / 2:
                self._refresh(self._login)

    def _do_login(self) -> None:
        method = self._auth.method
        try:
            login = LOGINS[method](self._auth, self.client, self._base_dir)
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden,
                hvac.exceptions.Unauthorized) as exc:
            why = ", ".join(str(e) for e in (exc.errors or []))[:200] or type(exc).__name__
            where = f"auth/{getattr(self._auth, 'mount', 'token')}/login"
            raise AccessDenied(f"vault: {method} login at {where} was refused ({why})") from exc
        self.client.token = login.token
        self._login, self._since = login, self._clock()

    def _refresh(self, login: Login) -> None:
        if login.renewable:
            try:
                renewed = _auth_block(self.client.auth.token.renew_self(), "renew-self")
            except (hvac.exceptions.VaultError, AccessDenied) as exc:
                _log.warning("vault token renewal failed", method=self._auth.method, error=type(exc).__name__)
            else:
                if renewed.ttl > 0:
                    self._login = Login(login.token, renewed.ttl, renewed.renewable, login.can_relogin)
                    self._since = self._clock()
                    return
        if login.can_relogin:
            self._do_login()
        else:  # a static token that cannot be renewed: keep using it until Vault refuses it
            self._login = Login(login.token, 0, False, False)
            _log.warning("vault token cannot be renewed; it will expire", method=self._auth.method)

    def close(self) -> None:
        self.client.adapter.close()
