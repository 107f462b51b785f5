"""rotator: secrets and key-rotation orchestrator.

The public API, covered by the stability note in the README ("Library use"): what applications use —
:class:`Keyring` (multi-key verification, signing, Fernet), webhook verification (:func:`verify_webhook`,
:class:`ReplayCache`), the keyset model and the error tree. Plugin authors import :mod:`rotator.spi`.
Everything else is internal and may change in any release. ``Keyring`` and the webhook helpers are imported
on first use, so ``import rotator`` stays cheap for the CLI.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from rotator.keyring import Keyring
    from rotator.webhooks import ReplayCache, WebhookVerificationError
    from rotator.webhooks import verify as verify_webhook

try:
    __version__ = version("rotator")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

_LAZY = {
    "Keyring": ("rotator.keyring", "Keyring"),
    "ReplayCache": ("rotator.webhooks", "ReplayCache"),
    "WebhookVerificationError": ("rotator.webhooks", "WebhookVerificationError"),
    "verify_webhook": ("rotator.webhooks", "verify"),
}

__all__ = [
    "AccessDenied",
    "BackendUnavailable",
    "ConflictError",
    "ExitCode",
    "KeyVersion",
    "Keyring",
    "Keyset",
    "ManifestError",
    "ReplayCache",
    "RotatorError",
    "SecretNotFound",
    "SecretValue",
    "State",
    "WebhookVerificationError",
    "__version__",
    "verify_webhook",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rotator' has no attribute {name!r}")
