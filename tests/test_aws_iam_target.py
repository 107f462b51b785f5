"""The aws_iam target on the moto server over HTTP, with moto's signature and policy checks on.

The admin is an IAM user holding exactly deploy/policies/aws-iam-target-policy.json, and the managed users live
under its path, so every test also proves that policy is enough (and that a user outside it is refused).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from rotator_aws.iam_target import IamTarget, IamTargetConfig

from rotator.errors import CredentialRefused, OperationFailed, TargetDenied
from rotator.target import Binding, Credential, Strategy, load_target_class
from rotator.testing.target_contract import TargetContract
from tests.moto_server import GatedMotoServer, aws_env, iam_authentication, moto  # noqa: F401
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "deploy" / "policies" / "aws-iam-target-policy.json"
PATH = "/rotator-managed/"


def _client(server: GatedMotoServer, service: str, key: tuple[str, str]) -> Any:
    return boto3.client(service, endpoint_url=server.endpoint, region_name="us-east-1",
                        aws_access_key_id=key[0], aws_secret_access_key=key[1], aws_session_token=None)


def _user_with_policy(iam: Any, name: str, policy: str) -> tuple[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=policy)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


class Iam:
    """The moto account of one test: a root-like key for set-up, and the least-privilege admin's key."""

    def __init__(self, server: GatedMotoServer) -> None:
        self.server = server
        bootstrap = _client(server, "iam", ("testing", "testing"))  # before authentication is on
        everything = json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"}]})
        self.root_key = _user_with_policy(bootstrap, f"root-{uuid.uuid4().hex[:8]}", everything)
        self.admin_name = f"rotator-{uuid.uuid4().hex[:8]}"
        self.admin_key = _user_with_policy(bootstrap, self.admin_name, POLICY.read_text())
        self.root = _client(server, "iam", self.root_key)

    def user(self, path: str = PATH) -> str:
        name = f"app-{uuid.uuid4().hex[:10]}"
        self.root.create_user(UserName=name, Path=path)
        return name

    def keys(self, user: str) -> dict[str, str]:
        return {k["AccessKeyId"]: k["Status"] for k in self.root.list_access_keys(UserName=user)["AccessKeyMetadata"]}

    def target(self, *, secret: str | None = None, endpoint: str | None = None, **config: Any) -> IamTarget:
        admin = [Credential({"username": self.admin_name, "access_key_id": self.admin_key[0],
                             "secret_access_key": secret or self.admin_key[1]})]
        settings = IamTargetConfig(endpoint_url=endpoint or self.server.endpoint, region="us-east-1",
                                   login_timeout=1, max_attempts=1, connect_timeout=2, **config)
        return IamTarget(name="aws", config=settings, base_dir=Path("."), admin=lambda: admin)


@pytest.fixture
def iam(moto: GatedMotoServer) -> Iterator[Iam]:  # noqa: F811 - the moto fixture, imported above
    account = Iam(moto)
    with iam_authentication():
        yield account


@pytest.fixture
def target(iam: Iam) -> IamTarget:
    return iam.target()


@pytest.fixture
def make_binding(iam: Iam) -> Callable[[Strategy], Binding]:
    def make(strategy: Strategy) -> Binding:
        user = iam.user()
        return Binding(secret=f"aws/{user}", target="aws", username=user, strategy=strategy)
    return make


@pytest.fixture
def unreachable_target(iam: Iam) -> IamTarget:
    return iam.target(endpoint=f"http://127.0.0.1:{free_port()}")


@pytest.fixture
def denied_target(iam: Iam) -> IamTarget:
    return iam.target(secret="wrong" * 8)


class TestIamContract(TargetContract):
    """The shared target contract against moto IAM + STS with authentication on."""


def test_registered_as_entry_point() -> None:
    """`type: aws_iam` resolves through the rotator.targets entry-point group."""
    assert load_target_class("aws_iam") is IamTarget


