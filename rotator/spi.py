"""The one module provider (store) and target plugin authors import.

Everything here is covered by the stability note in the README ("Library use"): names are only added, and a
change of meaning comes with a major version. Internals (``rotator._*`` and the other modules) may change in
any release.
"""

from __future__ import annotations

from rotator.errors import (
    AccessDenied,
    BackendUnavailable,
    ConflictError,
    CredentialRefused,
    IllegalTransition,
    OperationFailed,
    ProviderError,
    SecretNotFound,
    TargetDenied,
    TargetUnavailable,
)
from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.provider import DocumentProvider, Provider, SecretRef
from rotator.target import AdminCredentials, Binding, Capability, Credential, Strategy, Target

__all__ = [
    "AccessDenied",
    "AdminCredentials",
    "BackendUnavailable",
    "Binding",
    "Capability",
    "ConflictError",
    "Credential",
    "CredentialRefused",
    "DocumentProvider",
    "IllegalTransition",
    "KeyVersion",
    "Keyset",
    "OperationFailed",
    "Provider",
    "ProviderError",
    "SecretNotFound",
    "SecretRef",
    "SecretValue",
    "State",
    "Strategy",
    "Target",
    "TargetDenied",
    "TargetUnavailable",
]
