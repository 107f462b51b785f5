"""rotator: secrets and key-rotation orchestrator.

Public API: the keyset model, the provider protocol, the error tree. Everything else is reached through
the CLI (``rotator --help``) or the topic modules (``rotator.keyring``, ``rotator.webhooks``).
"""

from rotator.errors import (
    AccessDenied,
    BackendUnavailable,
    ConflictError,
    ExitCode,
    ManifestError,
    RotatorError,
    SecretNotFound,
)
from rotator.keyset import Keyset, KeyVersion, SecretValue, State

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "BackendUnavailable",
    "ConflictError",
    "ExitCode",
    "KeyVersion",
    "Keyset",
    "ManifestError",
    "RotatorError",
    "SecretNotFound",
    "SecretValue",
    "State",
    "__version__",
]
