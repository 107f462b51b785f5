"""Tests of rotator.webhooks: signing and the receiver-side verify()."""

from __future__ import annotations

import json

import pytest

from rotator.webhooks import ReplayCache, WebhookVerificationError, sign, verify

SECRET = "whsec-canary-4242-abcdefghijkl"
NOW = 1_700_000_000.0


def _delivery(payload: dict[str, object] | None = None, *, at: float = NOW, secret: str = SECRET
              ) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload or {"id": "evt_1", "event": "rotation.succeeded"}).encode()
    return {"Content-Type": "application/json", **sign(body, secret, at)}, body


def _reason(headers: dict[str, str], body: bytes, *, max_skew: int = 300) -> str:
    with pytest.raises(WebhookVerificationError) as info:
        verify(headers, body, SECRET, max_skew, now=NOW, replay_cache=ReplayCache())
    return info.value.reason


def test_good_delivery_returns_payload() -> None:
    """A correctly signed, fresh delivery verifies and returns the parsed JSON body."""
    headers, body = _delivery()
    assert verify(headers, body, SECRET, now=NOW, replay_cache=ReplayCache()) == {
        "id": "evt_1", "event": "rotation.succeeded"}


def test_sign_format() -> None:
    """sign() gives the timestamp in whole seconds and a sha256=<64 hex> signature."""
    headers = sign(b"{}", SECRET, NOW + 0.9)
    assert headers["X-Rotator-Timestamp"] == str(int(NOW))
    prefix, digest = headers["X-Rotator-Signature"].split("=", 1)
    assert prefix == "sha256"
    assert len(digest) == 64
    int(digest, 16)


def test_headers_are_case_insensitive() -> None:
    """Header names are matched regardless of case, as HTTP frameworks vary."""
    headers, body = _delivery()
    lower = {k.lower(): v for k, v in headers.items()}
    assert verify(lower, body, SECRET.encode(), now=NOW, replay_cache=ReplayCache())["id"] == "evt_1"


def test_tampered_body_rejected() -> None:
    """Changing one byte of the body breaks the signature."""
    headers, body = _delivery()
    assert _reason(headers, body.replace(b"succeeded", b"failed")) == "bad_signature"


def test_wrong_secret_rejected() -> None:
    """A delivery signed with another secret is rejected."""
    headers, body = _delivery(secret="another-secret-0123456789")
    assert _reason(headers, body) == "bad_signature"


def test_tampered_timestamp_rejected() -> None:
    """The timestamp is covered by the signature: moving it breaks the signature."""
    headers, body = _delivery()
    headers["X-Rotator-Timestamp"] = str(int(NOW) + 1)
    assert _reason(headers, body) == "bad_signature"


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
def test_skew_rejected_both_ways(offset: int) -> None:
    """A timestamp more than max_skew in the past or the future is stale."""
    headers, body = _delivery(at=NOW + offset)
    assert _reason(headers, body) == "stale_timestamp"


@pytest.mark.parametrize("offset", [-300, 300])
def test_skew_at_the_limit_accepted(offset: int) -> None:
    """A timestamp exactly max_skew away is still accepted."""
    headers, body = _delivery(at=NOW + offset)
    assert verify(headers, body, SECRET, now=NOW, replay_cache=ReplayCache())["id"] == "evt_1"


def test_custom_max_skew() -> None:
    """max_skew narrows the accepted window."""
    headers, body = _delivery(at=NOW - 31)
    assert _reason(headers, body, max_skew=30) == "stale_timestamp"


def test_replay_rejected_then_forgotten_after_ttl() -> None:
    """The same event id is refused while its timestamp could still be fresh, and forgotten afterwards."""
    cache = ReplayCache()
    headers, body = _delivery()
    verify(headers, body, SECRET, now=NOW, replay_cache=cache)
    with pytest.raises(WebhookVerificationError) as info:
        verify(headers, body, SECRET, now=NOW + 5, replay_cache=cache)
    assert info.value.reason == "replay"
    resent_headers, resent = _delivery(at=NOW + 601)  # a legitimate re-send long after, with a new timestamp
    assert verify(resent_headers, resent, SECRET, now=NOW + 601, replay_cache=cache)["id"] == "evt_1"


def test_replay_with_new_timestamp_rejected() -> None:
    """A retry of the same event id with a fresh signature is still a replay for the receiver."""
    cache = ReplayCache()
    headers, body = _delivery()
    verify(headers, body, SECRET, now=NOW, replay_cache=cache)
    headers2, body2 = _delivery(at=NOW + 3)
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(headers2, body2, SECRET, now=NOW + 3, replay_cache=cache)