def test_issue_deletes_leftovers_under_the_two_key_limit(iam: Iam, target: IamTarget,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Two keys rotator does not hold (an Active and an Inactive leftover) are deleted before CreateAccessKey;
    the log names their ids and never a secret."""
    user = iam.user()
    binding = Binding(secret="aws/x", target="aws", username=user, strategy=Strategy.DUAL)
    leftovers = [iam.root.create_access_key(UserName=user)["AccessKey"] for _ in range(2)]
    iam.root.update_access_key(UserName=user, AccessKeyId=leftovers[1]["AccessKeyId"], Status="Inactive")
    with caplog.at_level(logging.INFO, logger="rotator.targets.aws_iam"):
        issued = target.issue(binding, user, ())
    assert iam.keys(user) == {issued["access_key_id"]: "Active"}
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for leftover in leftovers:
        assert leftover["AccessKeyId"] in text
        assert leftover["SecretAccessKey"] not in text
    assert issued.secret not in text
    target.login(binding, issued)


def test_issue_keeps_what_the_store_holds(iam: Iam, target: IamTarget) -> None:
    """A kept key survives issue; a third key while two are kept fails clearly before calling CreateAccessKey."""
    user = iam.user()
    binding = Binding(secret="aws/x", target="aws", username=user, strategy=Strategy.DUAL)
    first = target.issue(binding, user, ())
    second = target.issue(binding, user, (first,))
    assert set(iam.keys(user)) == {first["access_key_id"], second["access_key_id"]}
    iam.server.reset_counts()
    with pytest.raises(OperationFailed, match="already holds two access keys") as info:
        target.issue(binding, user, (first, second))
    assert iam.server.count(["CreateAccessKey"]) == 0
    assert first.secret not in str(info.value)
    third = target.issue(binding, user, (second,))  # the next rotation: the older key goes
    assert set(iam.keys(user)) == {second["access_key_id"], third["access_key_id"]}


def test_deactivated_key_comes_back_on_rollback(iam: Iam, target: IamTarget) -> None:
    """on_disable: deactivate keeps the key Inactive, so enable (rollback) makes it log in again."""
    user = iam.user()
    binding = Binding(secret="aws/x", target="aws", username=user, strategy=Strategy.DUAL)
    key = target.issue(binding, user, ())
    target.disable(binding, key)
    assert iam.keys(user) == {key["access_key_id"]: "Inactive"}
    iam.server.reset_counts()
    with pytest.raises(CredentialRefused):
        target.login(binding, key)
    assert iam.server.count(["GetCallerIdentity"]) == 1  # an Inactive key is refused at once, no polling
    target.enable(binding, key)
    target.login(binding, key)


def test_on_disable_delete_removes_the_key(iam: Iam) -> None:
    """on_disable: delete deletes the key at once; a later enable says it cannot come back."""
    target = iam.target(on_disable="delete")
    user = iam.user()
    binding = Binding(secret="aws/x", target="aws", username=user, strategy=Strategy.DUAL)
    key = target.issue(binding, user, ())
    target.disable(binding, key)
    target.disable(binding, key)
    assert iam.keys(user) == {}
    with pytest.raises(OperationFailed, match="no longer exists"):
        target.enable(binding, key)


def test_login_polls_until_the_key_propagates(iam: Iam, target: IamTarget) -> None:
    """A new key that IAM refuses at first (eventual consistency) is retried with growing waits until it works."""
    user = iam.user()
    binding = Binding(secret="aws/x", target="aws", username=user, strategy=Strategy.DUAL)
    key = target.issue(binding, user, ())
    waits: list[float] = []
    target._sleep = waits.append
    target.config = target.config.model_copy(update={"login_timeout": 600})
    iam.server.unpropagated[key["access_key_id"]] = 3
    target.login(binding, key)
    assert len(waits) == 3
    assert waits == sorted(waits)


def test_user_outside_the_policy_path_is_denied(iam: Iam, target: IamTarget) -> None:
    """The shipped policy only reaches users under /rotator-managed/: others are TargetDenied with the hint."""
    user = iam.user(path="/")
    binding = Binding(secret="aws/x", target="aws", username=user, strategy=Strategy.DUAL)
    with pytest.raises(TargetDenied, match="iam:ListAccessKeys") as info:
        target.issue(binding, user, ())
    assert "aws-iam-target-policy.json" in (info.value.hint or "")


def test_missing_user_is_named(iam: Iam, target: IamTarget) -> None:
    """prepare for a user that does not exist fails naming it: rotator never creates IAM users."""
    binding = Binding(secret="aws/x", target="aws", username="nobody-here", strategy=Strategy.DUAL)
    with pytest.raises((OperationFailed, TargetDenied), match="nobody-here"):
        target.prepare(binding)


def test_policy_grants_every_iam_action_the_target_calls() -> None:
    """Each IAM action named in iam_target.py is in the shipped policy, and nothing else is."""
    source = (REPO / "providers" / "aws" / "rotator_aws" / "iam_target.py").read_text()
    used = {f"iam:{a}" for a in re.findall(r'_call\("(\w+)"', source)}
    granted = {a for s in json.loads(POLICY.read_text())["Statement"] for a in s["Action"]}
    assert used == granted


def test_admin_falls_back_to_the_next_key(iam: Iam) -> None:
    """A managed admin key mid-rotation: the first key AWS does not know is skipped for the next one."""
    target = iam.target()
    good = Credential({"username": iam.admin_name, "access_key_id": iam.admin_key[0],
                       "secret_access_key": iam.admin_key[1]})
    stale = good.with_fields(secret_access_key="stale" * 8)
    target._admin = lambda: [stale, good]
    target.check()
    user = iam.user()
    binding = Binding(secret="aws/x", target="aws", username=user, strategy=Strategy.DUAL)
    target.login(binding, target.issue(binding, user, ()))


def test_without_admin_the_credential_chain_is_used(iam: Iam) -> None:
    """No admin credential: boto3's chain is used (here the dummy env key, which moto's auth refuses)."""
    target = iam.target()
    target._admin = lambda: []
    with pytest.raises(TargetDenied, match="GetCallerIdentity"):
        target.check()
