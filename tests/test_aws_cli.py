"""The real `rotator` CLI against AWS Secrets Manager (moto in server mode): rotation, kill -9 at random
moments then `run`, racing processes, and exit 4 for an unreachable or refusing endpoint. Every value moto
ever held for the test's secrets is added to the workspace canary scan."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from rotator_aws.config import AwsConfig
from rotator_aws.provider import AwsProvider

from rotator.generators import GeneratorParams, generate, matches_kind
from rotator.keyset import Keyset, KeyVersion, State
from rotator.provider import SecretRef
from tests.conftest import Workspace
from tests.moto_server import DUMMY_ENV, GatedMotoServer, aws_env, moto

__all__ = ["aws_env", "moto"]
pytestmark = pytest.mark.xdist_group("processes")
MANIFEST = """
version: 1
defaults: {provider: aws, every: 30d, grace: 1d, notice: 1d, stale_pending_after: 1h}
providers:
  aws: {type: aws, region: us-east-1, endpoint_url: "${MOTO_ENDPOINT}", name_prefix: "${PREFIX}",
        max_attempts: 2, connect_timeout: 1, read_timeout: 5}
secrets:
  - name: api
    kind: api_key
    prefix: "k_"
    verify: {command: ["sh", "-c", "cat >/dev/null; sleep 0.1"]}
"""
REF = SecretRef(name="api", path="api")


class Aws:
    """The test's view of the secrets the CLI manages: its own provider on the same prefix."""

    def __init__(self, server: GatedMotoServer, prefix: str) -> None:
        self.server, self.prefix = server, prefix
        self.provider = AwsProvider(name="check", config=AwsConfig(endpoint_url=server.endpoint,
                                                                   region="us-east-1", name_prefix=prefix))

    def read(self) -> Keyset:
        keyset = self.provider.read(REF)
        assert keyset is not None
        return keyset

    def currents(self) -> list[str]:
        """Versions holding AWSCURRENT, checked against an explicit-stage read."""
        name, client = self.prefix + REF.path, self.provider.client

        def holders() -> list[str]:
            stages = client.describe_secret(SecretId=name)["VersionIdsToStages"]
            return [vid for vid, labels in stages.items() if "AWSCURRENT" in labels]

        for _ in range(5):  # a rotation may move the label between the two reads: look again
            before = holders()
            served = client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")["VersionId"]
            if before == holders():
                return before if before == [served] else [*before, served]
        return before

    def every_value(self) -> list[str]:
        """Every value of every version ever stored (moto keeps deprecated versions)."""
        client, found = self.provider.client, []
        for secret in client.list_secrets(Filters=[{"Key": "name", "Values": [self.prefix]}])["SecretList"]:
            for vid in client.describe_secret(SecretId=secret["Name"]).get("VersionIdsToStages", {}):
                answer = client.get_secret_value(SecretId=secret["Name"], VersionId=vid)
                found += [answer["SecretString"]] if "SecretString" in answer else []
        return found


def consistent(aws: Aws) -> list[str]:
    """What is wrong (empty when exactly one valid current and nothing pending)."""
    keyset = aws.read()
    currents = aws.currents()
    problems = [] if len(currents) == 1 else [f"AWSCURRENT on {currents}"]
    states = [v.state for v in keyset.versions]
    current = keyset.current
    if states.count(State.CURRENT) != 1 or current is None or current.value is None \
            or not matches_kind("api_key", current.value.reveal()):
        problems.append(f"current missing or invalid: {states}")
    return problems + (["pending left"] if keyset.pending is not None else [])


@pytest.fixture
def aws_ws(workspace: Workspace, moto: GatedMotoServer) -> Iterator[tuple[Workspace, Aws]]:
    """A workspace whose manifest manages secrets under a fresh prefix on the moto server."""
    prefix = f"cli-{uuid.uuid4().hex[:8]}/"
    workspace.env.update(DUMMY_ENV, MOTO_ENDPOINT=moto.endpoint, PREFIX=prefix)
    workspace.write_manifest(MANIFEST)
    aws = Aws(moto, prefix)
    try:
        yield workspace, aws
    finally:
        moto.relax()
        if not moto.running:
            moto.start()
        workspace.extra_values += aws.every_value()
        aws.provider.close()


def test_rotate_now_through_aws(aws_ws: tuple[Workspace, Aws]) -> None:
    """`run` creates the secret; `rotate --now` makes a new AWSCURRENT with the old one previous."""
    ws, aws = aws_ws
    assert ws.cli("run").code == 0
    first = aws.read()
    result = ws.cli("rotate", "--now", "api")
    assert result.code == 0, result.err
    assert consistent(aws) == []
    second = aws.read()
    assert second.previous is not None
    assert first.current is not None
    assert second.previous.id == first.current.id
    status = ws.cli("status", "api", "-o", "json").json()
    assert sorted(v["state"] for v in status["secrets"][0]["versions"]) == ["current", "previous"]