def test_no_hidden_process_wide_cache() -> None:
    """The replay cache is the receiver's: two receivers (two caches) each accept the same delivery once,
    and verify() without a cache is a usage error, not a silent per-process cache."""
    headers, body = _delivery({"id": "evt_two_receivers"}, at=NOW)
    first, second = ReplayCache(), ReplayCache()
    assert verify(headers, body, SECRET, now=NOW, replay_cache=first)["id"] == "evt_two_receivers"
    assert verify(headers, body, SECRET, now=NOW, replay_cache=second)["id"] == "evt_two_receivers"
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(headers, body, SECRET, now=NOW, replay_cache=first)
    with pytest.raises(TypeError, match="replay_cache"):
        verify(headers, body, SECRET, now=NOW)  # type: ignore[call-arg]


def test_a_shared_replay_store_is_accepted() -> None:
    """Any object with ``add(event_id, now, ttl) -> bool`` works, e.g. one backed by a shared store."""

    class SetStore:
        def __init__(self) -> None:
            self.ids: dict[str, float] = {}

        def add(self, event_id: str, now: float, ttl: float) -> bool:
            if self.ids.get(event_id, 0.0) > now:
                return False
            self.ids[event_id] = now + ttl
            return True

    store = SetStore()
    headers, body = _delivery({"id": "evt_shared"}, at=NOW)
    verify(headers, body, SECRET, now=NOW, replay_cache=store)
    assert store.ids == {"evt_shared": NOW + 600}
    with pytest.raises(WebhookVerificationError, match="replay"):
        verify(headers, body, SECRET, now=NOW + 1, replay_cache=store)


def test_bad_signature_does_not_poison_cache() -> None:
    """A forged request with a known event id does not block the genuine delivery."""
    cache = ReplayCache()
    headers, body = _delivery()
    forged = {**headers, "X-Rotator-Signature": "sha256=" + "0" * 64}
    with pytest.raises(WebhookVerificationError):
        verify(forged, body, SECRET, now=NOW, replay_cache=cache)
    assert verify(headers, body, SECRET, now=NOW, replay_cache=cache)["id"] == "evt_1"


def test_replay_cache_is_bounded() -> None:
    """The cache drops its oldest ids beyond max_entries."""
    cache = ReplayCache(max_entries=3)
    for i in range(5):
        assert cache.add(f"e{i}", NOW, 600)
    assert len(cache) == 3
    assert cache.add("e0", NOW, 600)
    assert not cache.add("e4", NOW, 600)


@pytest.mark.parametrize(
    "drop", ["X-Rotator-Timestamp", "X-Rotator-Signature"],
)
def test_missing_headers_rejected(drop: str) -> None:
    """A delivery without the timestamp or the signature header is malformed."""
    headers, body = _delivery()
    del headers[drop]
    assert _reason(headers, body) == "malformed"


@pytest.mark.parametrize(
    ("name", "value"),
    [("X-Rotator-Timestamp", "yesterday"), ("X-Rotator-Signature", "md5=abc")],
)
def test_garbled_headers_rejected(name: str, value: str) -> None:
    """A non-integer timestamp or a signature without the sha256= scheme is malformed."""
    headers, body = _delivery()
    headers[name] = value
    assert _reason(headers, body) == "malformed"


def test_signed_body_without_id_rejected() -> None:
    """A body without an event id cannot be replay-checked, so it is malformed."""
    body = b'{"event": "rotation.succeeded"}'
    assert _reason(sign(body, SECRET, NOW), body) == "malformed"


def test_signed_non_json_rejected() -> None:
    """A correctly signed body that is not JSON is malformed."""
    assert _reason(sign(b"not json", SECRET, NOW), b"not json") == "malformed"


def test_several_secrets_during_rotation() -> None:
    """During a signing-secret rotation, either the new or the old secret verifies."""
    old = "old-signing-secret-123456"
    headers, body = _delivery(secret=old)
    assert verify(headers, body, [SECRET, old], now=NOW, replay_cache=ReplayCache())["id"] == "evt_1"


def test_error_is_value_error_without_secret() -> None:
    """The error is a ValueError and its message never includes the secret."""
    headers, body = _delivery(secret="wrong-secret-abcdefghijk")
    with pytest.raises(ValueError, match="bad_signature") as info:
        verify(headers, body, SECRET, now=NOW, replay_cache=ReplayCache())
    assert SECRET not in str(info.value)
