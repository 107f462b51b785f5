"""Client-side quota pacing (rotator_aws._quota) against moto enforcing Secrets Manager's quotas per class."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from rotator_aws._quota import QuotaConfig, QuotaRegistry, Quotas, TokenBucket
from rotator_aws.config import AwsConfig

from tests.moto_server import GatedMotoServer, aws_env, moto

__all__ = ["aws_env", "moto"]

N = 30
INCIDENT_WRITES, INCIDENT_TAGS = 4.0, 4.0  # documented in README (AWS: quotas)


class FakeTime:
    """A stopped clock that moves only when told; sleeps return at once (the bucket's waits are returned)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_bucket_spaces_callers_one_interval_apart() -> None:
    """Each acquire reserves the next slot: with a stopped clock the k-th caller waits k/rate seconds."""
    fake = FakeTime()
    bucket = TokenBucket(10, clock=fake.clock, sleep=fake.sleep)
    waits = [bucket.acquire() for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    fake.now += 10  # idle: no debt carried over, and no burst beyond `burst`
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.1)


def test_bucket_burst_and_threads() -> None:
    """A burst of B passes at once; 40 threads at once get 40 distinct slots (none lost, none shared)."""
    fake = FakeTime()
    bucket = TokenBucket(10, burst=3, clock=fake.clock, sleep=fake.sleep)
    assert [bucket.acquire() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.1])
    bucket = TokenBucket(20, clock=fake.clock, sleep=fake.sleep)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = bucket.acquire()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(waits) == pytest.approx([i / 20 for i in range(40)])


def test_registry_shares_buckets_per_account_and_settings() -> None:
    registry = QuotaRegistry()
    config = QuotaConfig(writes_per_second=10)
    first = registry.get(("http://x", "us-east-1", None, None), config)
    assert registry.get(("http://x", "us-east-1", None, None), QuotaConfig(writes_per_second=10)) is first
    assert registry.get(("http://x", "eu-west-1", None, None), config) is not first
    assert isinstance(first, Quotas)
    assert first.buckets["writes"].rate == 10
    assert first.buckets["tags"].rate == 50
    assert first.acquire("CreateSecret") == 0.0  # not in a paced class


def test_quota_config_in_the_manifest_model() -> None:
    config = AwsConfig.model_validate({"type": "aws", "quotas": {"writes_per_second": 10, "tags_per_second": 5}})
    assert config.quotas.writes_per_second == 10
    assert config.quotas.tags_per_second == 5
    assert AwsConfig().quotas.get_secret_value_per_second == 10_000
    with pytest.raises(ValueError, match="writes_per_secnd"):
        AwsConfig.model_validate({"quotas": {"writes_per_secnd": 10}})
    with pytest.raises(ValueError, match="greater than 0"):
        AwsConfig.model_validate({"quotas": {"writes_per_second": 0}})


def write_manifest(path: Path, endpoint: str, quotas: dict[str, float]) -> None:
    prefix = f"quota-{uuid.uuid4().hex[:8]}/"
    settings = ", ".join(f"{k}: {v:g}" for k, v in quotas.items())
    lines = ["version: 1", "defaults: {provider: aws, every: 30d, grace: 1d, notice: 1d}", "providers:",
             f"  aws: {{type: aws, region: us-east-1, endpoint_url: '{endpoint}', name_prefix: '{prefix}', "
             f"max_attempts: 10, quotas: {{{settings}}}}}",
             f"audit: {{path: {path.parent / 'audit.jsonl'}}}", "secrets:"]
    for i in range(N):
        lines += [f"  - name: q/s{i:03d}", f"    kind: {'hmac' if i % 2 else 'api_key'}"]
    path.write_text("\n".join(lines) + "\n")


@contextmanager
def created(tmp_path: Path, server: GatedMotoServer, quotas: dict[str, float]) -> Iterator[Any]:
    """A runtime over N new AWS secrets (created before the server enforces anything)."""
    from rotator.app import build_runtime

    path = tmp_path / "rotation.yaml"
    write_manifest(path, server.endpoint, quotas)
    runtime = build_runtime(path, actor="test", notify=False)
    try:
        runtime.engine.reconcile(list(runtime.manifest.secrets.values()), concurrency=16)
        yield runtime
    finally:
        runtime.close()


