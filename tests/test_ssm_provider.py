"""SSM specifics beyond the shared contract, on the moto server: what consumers read (labels, SecureString,
KMS key), a racing writer caught by the returned version, the calls a rotation costs, the 100-version limit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from rotator_aws.ssm import SsmConfig, SsmProvider

from rotator.app import build_runtime
from rotator.errors import BackendUnavailable, ConflictError
from rotator.keyset import State
from rotator.provider import SecretRef
from rotator.testing.contract import GRACE, NOW, make_version
from tests.moto_server import GatedMotoServer, aws_env, moto

__all__ = ["aws_env", "moto"]


@pytest.fixture
def provider(moto: GatedMotoServer) -> Iterator[SsmProvider]:
    """An SSM provider with a KMS key id, on the moto server."""
    config = SsmConfig(endpoint_url=moto.endpoint, region="us-east-1", max_attempts=1, kms_key_id="alias/rotator")
    backend = SsmProvider(config=config)
    yield backend
    backend.close()


@pytest.fixture
def ssm(moto: GatedMotoServer) -> Any:
    """A plain boto3 SSM client, as a consumer (or a racing writer) would use."""
    return boto3.client("ssm", endpoint_url=moto.endpoint, region_name="us-east-1")


def _ref() -> SecretRef:
    return SecretRef(name="app-hmac", path=f"apps/{uuid.uuid4().hex}/hmac")


def _rotated(provider: SsmProvider, ref: SecretRef) -> tuple[str, str]:
    first = make_version(State.CURRENT, when=NOW - timedelta(days=30))
    created = provider.create(ref, first, {})
    second = make_version()
    staged = provider.stage(ref, created, second)
    provider.promote(ref, staged, second.id, NOW, GRACE)
    assert first.value is not None
    assert second.value is not None
    return first.value.reveal(), second.value.reveal()


def test_consumers_read_plain_values_by_label(provider: SsmProvider, ssm: Any) -> None:
    """name:current and name:previous are the plain SecureString values; no pending label is left."""
    ref = _ref()
    old, new = _rotated(provider, ref)
    name = "/" + ref.path

    def get(selector: str) -> dict[str, Any]:
        return ssm.get_parameter(Name=f"{name}:{selector}", WithDecryption=True)["Parameter"]  # type: ignore[no-any-return]

    assert get("current")["Value"] == new
    assert get("previous")["Value"] == old
    assert get("current")["Type"] == "SecureString"
    with pytest.raises(ssm.exceptions.ClientError):
        get("pending")
    (described,) = ssm.describe_parameters(
        ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
    assert described["KeyId"] == "alias/rotator"
    document = ssm.get_parameter(Name=name + ".rotator")["Parameter"]
    assert document["Type"] == "String"
    assert new not in document["Value"]
    assert old not in document["Value"]


def test_racing_writer_is_detected_and_the_winner_restored(provider: SsmProvider, moto: GatedMotoServer,
                                                           ssm: Any) -> None:
    """Another process puts the document between our read and our put: our put returns expected+2, so we
    restore the racer's document (version expected+1) and raise ConflictError."""
    ref = _ref()
    created = provider.create(ref, make_version(State.CURRENT), {"n": 0})
    doc_name = "/" + ref.path + ".rotator"
    racer_doc = ssm.get_parameter(Name=doc_name)["Parameter"]["Value"].replace('"n":0', '"n":99')
    raced: list[int] = []

    def race(action: str, request: dict[str, Any]) -> bool:  # runs inside the server, before our put
        if action == "PutParameter" and request.get("Name") == doc_name and not raced:
            from moto.core import DEFAULT_ACCOUNT_ID
            from moto.ssm.models import ssm_backends

            put = ssm_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].put_parameter(
                name=doc_name, description="", value=racer_doc, parameter_type="String", allowed_pattern="",
                keyid="", overwrite=True, tags=[], data_type="text", tier=None, policies=None)
            raced.append(int(put.version))
        return False

    moto.fail = race
    with pytest.raises(ConflictError, match="another writer saved version 2 first"):
        provider.update_meta(ref, created, {"n": 1})
    moto.fail = None
    assert raced == [2]
    stored = provider.read(ref)
    assert stored is not None
    assert stored.meta["n"] == 99
    assert stored.revision == "4"  # 2 racer, 3 ours (lost), 4 the racer's document restored


