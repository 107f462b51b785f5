"""The real `rotator` CLI rotating credentials where they are checked: a real redis-server, IAM on the moto
server (signatures and policies checked), and a local key service behind the `command` target.

For each target: after create the stored credential logs in; during grace current and previous both do; after
retire (or rollback, or revoke) the one that left is refused; every output, log and audit file is scanned for
every secret value (the passwords and keys inside the stored documents, and the admin secrets).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import redis

from rotator.localstore import LocalConfig, LocalProvider
from rotator.provider import SecretRef
from rotator.target import Credential
from tests.conftest import Workspace
from tests.key_service import KeyService
from tests.moto_server import GatedMotoServer, aws_env, iam_authentication, moto  # noqa: F401
from tests.redis_server import RedisServer
from tests.servers import require_binary
from tests.test_aws_iam_target import Iam

SCRIPTS = Path(__file__).resolve().parent / "key_scripts"
DEFAULTS = "defaults: {every: 90d, grace: 7d, notice: 14d, rollback_window: 24h}"


def credentials(ws: Workspace, name: str) -> dict[str, list[Credential]]:
    """The stored credential documents of ``name`` by state, newest first; their secrets join the canary scan."""
    provider = LocalProvider(name="t", config=LocalConfig(type="local", path=str(ws.root / ".rotator" / "store.db")),
                             base_dir=ws.root)
    try:
        keyset = provider.read(SecretRef(name, name))
    finally:
        provider.close()
    out: dict[str, list[Credential]] = {}
    for version in keyset.versions if keyset else ():
        if version.value is not None:
            credential = Credential.from_value(version.value)
            ws.extra_values.append(credential.secret)
            out.setdefault(str(version.state), []).insert(0, credential)
    return out


def ok(ws: Workspace, *args: str, env: dict[str, str] | None = None) -> None:
    result = ws.cli(*args, env=env)
    assert result.code == 0, result.err[-3000:]


def lifecycle(ws: Workspace, name: str, env: dict[str, str], logs_in: Callable[[Credential], bool]) -> None:
    """create → rotate (both log in) → retire (previous refused) → rotate → rollback → revoke-previous."""
    ok(ws, "run", env=env)
    (first,) = credentials(ws, name)["current"]
    assert logs_in(first)
    ok(ws, "rotate", "--now", name, env=env)
    states = credentials(ws, name)
    (second,), (previous,) = states["current"], states["previous"]
    assert previous == first
    assert logs_in(second)
    assert logs_in(first)  # grace: the previous credential still works
    ok(ws, "retire", name, env=env)
    assert not logs_in(first)
    assert logs_in(second)
    ok(ws, "rotate", "--now", name, env=env)
    (third,) = credentials(ws, name)["current"]
    ok(ws, "rollback", name, env=env)
    (restored,) = credentials(ws, name)["current"]
    assert restored == second
    assert logs_in(second)
    assert not logs_in(third)
    ok(ws, "rotate", "--revoke-previous", name, "--reason", "incident", env=env)
    (fourth,) = credentials(ws, name)["current"]
    assert logs_in(fourth)
    assert not logs_in(second)  # revoked at once, no grace


# --- redis ---------------------------------------------------------------------------------------------------


def redis_manifest(port: int, user: str, strategy: str) -> str:
    return f"""
    version: 1
    {DEFAULTS}
    targets:
      cache:
        type: redis
        port: {port}
        persist: acl_save
        admin: {{username: rotator, password: "${{REDIS_ADMIN_PASSWORD}}"}}
        url: "redis://{{username}}:{{password}}@{{host}}:{{port}}/{{db}}"
    secrets:
      - name: cache/app
        kind: password
        length: 24
        target: {{name: cache, username: {user}, strategy: {strategy}}}
    """


def redis_login(server: RedisServer) -> Callable[[Credential], bool]:
    def logs_in(credential: Credential) -> bool:
        client = redis.Redis(port=server.port, username=credential.username, password=credential.secret)
        try:
            return bool(client.ping())
        except redis.exceptions.NoPermissionError:
            return True  # authenticated; the new user has no command permissions yet
        except redis.exceptions.AuthenticationError:
            return False
        finally:
            client.close()
    return logs_in


@pytest.mark.parametrize("strategy", ["dual", "alternating"])
def test_redis_lifecycle(workspace: Workspace, redis_server: RedisServer, strategy: str) -> None:
    """Redis ACL: every step of the lifecycle acts on the server; the document carries a ready url."""
    user = f"app{uuid.uuid4().hex[:8]}"
    workspace.write_manifest(redis_manifest(redis_server.port, user, strategy))
    workspace.extra_values.append(redis_server.admin_password)
    env = {"REDIS_ADMIN_PASSWORD": redis_server.admin_password}
    lifecycle(workspace, "cache/app", env, redis_login(redis_server))
    (current,) = credentials(workspace, "cache/app")["current"]
    assert current["url"].startswith(f"redis://{current.username}:")
    if strategy == "alternating":
        assert current.username in (user, f"{user}_clone")


def test_redis_down_then_recovers(workspace: Workspace, tmp_path: Path) -> None:
    """A target that is down: exit 4, one line naming the target, the store unchanged; the next run finishes."""
    server = RedisServer(require_binary("redis-server", "redis-server"), tmp_path, aclfile=True)
    server.start()
    try:
        workspace.write_manifest(redis_manifest(server.port, "app", "dual"))
        workspace.extra_values.append(server.admin_password)
        env = {"REDIS_ADMIN_PASSWORD": server.admin_password}
        ok(workspace, "run", env=env)
        before = credentials(workspace, "cache/app")
        server.stop()
        result = workspace.cli("rotate", "--now", "cache/app", env=env)
        assert result.code == 4, result.err
        assert "redis target cache" in result.out + result.err
        assert set(credentials(workspace, "cache/app")) <= {"current", "pending"}
        assert credentials(workspace, "cache/app")["current"] == before["current"]
        server.start()
        ok(workspace, "rotate", "--now", "cache/app", env=env)
        states = credentials(workspace, "cache/app")
        assert redis_login(server)(states["current"][0])
        assert redis_login(server)(states["previous"][0])
    finally:
        server.stop()


def test_redis_wrong_admin_is_exit_4(workspace: Workspace, redis_server: RedisServer) -> None:
    """A wrong admin password: exit 4 naming the target, nothing stored."""
    workspace.write_manifest(redis_manifest(redis_server.port, f"app{uuid.uuid4().hex[:8]}", "dual"))
    result = workspace.cli("run", env={"REDIS_ADMIN_PASSWORD": "not-the-admin-password"})
    assert result.code == 4, result.err
    assert "redis target cache" in result.out + result.err
    assert credentials(workspace, "cache/app") == {}


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["dual", "alternating"])
def test_redis_kill_9_trials(workspace: Workspace, redis_server: RedisServer, strategy: str) -> None:
    """10 `rotate --now` killed at random moments, each followed by `run`: the stored current credential always
    logs in, and so does the previous one during grace."""
    workspace.write_manifest(redis_manifest(redis_server.port, f"app{uuid.uuid4().hex[:8]}", strategy))
    workspace.extra_values.append(redis_server.admin_password)
    env = {"REDIS_ADMIN_PASSWORD": redis_server.admin_password}
    logs_in = redis_login(redis_server)
    ok(workspace, "run", env=env)
    rng = random.Random(20261204)
    killed = 0
    for _ in range(10):
        if "previous" in credentials(workspace, "cache/app"):
            ok(workspace, "retire", "cache/app", env=env)  # one previous at a time (alternating: two identities)
        proc = subprocess.Popen(workspace.command("rotate", "--now", "cache/app"), cwd=workspace.root,
                                env={**workspace.env, **env}, text=True, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 2.0))
        proc.send_signal(signal.SIGKILL)
        workspace.collect(proc)
        killed += proc.returncode == -signal.SIGKILL
        ok(workspace, "run", env=env)
        states = credentials(workspace, "cache/app")
        assert "pending" not in states
        (current,) = states["current"]
        assert logs_in(current)
        for previous in states.get("previous", []):
            assert logs_in(previous)
    assert killed >= 3


# --- aws_iam -------------------------------------------------------------------------------------------------


@pytest.fixture
def iam(moto: GatedMotoServer) -> Iterator[Iam]:  # noqa: F811 - the moto fixture, imported above
    account = Iam(moto)
    with iam_authentication():
        yield account


def test_aws_iam_lifecycle(workspace: Workspace, iam: Iam) -> None:
    """IAM keys: issued by CreateAccessKey, deactivated on retire, re-enabled on rollback, refused on revoke."""
    user = iam.user()
    workspace.write_manifest(f"""
    version: 1
    {DEFAULTS}
    targets:
      aws:
        type: aws_iam
        endpoint_url: {iam.server.endpoint}
        region: us-east-1
        login_timeout: 1
        admin: {{username: {iam.admin_name}, access_key_id: {iam.admin_key[0]},
                 secret_access_key: "${{IAM_ADMIN_SECRET}}"}}
    secrets:
      - name: ci/deploy
        kind: api_key
        target: {{name: aws, username: {user}, strategy: dual}}
    """)
    workspace.extra_values.append(iam.admin_key[1])
    env = {"IAM_ADMIN_SECRET": iam.admin_key[1]}

    def logs_in(credential: Credential) -> bool:
        sts = boto3.client("sts", endpoint_url=iam.server.endpoint, region_name="us-east-1",
                           aws_access_key_id=credential["access_key_id"],
                           aws_secret_access_key=credential["secret_access_key"], aws_session_token=None)
        try:
            return str(sts.get_caller_identity()["Arn"]).endswith(f"/{user}")
        except sts.exceptions.ClientError:
            return False

    lifecycle(workspace, "ci/deploy", env, logs_in)
    assert len(iam.keys(user)) <= 2


# --- command -------------------------------------------------------------------------------------------------


def test_command_lifecycle(workspace: Workspace) -> None:
    """A key service behind issue/revoke/verify scripts: the whole lifecycle through the CLI."""
    service = KeyService()
    service.start()
    try:
        argv = lambda name: f"[{sys.executable}, {SCRIPTS / (name + '.py')}]"  # noqa: E731
        workspace.write_manifest(f"""
        version: 1
        {DEFAULTS}
        targets:
          keys:
            type: command
            issue: {argv("issue")}
            revoke: {argv("revoke")}
            verify: {argv("verify")}
            check: {argv("check")}
            timeout: 20s
            env: {{KEY_SERVICE_URL: "{service.url}"}}
            admin: {{username: admin, token: "${{KEY_SERVICE_TOKEN}}"}}
        secrets:
          - name: partner/key
            kind: api_key
            target: {{name: keys, username: partner, strategy: dual}}
        """)
        workspace.extra_values.append(service.admin_token)
        env = {"KEY_SERVICE_TOKEN": service.admin_token}

        def logs_in(credential: Credential) -> bool:
            request = urllib.request.Request(f"{service.url}/v1/whoami",  # noqa: S310 - the local test service
                                             headers={"Authorization": f"Bearer {credential.secret}"})
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    return bool(json.load(answer)["username"] == "partner")
            except urllib.error.HTTPError:
                return False

        lifecycle(workspace, "partner/key", env, logs_in)
        assert len(service.live_keys("partner")) == 1
    finally:
        service.stop()
