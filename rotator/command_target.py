"""The ``command`` target: credentials issued and revoked by the operator's own programs (Stripe, GitHub, an
internal API), speaking JSON on stdin/stdout. The protocol is in the README ("Targets: command").

Each step runs one argv list from the manifest (never a shell), with one JSON request on **stdin**; values
never go in argv or the environment. ``issue`` prints the new credential as one JSON object on **stdout**;
the other commands only answer with their exit status. stdout is parsed and never logged; stderr is read
and discarded (only its size is logged), because either could echo a secret.

Exit status (all commands)::

    0    done (verify: the credential is accepted)
    75   EX_TEMPFAIL: the service is unreachable          -> TargetUnavailable (exit 4; retried next run)
    77   EX_NOPERM: the admin credential was refused       -> TargetDenied      (exit 4)
    else verify: the credential is refused                 -> CredentialRefused
         other commands: failed                            -> OperationFailed
    timeout: the whole process group is killed             -> TargetUnavailable
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from rotator.errors import CredentialRefused, OperationFailed, TargetDenied, TargetUnavailable
from rotator.schedule import format_duration, parse_duration
from rotator.target import SECRET_FIELDS, AdminCredentials, Binding, Capability, Credential

__all__ = ["PROTOCOL", "CommandTarget", "CommandTargetConfig"]

log = logging.getLogger("rotator.targets.command")
PROTOCOL = 1
EX_TEMPFAIL, EX_NOPERM = 75, 77
MAX_OUTPUT = 1 << 20  # bytes of stdout accepted from issue
_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "HTTPS_PROXY", "NO_PROXY")
_SECRET_KEYS = ("password", "secret_access_key", "secret", "token", "api_key", "key")

Seconds = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)]
Argv = Annotated[list[str], Field(min_length=1)]


class CommandTargetConfig(BaseModel):
    """The ``targets.<name>`` block of a ``type: command`` target."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    issue: Argv
    revoke: Argv
    verify: Argv | None = None  # without it, login is not checked (a warning each time)
    enable: Argv | None = None  # re-activate a disabled credential (rollback); without it, enable is a no-op
    check: Argv | None = None  # can the service be administered now?
    timeout: Seconds = timedelta(seconds=30)
    env: dict[str, str] = Field(default_factory=dict)  # non-secret settings (a URL); secrets go in `admin`
    fields: dict[str, Any] = Field(default_factory=dict)  # non-secret fields added to every credential


