"""Client-side pacing for Secrets Manager's per-region request quotas.

AWS throttles each quota class separately (per account and region): the three stage-changing writes share 50
requests/s, the two tag calls another 50/s, reads are far higher. A mass rotation that ignores that turns into a
storm of ``ThrottlingException``; pacing every HTTP attempt (retries included) to the quota keeps the bucket on
AWS's side full instead.

The bucket is a GCRA ("virtual scheduling") limiter written here rather than a library: pyrate-limiter's
blocking acquire polls with sleeps and its API has changed with each major version, and ``limits`` has no
blocking acquire at all. GCRA needs one float and one lock: each caller reserves the next free slot under the
lock and sleeps outside it until that slot, so threads wait in arrival order and never spin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["QUOTA_CLASS", "QuotaConfig", "QuotaRegistry", "Quotas", "TokenBucket"]

# API action -> quota class (AWS Secrets Manager quotas page; not adjustable)
QUOTA_CLASS: dict[str, str] = {
    "PutSecretValue": "writes", "UpdateSecret": "writes", "UpdateSecretVersionStage": "writes",
    "TagResource": "tags", "UntagResource": "tags",
    "GetSecretValue": "get_secret_value", "DescribeSecret": "describe_secret",
    "ListSecrets": "list_secrets", "BatchGetSecretValue": "batch_get_secret_value",
}


class QuotaConfig(BaseModel):
    """Requests per second per quota class, as AWS publishes them; lower them for an account shared with other
    writers (rotator then leaves them headroom) or for tests."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    writes_per_second: float = Field(default=50, gt=0, le=1_000_000)  # PutSecretValue, UpdateSecret(VersionStage)
    tags_per_second: float = Field(default=50, gt=0, le=1_000_000)  # TagResource, UntagResource
    get_secret_value_per_second: float = Field(default=10_000, gt=0, le=1_000_000)
    describe_secret_per_second: float = Field(default=40_000, gt=0, le=1_000_000)
    list_secrets_per_second: float = Field(default=100, gt=0, le=1_000_000)
    batch_get_secret_value_per_second: float = Field(default=100, gt=0, le=1_000_000)

    def rate(self, quota_class: str) -> float:
        return float(getattr(self, f"{quota_class}_per_second"))


class TokenBucket:
    """``rate`` requests per second, at most ``burst`` at once after an idle spell; thread-safe, blocking."""

    def __init__(self, rate: float, burst: int = 1, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self._interval = 1.0 / rate
        self._tolerance = (max(1, burst) - 1) * self._interval
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tat = 0.0  # theoretical arrival time of the next request
        self.waited = 0.0  # seconds spent waiting, all callers together (for logs and benchmarks)

    def acquire(self) -> float:
        """Wait until this caller may send; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            start = max(now, tat - self._tolerance)
            self._tat = tat + self._interval
            delay = start - now
            self.waited += delay
        if delay > 0:
            self._sleep(delay)
        return delay


class Quotas:
    """One bucket per quota class, for one account/region/endpoint; registered on a boto3 client's events."""

    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self.buckets = {cls: TokenBucket(config.rate(cls)) for cls in set(QUOTA_CLASS.values())}

    def acquire(self, action: str) -> float:
        """Wait for a token of ``action``'s class (actions outside every class pass at once)."""
        quota_class = QUOTA_CLASS.get(action)
        return 0.0 if quota_class is None else self.buckets[quota_class].acquire()

    def attach(self, client: Any) -> None:
        """Pace every HTTP attempt of ``client`` (botocore retries included): ``before-send`` fires per attempt."""
        for action in QUOTA_CLASS:
            client.meta.events.register(f"before-send.secrets-manager.{action}", _Pacer(self, action))


class _Pacer:
    """The ``before-send`` handler of one action (returns None: botocore then sends the request)."""

    def __init__(self, quotas: Quotas, action: str) -> None:
        self.quotas, self.action = quotas, action

    def __call__(self, **_: Any) -> None:
        self.quotas.acquire(self.action)


class QuotaRegistry:
    """The buckets of each account/region/endpoint in a process, so every client aimed at the same quota draws
    from the same buckets. Keyed by (endpoint, region, profile, role, quota settings): providers configured with
    different quotas for one account get separate buckets (configure them alike)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quotas: dict[tuple[Any, ...], Quotas] = {}

    def get(self, key: tuple[str | None, ...], config: QuotaConfig) -> Quotas:
        with self._lock:
            found = self._quotas.get((*key, config))
            if found is None:
                found = self._quotas[(*key, config)] = Quotas(config)
            return found