def values(tmp_path: Path) -> list[str]:
    """Every value the run wrote, read back from moto (for the canary scan)."""
    import boto3

    from tests.moto_server import shared_server

    client = boto3.client("secretsmanager", endpoint_url=shared_server().endpoint, region_name="us-east-1")
    prefix = (tmp_path / "rotation.yaml").read_text().split("name_prefix: '")[1].split("'")[0]
    found: list[str] = []
    for page in client.get_paginator("list_secrets").paginate(Filters=[{"Key": "name", "Values": [prefix]}]):
        for secret in page["SecretList"]:
            for vid in client.list_secret_version_ids(SecretId=secret["Name"])["Versions"]:
                answer = client.get_secret_value(SecretId=secret["Name"], VersionId=vid["VersionId"])
                found.append(answer["SecretString"])
    return found


def scan(tmp_path: Path, caplog: pytest.LogCaptureFixture, secrets: list[str]) -> None:
    text = caplog.text + "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert secrets
    assert not [s for s in secrets if s in text]


def test_paced_client_is_never_throttled(moto: GatedMotoServer, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Server and client at 10 writes/s and 10 tag calls/s: a forced pass at concurrency 16 rotates every
    secret and the server refused nothing."""
    with created(tmp_path, moto, {"writes_per_second": 10, "tags_per_second": 10}) as runtime:
        moto.quotas = {"writes": 10, "tags": 10}
        moto.reset_counts()
        outcomes = runtime.engine.reconcile(list(runtime.manifest.secrets.values()), force=True, concurrency=16)
        throttled, writes = dict(moto.throttled), moto.count(["PutSecretValue", "UpdateSecretVersionStage"])
        moto.quotas = {}
    assert [o for o in outcomes if not o.ok or o.action != "rotated"] == []
    assert writes >= 2 * N  # the pass really wrote (and so really met the quota)
    assert throttled == {}
    scan(tmp_path, caplog, values(tmp_path))


def test_unpaced_client_is_throttled(moto: GatedMotoServer, tmp_path: Path) -> None:
    """The same pass with the client's buckets effectively off: the server throttles writes, so the test
    above can fail. (botocore's retries may still save the rotations; that is not the point here.)"""
    with created(tmp_path, moto, {"writes_per_second": 100_000, "tags_per_second": 100_000}) as runtime:
        moto.quotas = {"writes": 10, "tags": 10}
        moto.reset_counts()
        runtime.engine.reconcile(list(runtime.manifest.secrets.values()), force=True, concurrency=16)
        throttled = dict(moto.throttled)
        moto.quotas = {}
    assert throttled.get("writes", 0) > 0


def test_throttled_answer_is_aws_shaped(moto: GatedMotoServer) -> None:
    """Over its rate a class answers 400 ThrottlingException "Rate exceeded"; other classes are unaffected."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client("secretsmanager", endpoint_url=moto.endpoint, region_name="us-east-1",
                          config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    name = f"quota-shape-{uuid.uuid4().hex[:8]}"
    client.create_secret(Name=name, SecretString="first")
    moto.quotas = {"writes": 1}
    moto.reset_counts()
    client.put_secret_value(SecretId=name, SecretString="second")
    with pytest.raises(ClientError) as caught:
        client.put_secret_value(SecretId=name, SecretString="third")
    error = caught.value.response
    assert error["Error"]["Code"] == "ThrottlingException"
    assert error["Error"]["Message"] == "Rate exceeded"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    client.describe_secret(SecretId=name)  # a read class with no quota set
    assert moto.throttled == {"writes": 1}


def test_incident_mode_write_count(moto: GatedMotoServer, tmp_path: Path) -> None:
    """``rotate --now --revoke-previous`` on a secret with a previous version in grace: the writes per secret
    the README documents, by class (stage-changing writes and tag calls)."""
    with created(tmp_path, moto, {}) as runtime:
        policies = list(runtime.manifest.secrets.values())[:4]
        runtime.engine.reconcile(policies, force=True)  # now each has AWSPREVIOUS in grace
        moto.reset_counts()
        outcomes = runtime.engine.reconcile(policies, force=True, revoke_previous=True)
        calls = dict(moto.calls)
    assert [o for o in outcomes if not o.ok] == []
    writes = sum(calls.get(a, 0) for a in ("PutSecretValue", "UpdateSecret", "UpdateSecretVersionStage"))
    tags = sum(calls.get(a, 0) for a in ("TagResource", "UntagResource"))

    assert (writes / 4, tags / 4) == (INCIDENT_WRITES, INCIDENT_TAGS)
