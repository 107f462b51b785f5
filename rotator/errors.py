"""Every error rotator raises, and the exit code each one maps to.

The tree (providers translate vendor exceptions into it with ``raise ... from exc``)::

    RotatorError                      exit 1  an operation failed
    ├── UsageError                    exit 2  bad command line, unknown secret
    │   └── ManifestError             exit 2  broken manifest (file:line:col: path: why)
    ├── OperationFailed               exit 1  verify hook failed, unmanaged value, illegal step ...
    │   ├── IllegalTransition         exit 1  a step that the keyset state does not allow
    │   └── VerifyFailed              exit 1  the new value did not pass read-back or the verify hook
    └── ProviderError                 exit 1  base of what a backend may raise
        ├── ConflictError             exit 3  the conditional write lost; re-read and decide
        ├── SecretNotFound            exit 1  the backend has no such secret
        ├── AccessDenied              exit 4  credentials lack permission
        │   └── TargetDenied          exit 4  a target refused rotator's admin credential
        └── BackendUnavailable        exit 4  unreachable, sealed, timed out, cannot decrypt
            └── TargetUnavailable     exit 4  a target (database, Redis, IAM, API) cannot be reached
    OperationFailed
        └── VerifyFailed
            └── CredentialRefused     exit 1  a target refused a login with the credential tested

Messages never contain a secret value: they name the secret, the backend and the step.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "AccessDenied",
    "BackendUnavailable",
    "ConflictError",
    "CredentialRefused",
    "ExitCode",
    "IllegalTransition",
    "ManifestError",
    "OperationFailed",
    "ProviderError",
    "RotatorError",
    "SecretNotFound",
    "TargetDenied",
    "TargetUnavailable",
    "UsageError",
    "VerifyFailed",
]


class ExitCode(IntEnum):
    """Process exit codes of the CLI contract (DESIGN.md section 4)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CONFLICT = 3
    BACKEND = 4


class RotatorError(Exception):
    """Base class: a message a user can act on, an optional hint, and an exit code."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(RotatorError):
    """The command line or its arguments are wrong (unknown secret, bad option)."""

    exit_code = ExitCode.USAGE


class ManifestError(UsageError):
    """The manifest cannot be used; the message starts with ``file:line:col:`` when known."""


class OperationFailed(RotatorError):
    """A rotation step could not be carried out; the keyset is left consistent."""


class IllegalTransition(OperationFailed):
    """A step was asked for that the keyset's current states do not allow."""


class VerifyFailed(OperationFailed):
    """The staged value failed read-back or the verify hook; current is untouched."""


class ProviderError(RotatorError):
    """Base of every error a provider raises instead of a vendor exception."""


class ConflictError(ProviderError):
    """The conditional write found the keyset changed since it was read."""

    exit_code = ExitCode.CONFLICT


class SecretNotFound(ProviderError):
    """The backend holds nothing at the secret's path."""


class AccessDenied(ProviderError):
    """The backend refused the credentials for this operation."""

    exit_code = ExitCode.BACKEND


class BackendUnavailable(ProviderError):
    """The backend cannot be reached or used right now (down, sealed, wrong master key).

    ``transient`` is False when waiting cannot help (a wrong key, a broken file); those are not retried.
    """

    exit_code = ExitCode.BACKEND

    def __init__(self, message: str, *, hint: str | None = None, transient: bool = True) -> None:
        super().__init__(message, hint=hint)
        self.transient = transient


class CredentialRefused(VerifyFailed):
    """A target refused a login with the credential under test (wrong password, disabled identity)."""


class TargetDenied(AccessDenied):
    """A target refused rotator's admin credential, or it lacks a privilege the step needs."""


class TargetUnavailable(BackendUnavailable):
    """A target (database, cache, cloud account, API) cannot be reached right now."""