def test_calls_per_rotation(moto: GatedMotoServer, tmp_path: Path) -> None:
    """A forced rotation through the engine in a fresh process costs the documented SSM calls."""
    manifest = tmp_path / "rotation.yaml"
    manifest.write_text(f"""\
version: 1
providers: {{params: {{type: ssm, endpoint_url: "{moto.endpoint}", region: us-east-1}}}}
audit: {{path: audit.jsonl}}
secrets:
  - {{name: app-hmac, kind: hmac, provider: params, path: apps/{uuid.uuid4().hex}/hmac}}
""")
    rt = build_runtime(manifest, actor="test", notify=False)
    try:
        policy = rt.manifest.secret("app-hmac")
        assert rt.engine.reconcile_one(policy).action == "created"
        rt.close()
        rt = build_runtime(manifest, actor="test", notify=False)  # a fresh process: nothing cached
        moto.reset_counts()
        outcome = rt.engine.reconcile_one(rt.manifest.secret("app-hmac"), force=True)
        assert outcome.action == "rotated", outcome
        calls = dict(moto.calls)
    finally:
        rt.close()
    # the rotation: 4 GetParameter, 1 GetParameters, 3 puts, 3 labels, 1 unlabel; plus one read of the audit
    # HMAC keys, which live in the manifest's only store (once per process: GetParameter + GetParameters)
    assert calls == {"GetParameter": 5, "GetParameters": 2, "PutParameter": 3, "LabelParameterVersion": 3,
                     "UnlabelParameterVersion": 1}


def test_labelled_oldest_of_100_versions_blocks_puts_with_a_clear_error(provider: SsmProvider, ssm: Any) -> None:
    """SSM refuses the 101st put while version 1 is labelled; rotator names the limit and the fix."""
    ref = _ref()
    created = provider.create(ref, make_version(State.CURRENT), {})  # version 1 carries `current`
    name = "/" + ref.path
    for i in range(99):
        ssm.put_parameter(Name=name, Value=f"filler-{i}", Type="SecureString", Overwrite=True)
    with pytest.raises(BackendUnavailable, match="keeps 100 versions") as caught:
        provider.stage(ref, created, make_version())
    assert not caught.value.transient
    assert caught.value.hint is not None


def test_cli_rotation_on_ssm_delivers_what_consumers_read(moto: GatedMotoServer, workspace: Any, ssm: Any) -> None:
    """`rotator run` + `rotate --now` on SSM through the CLI: the delivered env file holds exactly the values
    of the `current` and `previous` labels; a second run changes nothing."""
    from tests.moto_server import DUMMY_ENV

    path = f"apps/{uuid.uuid4().hex}/hmac"
    workspace.write_manifest(f"""\
        version: 1
        providers: {{params: {{type: ssm, endpoint_url: "{moto.endpoint}", region: us-east-1, max_attempts: 2}}}}
        secrets:
          - name: app-hmac
            kind: hmac
            provider: params
            path: {path}
            sinks:
              - {{type: file, path: app.env, format: env, key: HMAC_KEY}}
        """)
    assert workspace.cli("run", env=DUMMY_ENV).code == 0
    rotated = workspace.cli("rotate", "app-hmac", "--now", env=DUMMY_ENV)
    assert rotated.code == 0, rotated.err
    labels = {label: ssm.get_parameter(Name=f"/{path}:{label}", WithDecryption=True)["Parameter"]["Value"]
              for label in ("current", "previous")}
    workspace.extra_values += list(labels.values())
    held = dict(line.split("=", 1) for line in (workspace.root / "app.env").read_text().splitlines())
    assert held == {"HMAC_KEY": labels["current"], "HMAC_KEY_PREVIOUS": labels["previous"]}
    again = workspace.cli("run", env=DUMMY_ENV)
    assert again.code == 0
    assert "delivered" not in again.out


def test_a_foreign_parameter_is_unmanaged_until_adopted(provider: SsmProvider, ssm: Any) -> None:
    """A parameter rotator did not write reads as unmanaged, create refuses to clobber it, and adopt takes
    its value over as current (labelled) without writing a new value version."""
    ref = _ref()
    name = "/" + ref.path
    ssm.put_parameter(Name=name, Value="foreign-value-123456789", Type="SecureString")
    foreign = provider.read(ref)
    assert foreign is not None
    assert not foreign.managed
    with pytest.raises(ConflictError):
        provider.create(ref, make_version(State.CURRENT), {})
    adopted = provider.adopt(ref, foreign)
    assert adopted.managed
    current = provider.read(ref)
    assert current is not None
    assert current.current is not None
    assert current.current.value is not None
    assert current.current.value.reveal() == "foreign-value-123456789"
    labelled = ssm.get_parameter(Name=f"{name}:current", WithDecryption=True)["Parameter"]
    assert (labelled["Value"], labelled["Version"]) == ("foreign-value-123456789", 1)


def test_previous_label_is_on_the_newest_previous(provider: SsmProvider, ssm: Any) -> None:
    """With two values in grace (keep_previous), `previous` labels the newer one."""
    ref = _ref()
    _, second = _rotated(provider, ref)
    stored = provider.read(ref)
    assert stored is not None
    third = make_version()
    staged = provider.stage(ref, stored, third)
    provider.promote(ref, staged, third.id, NOW + timedelta(hours=1), GRACE, keep_previous=2)
    after = provider.read(ref)
    assert after is not None
    assert len(after.previous_versions) == 2
    label = ssm.get_parameter(Name=f"/{ref.path}:previous", WithDecryption=True)["Parameter"]["Value"]
    assert label == second
