"""The rotation Lambda driven step by step with AWS-shaped events (each step also retried) on moto."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rotator_aws.config import AwsConfig
from rotator_aws.lambda_handler import STEPS, handler
from rotator_aws.provider import AwsProvider

from rotator.errors import IllegalTransition, ManifestError, RotatorError, VerifyFailed
from rotator.generators import matches_kind
from rotator.keyset import State
from rotator.provider import SecretRef
from rotator.testing.contract import make_version
from tests.moto_server import GatedMotoServer, aws_env, moto

__all__ = ["aws_env", "moto"]

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def lam(moto: GatedMotoServer, monkeypatch: pytest.MonkeyPatch) -> GatedMotoServer:
    """The Lambda's environment: botocore finds moto through AWS_ENDPOINT_URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.delenv("ROTATOR_MANIFEST", raising=False)
    monkeypatch.delenv("ROTATOR_SECRET", raising=False)
    return moto


def provider(server: GatedMotoServer) -> AwsProvider:
    return AwsProvider(config=AwsConfig(endpoint_url=server.endpoint, region=REGION))


def managed_secret(server: GatedMotoServer, **labels: str) -> tuple[SecretRef, AwsProvider]:
    """A secret rotator created, configured for the Lambda by ``rotator:*`` tags."""
    ref = SecretRef(name="lambda", path=f"lambda/{uuid.uuid4().hex}", labels=labels)
    backend = provider(server)
    backend.create(ref, make_version(State.CURRENT), {})
    return ref, backend


def begin_rotation(name: str, token: str, *, enabled: bool = True) -> None:
    """What Secrets Manager's RotateSecret does before invoking the Lambda: a value-less AWSPENDING version.

    moto's own rotate_secret cannot do this here: it refuses when AWSPENDING sits on the current version
    (the opposite of AWS's documented rule) and needs Docker to run a Lambda.
    """
    from moto.secretsmanager.models import FakeSecret, secretsmanager_backends

    secret = secretsmanager_backends[ACCOUNT][REGION].secrets[name]
    assert isinstance(secret, FakeSecret)
    secret.rotation_requested, secret.rotation_enabled = True, enabled
    secret.rotation_lambda_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:rotator"
    secret.remove_version_stages_from_old_versions(["AWSPENDING"])
    secret.versions[token] = {"createdate": int(time.time()), "version_id": token, "version_stages": ["AWSPENDING"]}


def event(step: str, name: str, token: str) -> dict[str, Any]:
    return {"Step": step, "SecretId": name, "ClientRequestToken": token}


def stages(backend: AwsProvider, name: str) -> dict[str, list[str]]:
    return dict(backend.client.describe_secret(SecretId=name)["VersionIdsToStages"])


def current_of(backend: AwsProvider, name: str) -> str:
    holders = [vid for vid, labels in stages(backend, name).items() if "AWSCURRENT" in labels]
    assert len(holders) == 1
    return holders[0]


def test_four_steps_with_retries_rotate_once(lam: GatedMotoServer) -> None:
    """Each step run twice (AWS retries) still yields one new AWSCURRENT holding a valid generated value."""
    ref, backend = managed_secret(lam, **{"rotator:kind": "hmac", "rotator:bytes": "48"})
    old, token = current_of(backend, ref.path), uuid.uuid4().hex
    begin_rotation(ref.path, token)
    values = []
    for step in STEPS:
        for _ in range(2):
            handler(event(step, ref.path, token), None)
            assert len([v for v, labels in stages(backend, ref.path).items() if "AWSCURRENT" in labels]) == 1
        if step == "createSecret":
            values.append(backend.client.get_secret_value(SecretId=ref.path, VersionId=token)["SecretString"])
    assert current_of(backend, ref.path) == token
    served = backend.client.get_secret_value(SecretId=ref.path, VersionStage="AWSCURRENT")["SecretString"]
    assert served == values[0]
    assert matches_kind("hmac", served)
    keyset = provider(lam).read(ref)
    assert keyset is not None
    assert keyset.current is not None
    assert keyset.previous is not None
    assert (keyset.current.id, keyset.previous.id, keyset.current.actor) == (token, old, "aws-lambda")
    assert keyset.current.promoted_at is not None


def test_token_already_current_is_a_no_op(lam: GatedMotoServer) -> None:
    """Replaying any step for a token that is already AWSCURRENT changes nothing."""
    ref, backend = managed_secret(lam, **{"rotator:kind": "api_key", "rotator:prefix": "rtr_"})
    token = uuid.uuid4().hex
    begin_rotation(ref.path, token)
    for step in STEPS:
        handler(event(step, ref.path, token), None)
    before = backend.client.describe_secret(SecretId=ref.path)
    for step in STEPS:
        handler(event(step, ref.path, token), None)
    after = backend.client.describe_secret(SecretId=ref.path)
    assert (after["VersionIdsToStages"], after["Tags"]) == (before["VersionIdsToStages"], before["Tags"])