def test_rotate_now_in_a_new_process_is_five_aws_calls(aws_ws: tuple[Workspace, Aws], moto: GatedMotoServer) -> None:
    """The CLI's rotation costs what the layout promises: describe, put, read-back, tag, label move; the audit
    log adds its key read (describe + get, once per process) and the head anchor (describe + tag, once per run)."""
    ws, aws = aws_ws
    assert ws.cli("run").code == 0
    moto.reset_counts()
    result = ws.cli("rotate", "--now", "api")
    assert result.code == 0, result.err
    rotation = {"DescribeSecret": 1, "PutSecretValue": 1, "GetSecretValue": 1, "TagResource": 1,
                "UpdateSecretVersionStage": 1}
    audit = {"DescribeSecret": 2, "GetSecretValue": 1, "TagResource": 1}
    assert dict(moto.calls) == {k: rotation.get(k, 0) + audit.get(k, 0) for k in rotation | audit}
    assert consistent(aws) == []


@pytest.mark.slow
def test_kill_9_at_random_moments_then_run(aws_ws: tuple[Workspace, Aws]) -> None:
    """10 rotations killed at random instants: each `run` after it leaves exactly one valid AWSCURRENT and
    no pending, and a watcher never sees a moment without exactly one valid current."""
    ws, aws = aws_ws
    # every trial is a forced rotation: a 1s grace has ended before the next one, which otherwise would
    # have to cut it short (and is refused for that)
    ws.write_manifest(MANIFEST.replace("grace: 1d", "grace: 1s"))
    assert ws.cli("run").code == 0
    started = time.monotonic()
    assert ws.cli("rotate", "--now", "api").code == 0
    full = time.monotonic() - started
    bad: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        watcher = Aws(aws.server, aws.prefix)
        while not stop.is_set():
            bad.extend(p for p in consistent(watcher) if p != "pending left")
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    rng = random.Random(20261124)
    rotations = 0
    try:
        for trial in range(10):
            time.sleep(1.1)  # the 1s grace of the value before has ended: this rotation is not refused
            before = aws.read().current
            proc = ws.spawn("rotate", "--now", "api")
            if trial % 2:  # anywhere from start-up to the end
                time.sleep(rng.uniform(0.3 * full, 1.1 * full))
            else:  # once a value is staged: during verify or promote
                while aws.read().pending is None and proc.poll() is None:
                    time.sleep(0.01)
                time.sleep(rng.uniform(0, 0.12))
            proc.kill()
            ws.collect(proc)
            result = ws.cli("run")
            assert result.code == 0, result.out + result.err
            assert consistent(aws) == []
            after = aws.read().current
            rotations += after is not None and before is not None and after.id != before.id
    finally:
        stop.set()
        thread.join()
    assert bad == []
    assert rotations >= 5


def test_racing_processes_rotate_a_due_secret_once(aws_ws: tuple[Workspace, Aws]) -> None:
    """Three `rotate` processes on a due secret: one rotation, the others resume it or see it done."""
    ws, aws = aws_ws
    ws.write_manifest(MANIFEST.replace("every: 30d, grace: 1d, notice: 1d", "every: 1h, grace: 1m, notice: 1m"))
    token = uuid.uuid4().hex  # a value made two hours ago: due now, and not again for an hour however slow
    old = datetime.now(UTC) - timedelta(hours=2)
    aws.provider.create(REF, KeyVersion(id=token, state=State.CURRENT, created_at=old, promoted_at=old,
                                        attempt=token, value=generate(GeneratorParams(kind="api_key",
                                                                                      prefix="k_")).value), {})
    created = aws.read().current
    procs = [ws.spawn("rotate", "api", "-o", "json") for _ in range(3)]
    actions = []
    for proc in procs:
        out, err = ws.collect(proc, timeout=60)
        assert proc.returncode == 0, err
        actions.append(json.loads(out)["results"][0]["action"])
    first = aws.read()
    assert consistent(aws) == []
    assert first.previous is not None
    assert created is not None
    assert first.previous.id == created.id
    audit = [json.loads(line) for line in (ws.root / "audit.jsonl").read_text().splitlines()]
    rotations = [r for r in audit
                 if r.get("event") == "rotation.succeeded" and "initial" not in r.get("details", {})]
    assert len(rotations) == 1, actions


def test_unreachable_endpoint_exits_4_naming_it(aws_ws: tuple[Workspace, Aws]) -> None:
    """With the endpoint down, `rotate` exits 4 and names the endpoint; after restart `run` is clean."""
    ws, aws = aws_ws
    assert ws.cli("run").code == 0
    aws.server.stop()
    try:
        result = ws.cli("rotate", "--now", "api")
    finally:
        aws.server.start()
    assert result.code == 4, result.out + result.err
    assert aws.server.endpoint in result.out + result.err
    assert ws.cli("run").code == 0
    assert consistent(aws) == []


def test_access_denied_exits_4_naming_the_action(aws_ws: tuple[Workspace, Aws]) -> None:
    """A role without PutSecretValue: exit 4, the message names the action and the secret."""
    ws, aws = aws_ws
    assert ws.cli("run").code == 0
    aws.server.deny = lambda action, request: action == "PutSecretValue"
    result = ws.cli("rotate", "--now", "api")
    assert result.code == 4, result.out + result.err
    assert "secretsmanager:PutSecretValue" in result.out + result.err
    aws.server.relax()
    assert consistent(aws) == []
