"""The shipped IAM policies: valid JSON, least privilege, and covering every call the AWS code makes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POLICIES = REPO / "deploy" / "policies"
CODE = REPO / "providers" / "aws" / "rotator_aws"


def statements(name: str) -> list[dict[str, Any]]:
    document = json.loads((POLICIES / name).read_text())
    assert document["Version"] == "2012-10-17"
    return list(document["Statement"])


def allowed(name: str) -> dict[str, list[dict[str, Any]]]:
    """Action -> the Allow statements granting it."""
    out: dict[str, list[dict[str, Any]]] = {}
    for statement in statements(name):
        if statement["Effect"] == "Allow":
            for action in statement["Action"]:
                out.setdefault(action, []).append(statement)
    return out


def test_every_action_the_code_calls_is_granted() -> None:
    """Each Secrets Manager action named in the provider and Lambda code appears in the rotator policy."""
    used = set()
    for source in (p for p in CODE.glob("*.py") if p.name != "iam_target.py"):  # IAM actions: own policy
        used |= set(re.findall(r'_call\("(\w+)"', source.read_text()))
    grants = allowed("aws-iam-policy.json")
    assert used
    assert {f"secretsmanager:{a}" for a in used} <= set(grants)


def test_value_access_is_scoped_to_managed_secrets() -> None:
    """Reading and writing values is only allowed on secrets tagged rotator:managed=true."""
    grants = allowed("aws-iam-policy.json")
    for action in ("GetSecretValue", "PutSecretValue", "UpdateSecretVersionStage", "UntagResource"):
        for statement in grants[f"secretsmanager:{action}"]:
            assert statement["Condition"]["StringEquals"]["aws:ResourceTag/rotator:managed"] == "true"
    create = grants["secretsmanager:CreateSecret"]
    assert all(s["Condition"]["StringEquals"]["aws:RequestTag/rotator:managed"] == "true" for s in create)
    assert not [s for s in statements("aws-iam-policy.json") if s["Effect"] == "Allow" and "*" in s["Action"]]


def test_readonly_policy_cannot_write() -> None:
    """Consumers may read managed secrets but never write, tag, or read retired values."""
    grants = allowed("aws-readonly-policy.json")
    assert set(grants) == {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "kms:Decrypt"}
    denies = [s for s in statements("aws-readonly-policy.json") if s["Effect"] == "Deny"]
    assert "ROTATOR_RETIRED" in json.dumps(denies)