class CommandTarget:
    """Run the configured programs for each primitive; see the module docstring."""

    type_name: ClassVar[str] = "command"
    config_model: ClassVar[type[CommandTargetConfig]] = CommandTargetConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.DUAL, Capability.ISSUES})

    def __init__(self, *, name: str, config: CommandTargetConfig, base_dir: Path,
                 admin: AdminCredentials) -> None:
        self.name = name
        self.config = config
        self.base_dir = base_dir
        self._admin = admin

    def __repr__(self) -> str:
        return f"CommandTarget(name={self.name!r}, issue={self.config.issue[0]!r})"

    def fields(self, binding: Binding) -> dict[str, Any]:
        """The configured static ``fields``."""
        return dict(self.config.fields)

    def prepare(self, binding: Binding) -> None:
        """Nothing: the service owns its identities."""

    def issue(self, binding: Binding, username: str, keep: Sequence[Credential]) -> Credential:
        """Run ``issue``; its stdout is the new credential (one JSON object with a secret field)."""
        kept = [_public(c) for c in keep]
        request = self._request("issue", binding, username, current=kept[0] if kept else None, keep=kept)
        out = self._run("issue", self.config.issue, request)
        doc = _parse_credential(out, self.name)
        if doc.setdefault("username", username) != username:
            raise OperationFailed(f"command target {self.name}: issue returned a credential for another user "
                                  f"(asked for {username})")
        log.info("credential issued", extra={"target": self.name, "username": username,
                                            "fields": sorted(k for k in doc if k not in SECRET_FIELDS)})
        return Credential({**self.fields(binding), **doc})

    def enable(self, binding: Binding, credential: Credential) -> None:
        """Run ``enable`` if configured; otherwise nothing (an issued credential is live until revoked)."""
        if self.config.enable is not None:
            self._run("enable", self.config.enable,
                      self._request("enable", binding, credential.username, credential=dict(credential)))

    def disable(self, binding: Binding, credential: Credential) -> None:
        """Run ``revoke`` with the old credential; it must exit 0 when the credential is already gone."""
        self._run("revoke", self.config.revoke,
                  self._request("revoke", binding, credential.username, credential=dict(credential)))
        log.info("credential revoked", extra={"target": self.name, "username": credential.username})

    def login(self, binding: Binding, credential: Credential) -> None:
        """Run ``verify``: exit 0 means the service accepts the credential; without it, only a warning."""
        if self.config.verify is None:
            log.warning("command target has no verify command: the credential was not checked",
                        extra={"target": self.name, "username": credential.username})
            return
        request = self._request("verify", binding, credential.username, credential=dict(credential))
        try:
            self._run("verify", self.config.verify, request)
        except _Failed as exc:
            raise CredentialRefused(f"command target {self.name}: verify refused the credential of "
                                    f"{credential.username} (exit status {exc.status})") from None

    def check(self) -> None:
        """Run ``check`` if configured."""
        if self.config.check is not None:
            self._run("check", self.config.check, {"protocol": PROTOCOL, "action": "check", "target": self.name,
                                                   **self._admin_doc()})

    def close(self) -> None:
        """Nothing to release: every call is its own process."""

    # --- helpers ----------------------------------------------------------------------------------------

    def _admin_doc(self) -> dict[str, Any]:
        admins = list(self._admin())
        return {"admin": dict(admins[0])} if admins else {}

    def _request(self, action: str, binding: Binding, username: str, **extra: Any) -> dict[str, Any]:
        return {"protocol": PROTOCOL, "action": action, "target": self.name, "secret": binding.secret,
                "username": username, **extra, **self._admin_doc()}

    def _run(self, step: str, argv: list[str], request: Mapping[str, Any]) -> bytes:
        """Run ``argv`` with ``request`` on stdin; stdout on success; errors per the module docstring."""
        program = argv[0]
        if not os.path.isabs(program) and "/" in program:
            program = str((self.base_dir / program).resolve())
        env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        env.update(self.config.env)
        env.update(ROTATOR_TARGET=self.name, ROTATOR_ACTION=step)
        seconds = self.config.timeout.total_seconds()
        try:
            proc = subprocess.Popen([program, *argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, cwd=self.base_dir, start_new_session=True)
        except OSError as exc:
            raise OperationFailed(f"command target {self.name}: {step} command {argv[0]} could not start: "
                                  f"{exc.strerror or type(exc).__name__}") from None
        try:
            out, err = proc.communicate(json.dumps(request).encode(), timeout=seconds)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise TargetUnavailable(f"command target {self.name}: {step} command {argv[0]} timed out after "
                                    f"{format_duration(self.config.timeout)} (killed)") from None
        if err:
            log.info("command wrote to stderr (not shown: it may contain a secret)",
                     extra={"target": self.name, "step": step, "stderr_bytes": len(err)})
        status = proc.returncode
        if status == 0:
            return out
        where = f"command target {self.name}: {step} command {argv[0]} exited with status {status}"
        if status == EX_TEMPFAIL:
            raise TargetUnavailable(f"{where} (service unreachable)")
        if status == EX_NOPERM:
            raise TargetDenied(f"{where} (admin credential refused)")
        if step == "verify":
            raise _Failed(status)
        raise OperationFailed(where)


class _Failed(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the command and everything it started (a curl child would otherwise keep the pipes open)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.communicate(timeout=5)


def _public(credential: Credential) -> dict[str, Any]:
    """A credential's non-secret fields (what ``keep`` and ``current`` carry)."""
    return {k: v for k, v in credential.items() if k not in SECRET_FIELDS}


def _parse_credential(out: bytes, target: str) -> dict[str, Any]:
    """The JSON object ``issue`` printed; errors never quote it (it holds the secret)."""
    if len(out) > MAX_OUTPUT:
        raise OperationFailed(f"command target {target}: issue printed more than {MAX_OUTPUT} bytes")
    try:
        doc = json.loads(out)
    except ValueError:
        raise OperationFailed(f"command target {target}: issue did not print a JSON object "
                              f"({len(out)} bytes, not shown)") from None
    if not isinstance(doc, dict):
        raise OperationFailed(f"command target {target}: issue printed JSON that is not an object")
    secrets = [k for k in _SECRET_KEYS if k in doc]
    if not secrets or not all(isinstance(doc[k], str) and doc[k] for k in secrets):
        raise OperationFailed(f"command target {target}: issue printed no secret field (one of "
                              f"{', '.join(_SECRET_KEYS)} as a non-empty string); fields: "
                              f"{', '.join(sorted(k for k in doc if k not in SECRET_FIELDS))}")
    return doc
