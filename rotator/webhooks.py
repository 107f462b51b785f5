"""Signed webhooks: :func:`sign` (used by the ``webhook`` notifier) and :func:`verify` (for receivers).

A delivery is a JSON POST with::

    X-Rotator-Timestamp: <unix seconds>
    X-Rotator-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the signing secret>
    X-Rotator-Event: rotation.succeeded

and a body holding the event plus a unique ``"id"``. A receiver (Flask, Django, anything)::

    from rotator.webhooks import ReplayCache, WebhookVerificationError, verify

    seen = ReplayCache()  # created once by the receiver, passed to every verify()

    try:
        event = verify(request.headers, request.get_data(), secret=os.environ["HOOK_SECRET"],
                       replay_cache=seen)
    except WebhookVerificationError as exc:
        if exc.reason == "replay":
            return "", 200       # already processed (a retry whose first answer was lost)
        return exc.reason, 400

``verify`` accepts several secrets (current and previous) while the signing secret itself is rotated.
The replay cache is the receiver's object, never a hidden per-process one: a receiver with several workers
passes a :class:`ReplayStore` backed by a shared store (e.g. Redis ``SET NX EX``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ReplayCache",
    "ReplayStore",
    "WebhookVerificationError",
    "sign",
    "verify",
]

TIMESTAMP_HEADER = "X-Rotator-Timestamp"
SIGNATURE_HEADER = "X-Rotator-Signature"
EVENT_HEADER = "X-Rotator-Event"
_PREFIX = "sha256="

Secret = str | bytes


class WebhookVerificationError(ValueError):
    """The request is not an authentic, fresh, first delivery. ``reason`` is one of
    ``malformed``, ``bad_signature``, ``stale_timestamp``, ``replay``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class ReplayStore(Protocol):
    """Where a receiver remembers accepted event ids; :class:`ReplayCache` is the in-memory one."""

    def add(self, event_id: str, now: float, ttl: float) -> bool:
        """Remember ``event_id`` until ``now + ttl``; False if it is already remembered (a replay)."""
        ...


class ReplayCache:
    """Event ids seen recently, each kept until its expiry; bounded (oldest dropped first). Thread-safe.

    Hand-written (an OrderedDict): receivers import this module, and a TTL cache library (cachetools) would
    become their dependency for 20 lines; the expiry is per entry and uses the caller's ``now``.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def add(self, event_id: str, now: float, ttl: float) -> bool:
        """Remember ``event_id`` until ``now + ttl``; False if it was already there (a replay)."""
        with self._lock:
            while self._seen and next(iter(self._seen.values())) <= now:
                self._seen.popitem(last=False)
            expiry = self._seen.get(event_id)
            if expiry is not None and expiry > now:
                return False
            self._seen[event_id] = now + ttl
            self._seen.move_to_end(event_id)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return True

    def __len__(self) -> int:
        return len(self._seen)


def _key(secret: Secret) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def _digest(body: bytes, secret: Secret, timestamp: int) -> str:
    return hmac.new(_key(secret), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: Secret, timestamp: int | float) -> dict[str, str]:
    """The timestamp and signature headers for ``body`` sent at ``timestamp`` (unix seconds)."""
    ts = int(timestamp)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: _PREFIX + _digest(body, secret, ts)}


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: Secret | Sequence[Secret],
    max_skew: int = 300,
    *,
    now: float | None = None,
    replay_cache: ReplayStore,
) -> dict[str, Any]:
    """Check a delivery and return its parsed JSON payload, or raise WebhookVerificationError.

    ``headers`` are matched case-insensitively; ``secret`` may be a list (any one may match, for rotating
    the signing secret); the timestamp may be at most ``max_skew`` seconds off ``now`` either way; an event
    id already accepted within ``2 * max_skew`` seconds is a replay. ``replay_cache`` is the receiver's own
    (a :class:`ReplayCache` it created once, or a shared :class:`ReplayStore` when several workers receive);
    it is only consulted once the signature and timestamp are good, so forgeries cannot poison it.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    ts_text = lower.get(TIMESTAMP_HEADER.lower())
    sig_text = lower.get(SIGNATURE_HEADER.lower())
    if ts_text is None or sig_text is None:
        missing = TIMESTAMP_HEADER if ts_text is None else SIGNATURE_HEADER
        raise WebhookVerificationError("malformed", f"missing {missing} header")
    try:
        ts = int(ts_text.strip())
    except ValueError:
        raise WebhookVerificationError("malformed", f"{TIMESTAMP_HEADER} is not an integer") from None
    now = time.time() if now is None else now
    if abs(now - ts) > max_skew:
        off = f"timestamp is {now - ts:+.0f}s off (max {max_skew}s)"
        raise WebhookVerificationError("stale_timestamp", off)
    given = [s.strip()[len(_PREFIX):] for s in sig_text.split(",") if s.strip().startswith(_PREFIX)]
    if not given:
        raise WebhookVerificationError("malformed", f"{SIGNATURE_HEADER} must be '{_PREFIX}<hex>'")
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not secrets:
        raise ValueError("verify() needs at least one secret")
    ok = False
    for key in secrets:
        expected = _digest(body, key, ts).encode()
        for candidate in given:  # compare every pair: timing does not tell which one matched
            ok |= hmac.compare_digest(expected, candidate.encode())
    if not ok:
        raise WebhookVerificationError("bad_signature", "signature does not match the body and secret")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookVerificationError("malformed", "body is not JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str) or not payload["id"]:
        raise WebhookVerificationError("malformed", "body has no event id")
    if not replay_cache.add(payload["id"], now, 2 * max_skew):
        raise WebhookVerificationError("replay", f"event {payload['id']} was already delivered")
    return payload
