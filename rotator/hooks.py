"""Run ``verify`` and ``post_check`` hooks: the value goes to stdin only, never argv, env or logs."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rotator.keyset import SecretValue

__all__ = ["HookResult", "run_hook"]

_PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


@dataclass(frozen=True, slots=True)
class HookResult:
    """Whether the hook accepted the value, and a short reason that never quotes the hook's output."""

    ok: bool
    reason: str


def run_hook(
    command: list[str], value: SecretValue, *, timeout: timedelta, cwd: Path, secret: str, version: str,
    kind: str,
) -> HookResult:
    """Run ``command`` with ``value`` on stdin in a minimal environment; exit 0 means the value is good.

    The hook's output is discarded (it could echo the value); only its exit status is reported.
    """
    env = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
    env.update(ROTATOR_SECRET=secret, ROTATOR_VERSION=version, ROTATOR_KIND=kind)
    program = command[0]
    if not os.path.isabs(program) and ("/" in program):
        program = str((cwd / program).resolve())
    try:
        completed = subprocess.run(
            [program, *command[1:]], input=value.reveal().encode(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, cwd=cwd, timeout=timeout.total_seconds(), check=False,
        )
    except subprocess.TimeoutExpired:
        return HookResult(False, f"hook {command[0]} timed out after {int(timeout.total_seconds())}s")
    except OSError as exc:
        return HookResult(False, f"hook {command[0]} could not start: {exc.strerror or exc}")
    if completed.returncode != 0:
        return HookResult(False, f"hook {command[0]} exited with status {completed.returncode}")
    return HookResult(True, "ok")
