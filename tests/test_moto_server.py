"""The gated moto server itself: keep-alive, a real stop and restart, concurrency, AWS's token rule."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from tests import moto_server
from tests.moto_server import GatedMotoServer, aws_env, moto, unique

__all__ = ["aws_env", "moto"]


def client(server: GatedMotoServer, **config: Any) -> Any:
    """A boto3 Secrets Manager client that tries once and gives up quickly."""
    settings = {"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 2, "read_timeout": 10,
                **config}
    return boto3.client("secretsmanager", endpoint_url=server.endpoint, config=Config(**settings))


def test_sequential_calls_reuse_one_connection(moto: GatedMotoServer) -> None:
    """Like AWS, the server keeps connections alive: 50 calls, not 50 TCP connections."""
    sm, name = client(moto), unique()
    sm.create_secret(Name=name, SecretString="v")
    moto.reset_counts()
    for _ in range(50):
        sm.describe_secret(SecretId=name)
    assert moto.count(["DescribeSecret"]) == 50
    assert moto.connections <= 2


def test_query_protocol_still_reaches_moto(moto: GatedMotoServer) -> None:
    """STS (not Secrets Manager) goes through moto's dispatcher."""
    sts = boto3.client("sts", endpoint_url=moto.endpoint)
    assert sts.get_caller_identity()["Account"] == "123456789012"
    assert moto.count(["GetCallerIdentity"]) == 1


def test_stop_refuses_connections_and_start_resumes_on_the_same_port(moto: GatedMotoServer) -> None:
    """stop() drops even the kept-alive connection; start() serves the same port and the same state."""
    sm, name, endpoint = client(moto), unique(), moto.endpoint
    sm.create_secret(Name=name, SecretString="before")
    moto.stop()
    try:
        assert not moto.running
        with pytest.raises((botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
            sm.describe_secret(SecretId=name)
    finally:
        moto.start()
    assert moto.running
    assert moto.endpoint == endpoint
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "before"


def test_concurrent_requests_are_served_concurrently(moto: GatedMotoServer) -> None:
    """16 requests that each wait inside the server overlap: the server held several of them inside the delay at
    the same moment (counted by the server, so no clock is compared)."""
    sm, name = client(moto, max_pool_connections=16), unique()
    sm.create_secret(Name=name, SecretString="v")
    moto.max_in_delay = 0
    moto.delay = 0.5
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: sm.describe_secret(SecretId=name), range(16)))
    assert moto.count(["DescribeSecret"]) == 16
    assert moto.max_in_delay > 1


def _error_code(caught: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(caught.value.response["Error"]["Code"])


def test_reused_token_with_another_value_is_refused_like_aws(moto: GatedMotoServer) -> None:
    """AWS refuses a ClientRequestToken already naming a version with another value; moto would overwrite."""
    sm, name, token = client(moto), unique(), str(uuid.uuid4())
    arn = sm.create_secret(Name=name, SecretString="base")["ARN"]
    sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString="a", VersionStages=["AWSPENDING"])
    for secret_id in (name, arn):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            sm.put_secret_value(SecretId=secret_id, ClientRequestToken=token, SecretString="b",
                                VersionStages=["AWSPENDING"])
        assert _error_code(caught) == "ResourceExistsException"
        assert token in str(caught.value)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        sm.update_secret(SecretId=name, ClientRequestToken=token, SecretString="c")
    assert _error_code(caught) == "ResourceExistsException"
    assert sm.get_secret_value(SecretId=name, VersionId=token)["SecretString"] == "a"
    # the same token with the same value is an idempotent retry
    again = sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString="a",
                                VersionStages=["AWSPENDING"])
    assert again["VersionId"] == token
    assert sm.get_secret_value(SecretId=name, VersionStage="AWSPENDING")["SecretString"] == "a"
    assert sm.get_secret_value(SecretId=name)["SecretString"] == "base"


def test_racing_writers_with_one_token_exactly_one_wins(moto: GatedMotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writers with the same token and different values: one succeeds, the other is refused."""
    check = moto_server._token_in_use

    def slow_check(environ: dict[str, Any], request: dict[str, Any]) -> str | None:
        refusal = check(environ, request)
        time.sleep(0.05)  # widen the window between the check and moto's write: the lock must cover both
        return refusal

    monkeypatch.setattr(moto_server, "_token_in_use", slow_check)
    sm = client(moto, max_pool_connections=4)
    for _ in range(5):
        name, token = unique(), str(uuid.uuid4())
        sm.create_secret(Name=name, SecretString="base")
        barrier, won, refused = threading.Barrier(2), [], []

        def put(value: str, name: str = name, token: str = token, barrier: threading.Barrier = barrier,
                won: list[str] = won, refused: list[str] = refused) -> None:
            barrier.wait()
            try:
                sm.put_secret_value(SecretId=name, ClientRequestToken=token, SecretString=value,
                                    VersionStages=["AWSPENDING"])
                won.append(value)
            except botocore.exceptions.ClientError as exc:
                refused.append(str(exc.response["Error"]["Code"]))

        racers = [threading.Thread(target=put, args=(value,)) for value in ("x", "y")]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=10)
        assert len(won) == 1
        assert refused == ["ResourceExistsException"]
        assert sm.get_secret_value(SecretId=name, VersionId=token)["SecretString"] == won[0]
