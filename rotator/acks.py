"""Consumer acknowledgements: "consumer X now uses version V", kept in the keyset's ``meta``.

Stored by :meth:`rotator.keyring.Keyring.acknowledge` with one conditional ``update_meta``::

    meta["acks"] = {"<version id>": {"<consumer>": "<ISO time>", ...}, ...}

Only versions still in use (current, previous, pending) keep their entry, so the record stays small. With
``retire: when_acknowledged`` :func:`rotator.plan.decide` retires the previous version as soon as every
named consumer acknowledged the current one (and at the grace deadline otherwise). Pure functions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from rotator.errors import ConflictError, OperationFailed, UsageError
from rotator.keyset import Keyset
from rotator.logs import get_logger
from rotator.meta import KeysetMeta
from rotator.provider import Provider, SecretRef
from rotator.transitions import UpdateMeta

__all__ = ["ACKS", "acknowledged", "record_ack", "waiting_for", "with_ack"]

log = get_logger("rotator.acks")
_ATTEMPTS = 8

ACKS = "acks"
MAX_CONSUMER_LENGTH = 200


def acknowledged(keyset: Keyset, version_id: str | None = None) -> dict[str, str]:
    """Consumers that acknowledged ``version_id`` (default: the current version), with the time they did."""
    if version_id is None:
        current = keyset.current
        if current is None:
            return {}
        version_id = current.id
    return KeysetMeta.of(keyset).acknowledged(version_id)


def waiting_for(consumers: Iterable[str], keyset: Keyset) -> list[str]:
    """The named ``consumers`` that have not acknowledged the current version yet, in manifest order."""
    done = acknowledged(keyset)
    return [c for c in consumers if c not in done]


def with_ack(keyset: Keyset, version_id: str, consumer: str, at: datetime) -> dict[str, Any]:
    """The new ``acks`` record: ``consumer`` moved to ``version_id`` at ``at``; stale versions dropped."""
    if not consumer or len(consumer) > MAX_CONSUMER_LENGTH:
        raise ValueError(f"a consumer name must be 1 to {MAX_CONSUMER_LENGTH} characters")
    live = {v.id for v in keyset.accepted()}
    old = KeysetMeta.of(keyset).acks or {}
    kept = {k: dict(v) for k, v in old.items() if k in live}
    kept.setdefault(version_id, {})[consumer] = at.isoformat()
    return kept


def record_ack(provider: Provider, ref: SecretRef, consumer: str, clock: Callable[[], datetime], *,
               read: Callable[[], Keyset], seen: Callable[[Keyset], None] = lambda _: None) -> str:
    """Write "``consumer`` uses the current version" with one conditional ``update_meta``; returns its id.

    ``read`` fetches the keyset (each attempt; ``seen`` gets it), a lost race is retried after a re-read.
    """
    for attempt in range(_ATTEMPTS):
        keyset = read()
        current = keyset.current
        if current is None:
            raise OperationFailed(f"{ref.name}: no current version to acknowledge")
        seen(keyset)
        if consumer in acknowledged(keyset, current.id):
            return current.id
        try:
            acks = with_ack(keyset, current.id, consumer, clock())
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:
            provider.apply(ref, keyset, UpdateMeta({ACKS: acks}))
        except ConflictError:
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))  # jitter, not a secret
            continue
        log.info("consumer.acknowledged", secret=ref.name, consumer=consumer, version=current.id)
        return current.id
    raise ConflictError(f"{ref.name}: the keyset kept changing while acknowledging; retry")
