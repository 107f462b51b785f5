"""Notifications: Slack, email and signed webhooks for rotation events (DESIGN.md section 5).

``config`` holds the manifest models, ``dispatch`` the EventBus subscriber that routes and retries,
``slack`` / ``email`` / ``webhook`` one notifier each, ``base`` the notifier protocol and shared message
content. Receivers of webhooks use :mod:`rotator.webhooks`.
"""

from importlib import import_module
from typing import Any

_WHERE = {
    "TEST_EVENT": "base", "DeliveryError": "base", "Notifier": "base", "make_test_event": "base",
    "DeliveryPolicy": "config", "EmailConfig": "config", "NotifierConfig": "config", "SlackConfig": "config",
    "WebhookConfig": "config", "DeliveryFailure": "dispatch", "Dispatcher": "dispatch", "OnResult": "dispatch",
    "build_notifier": "dispatch",
}


def __getattr__(name: str) -> Any:
    """Import submodules on first use: loading the manifest needs only ``config`` (faster start-up)."""
    if name in _WHERE:
        return getattr(import_module(f"rotator.notify.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'rotator.notify' has no attribute {name!r}")


__all__ = [
    "TEST_EVENT",
    "DeliveryError",
    "DeliveryFailure",
    "DeliveryPolicy",
    "Dispatcher",
    "EmailConfig",
    "Notifier",
    "NotifierConfig",
    "OnResult",
    "SlackConfig",
    "WebhookConfig",
    "build_notifier",
    "make_test_event",
]
