"""deploy/policies/aws-ssm-policy.json: exactly the SSM actions the ssm provider calls, scoped to the prefix."""

from __future__ import annotations

import re

from tests.test_aws_policies import CODE, allowed, statements

POLICY = "aws-ssm-policy.json"


def test_grants_exactly_the_actions_the_provider_calls() -> None:
    """Every ssm action in rotator_aws/ssm*.py is allowed, and no other ssm action is."""
    used = set()
    for source in CODE.glob("ssm*.py"):
        used |= set(re.findall(r'_call\("(\w+)"', source.read_text()))
    granted = {a for a in allowed(POLICY) if a.startswith("ssm:")}
    assert used
    assert granted == {f"ssm:{a}" for a in used}


def test_parameter_access_is_scoped_and_deletes_denied() -> None:
    """Value reads and writes name the parameter prefix; only DescribeParameters (no resource-level
    support) is on *; deleting is denied; KMS use is only through SSM."""
    for action, grants in allowed(POLICY).items():
        for statement in grants:
            if action == "ssm:DescribeParameters":
                assert statement["Resource"] == "*"
            elif action.startswith("ssm:"):
                assert statement["Resource"] == "arn:aws:ssm:*:*:parameter/rotator/*"
            else:
                assert statement["Condition"]["StringLike"]["kms:ViaService"] == "ssm.*.amazonaws.com"
    denies = [s for s in statements(POLICY) if s["Effect"] == "Deny"]
    assert {"ssm:DeleteParameter", "ssm:DeleteParameters"} <= {a for s in denies for a in s["Action"]}
