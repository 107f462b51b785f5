"""Notifications: Slack, email and signed webhooks for rotation events (DESIGN.md section 5).

``config`` holds the manifest models, ``dispatch`` the EventBus subscriber that routes and retries,
``slack`` / ``email`` / ``webhook`` one notifier each, ``base`` the notifier protocol and shared message
content. Receivers of webhooks use :mod:`rotator.webhooks`.
"""

from rotator.notify.base import TEST_EVENT, DeliveryError, Notifier, make_test_event
from rotator.notify.config import DeliveryPolicy, EmailConfig, NotifierConfig, SlackConfig, WebhookConfig
from rotator.notify.dispatch import DeliveryFailure, Dispatcher, OnResult, build_notifier

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