@pytest.mark.parametrize("which", ["previous", "unknown"])
def test_token_that_is_not_pending_is_an_error(lam: GatedMotoServer, which: str) -> None:
    """A token that is neither AWSPENDING nor AWSCURRENT (or not a version at all) is refused."""
    ref, backend = managed_secret(lam, **{"rotator:kind": "fernet"})
    first = uuid.uuid4().hex
    begin_rotation(ref.path, first)
    for step in STEPS:
        handler(event(step, ref.path, first), None)
    token = next(v for v, labels in stages(backend, ref.path).items() if "AWSPREVIOUS" in labels)
    if which == "unknown":
        token = uuid.uuid4().hex
    with pytest.raises(IllegalTransition):
        handler(event("createSecret", ref.path, token), None)


def test_rotation_not_enabled_is_an_error(lam: GatedMotoServer) -> None:
    """The Lambda refuses to act on a secret whose rotation is not enabled."""
    ref, _ = managed_secret(lam, **{"rotator:kind": "hmac"})
    token = uuid.uuid4().hex
    begin_rotation(ref.path, token, enabled=False)
    with pytest.raises(IllegalTransition, match="not enabled"):
        handler(event("createSecret", ref.path, token), None)


def test_unknown_step_and_missing_kind_are_refused(lam: GatedMotoServer) -> None:
    """An unknown Step is an error, and so is a secret that says nothing about how to generate values."""
    ref, _ = managed_secret(lam)
    token = uuid.uuid4().hex
    begin_rotation(ref.path, token)
    with pytest.raises(IllegalTransition):
        handler(event("dropSecret", ref.path, token), None)
    with pytest.raises(ManifestError, match="rotator:kind"):
        handler(event("createSecret", ref.path, token), None)


def test_test_step_rejects_a_bad_pending_value_without_quoting_it(lam: GatedMotoServer) -> None:
    """testSecret fails on a pending value that is not of the secret's kind; the error names no value."""
    ref, backend = managed_secret(lam, **{"rotator:kind": "hmac", "rotator:bytes": "32"})
    token = uuid.uuid4().hex
    begin_rotation(ref.path, token)
    bad = "definitely-not-base64-hmac!!"
    backend.client.put_secret_value(SecretId=ref.path, ClientRequestToken=token, SecretString=bad,
                                    VersionStages=["AWSPENDING"])
    handler(event("createSecret", ref.path, token), None)  # a value exists: createSecret keeps it
    with pytest.raises(VerifyFailed) as caught:
        handler(event("testSecret", ref.path, token), None)
    assert bad not in str(caught.value)


def test_manifest_entry_drives_generation_verify_and_grace(
    lam: GatedMotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ROTATOR_MANIFEST + ROTATOR_SECRET the manifest's kind, verify hook and grace apply."""
    hook = tmp_path / "check.sh"
    hook.write_text("#!/bin/sh\nread v\n[ -f \"$(dirname \"$0\")/ok\" ]\n")
    hook.chmod(0o755)
    manifest = tmp_path / "rotation.yaml"
    manifest.write_text(
        "version: 1\nproviders:\n  aws: {type: aws, region: us-east-1}\nsecrets:\n"
        "  - name: signing\n    kind: ed25519\n    provider: aws\n    grace: 2d\n"
        f"    verify: {{command: [{str(hook)!r}], timeout: 10s}}\n"
    )
    monkeypatch.setenv("ROTATOR_MANIFEST", str(manifest))
    monkeypatch.setenv("ROTATOR_SECRET", "signing")
    ref, _ = managed_secret(lam)
    token = uuid.uuid4().hex
    begin_rotation(ref.path, token)
    handler(event("createSecret", ref.path, token), None)
    with pytest.raises(VerifyFailed, match="verify hook failed"):
        handler(event("testSecret", ref.path, token), None)
    (tmp_path / "ok").touch()
    for step in ("testSecret", "finishSecret"):
        handler(event(step, ref.path, token), None)
    keyset = provider(lam).read(ref)
    assert keyset is not None
    assert keyset.current is not None
    assert keyset.previous is not None
    assert keyset.current.public is not None
    assert keyset.current.public["kid"] == token
    assert keyset.previous.expires_at is not None
    assert keyset.current.promoted_at is not None
    assert keyset.previous.expires_at - keyset.current.promoted_at == timedelta(days=2)


def test_no_value_in_lambda_logs(lam: GatedMotoServer, caplog: pytest.LogCaptureFixture) -> None:
    """The handler's log lines (and botocore's at DEBUG) never carry the generated value."""
    caplog.set_level(logging.DEBUG)
    ref, backend = managed_secret(lam, **{"rotator:kind": "password"})
    token = uuid.uuid4().hex
    begin_rotation(ref.path, token)
    for step in STEPS:
        handler(event(step, ref.path, token), None)
    value = backend.client.get_secret_value(SecretId=ref.path, VersionStage="AWSCURRENT")["SecretString"]
    assert "rotation.finished" in caplog.text
    assert value not in caplog.text


def test_errors_are_rotator_errors(lam: GatedMotoServer) -> None:
    """A missing secret surfaces as a rotator error, not a botocore exception."""
    with pytest.raises(RotatorError):
        handler(event("createSecret", f"missing-{uuid.uuid4().hex}", uuid.uuid4().hex), None)
