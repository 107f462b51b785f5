"""AWS provider behaviour beyond the shared contract: labels as AWS sees them, races, failures, secrecy."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from rotator_aws.config import AwsConfig
from rotator_aws.provider import AwsProvider

from rotator.errors import AccessDenied, BackendUnavailable, ConflictError, ExitCode, RotatorError
from rotator.keyset import Keyset, State
from rotator.provider import SecretRef
from rotator.testing.contract import GRACE, NOW, WINDOW, make_version
from tests.moto_server import DUMMY_ENV, GatedMotoServer, aws_env, moto

__all__ = ["aws_env", "moto"]


def provider(server: GatedMotoServer, **options: Any) -> AwsProvider:
    """A provider on the moto server; one attempt and short timeouts unless told otherwise."""
    settings: dict[str, Any] = {"endpoint_url": server.endpoint, "region": "us-east-1", "max_attempts": 1,
                                "connect_timeout": 1, "read_timeout": 5, **options}
    return AwsProvider(name="aws", config=AwsConfig(**settings))


def new_ref(**extra: Any) -> SecretRef:
    return SecretRef(name="svc/key", path=f"provider/{uuid.uuid4().hex}", **extra)


def one_current(backend: AwsProvider, ref: SecretRef, keyset: Keyset | None = None) -> str:
    """Exactly one version holds AWSCURRENT, and reading with that explicit stage returns it."""
    client, name = backend.client, ref.path
    stages = client.describe_secret(SecretId=name)["VersionIdsToStages"]
    holders = [vid for vid, labels in stages.items() if "AWSCURRENT" in labels]
    assert len(holders) == 1, stages
    served = client.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
    assert served["VersionId"] == holders[0]
    if keyset is not None:
        current = keyset.current
        assert current is not None
        assert current.id == holders[0]
        assert current.value is not None
        assert current.value.reveal() == served["SecretString"]
    return str(holders[0])


def test_every_step_leaves_exactly_one_current(moto: GatedMotoServer) -> None:
    """Through a whole lifecycle, AWSCURRENT sits on one version and matches the keyset's current."""
    backend, ref = provider(moto), new_ref()
    steps: list[Callable[[Keyset], Keyset]] = [
        lambda k: backend.stage(ref, k, make_version()),
        lambda k: backend.promote(ref, k, _pending(k), NOW, GRACE),
        lambda k: backend.stage(ref, k, make_version()),
        lambda k: backend.promote(ref, k, _pending(k), NOW + timedelta(days=1), GRACE),
        lambda k: backend.retire(ref, k, _previous(k), NOW + timedelta(days=8), "grace ended"),
        lambda k: backend.rollback(ref, k, NOW + timedelta(days=8, hours=1), "bad key", WINDOW),
        lambda k: backend.stage(ref, k, make_version()),
        lambda k: backend.discard(ref, k, _pending(k)),
        lambda k: backend.purge(ref, k, NOW + timedelta(days=60), WINDOW),
        lambda k: backend.stage(ref, k, make_version()),
        lambda k: backend.promote(ref, k, _pending(k), NOW + timedelta(days=61), timedelta(0), "incident"),
        lambda k: backend.update_meta(ref, k, {"notices": {"sent": ["14d"]}}),
    ]
    keyset = backend.create(ref, make_version(State.CURRENT), {})
    one_current(backend, ref, keyset)
    for step in steps:
        keyset = step(keyset)
        one_current(backend, ref, keyset)
        assert backend.read(ref) == keyset
        assert as_aws_stamps(provider(moto).read(ref), keyset) == keyset  # a cold instance sees the same


def as_aws_stamps(cold: Keyset | None, known: Keyset) -> Keyset:
    """``cold`` with its pending version's creation time taken from ``known``.

    The instance that staged a version knows the time it staged it; a cold instance sees AWS's CreatedDate
    of the version (a pending version has no record of its own). Both are the staging time, by two clocks.
    """
    assert cold is not None
    if cold.pending is None or known.pending is None:
        return cold
    fixed = [v.replace(created_at=known.pending.created_at) if v.state is State.PENDING else v
             for v in cold.versions]
    return cold.replace(versions=tuple(sorted(fixed, key=lambda v: (v.created_at, v.id))))


def _pending(keyset: Keyset) -> str:
    assert keyset.pending is not None
    return keyset.pending.id


def _previous(keyset: Keyset) -> str:
    assert keyset.previous is not None
    return keyset.previous.id


def test_reads_ignore_motos_stale_default_version(moto: GatedMotoServer) -> None:
    """After a promotion moto's unstaged GetSecretValue serves the old value; reads name the stage."""
    backend, ref = provider(moto), new_ref()
    done = backend.promote(ref, staged := backend.stage(ref, backend.create(ref, make_version(State.CURRENT), {}),
                                                        make_version()), _pending(staged), NOW, GRACE)
    fresh = provider(moto).read(ref)
    assert fresh is not None
    assert fresh.current is not None
    assert fresh.current.value is not None
    assert fresh.current.id == _pending(staged) == one_current(backend, ref, done)
    unstaged = backend.client.get_secret_value(SecretId=ref.path)
    assert unstaged["VersionId"] != fresh.current.id  # moto deviation 1, kept visible here on purpose


def test_racing_instances_exactly_one_rotates(moto: GatedMotoServer) -> None:
    """Separate provider instances (like separate hosts) racing read-stage-promote: one wins, others conflict."""
    ref = new_ref()
    provider(moto).create(ref, make_version(State.CURRENT), {})
    gate = threading.Barrier(6)

    def actor(_: int) -> str:
        mine = provider(moto, max_attempts=3)
        seen = mine.read(ref)
        assert seen is not None
        gate.wait()
        try:
            staged = mine.stage(ref, seen, make_version())
            mine.promote(ref, staged, _pending(staged), NOW, GRACE)
        except ConflictError:
            return "lost"
        return "won"

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(actor, range(6)))
    assert results.count("won") == 1
    final = provider(moto).read(ref)
    assert final is not None
    assert final.pending is None
    assert final.previous is not None
    one_current(provider(moto), ref, final)


_ACTOR = """
import sys
from datetime import datetime, timedelta, UTC
from rotator.errors import ConflictError
from rotator.provider import SecretRef
from rotator.testing.contract import make_version
from rotator_aws.config import AwsConfig
from rotator_aws.provider import AwsProvider
endpoint, path = sys.argv[1], sys.argv[2]
p = AwsProvider(config=AwsConfig(endpoint_url=endpoint, region="us-east-1"))
ref = SecretRef(name="race", path=path)
seen = p.read(ref)
print("ready", flush=True)
sys.stdin.readline()  # both have read the same keyset: go
try:
    staged = p.stage(ref, seen, make_version())
    p.promote(ref, staged, staged.pending.id, datetime.now(UTC), timedelta(days=1))
except ConflictError:
    print("lost")
else:
    print("won")
"""


def test_two_processes_exactly_one_rotates(moto: GatedMotoServer) -> None:
    """Two processes rotating the same secret at the same instant: AWS's label checks pick one winner."""
    ref = new_ref()
    provider(moto).create(ref, make_version(State.CURRENT), {})
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", _ACTOR, moto.endpoint, ref.path], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=DUMMY_ENV | _path_env(),
                                  text=True) for _ in range(2)]
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        outs = [proc.communicate("go\n", timeout=60) for proc in procs]
        assert sorted(out.strip() for out, _ in outs) == ["lost", "won"], outs
        final = provider(moto).read(ref)
        assert final is not None
        assert final.pending is None
        one_current(provider(moto), ref, final)


def _path_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def test_access_denied_names_action_secret_and_policy(moto: GatedMotoServer) -> None:
    """A denied PutSecretValue surfaces as AccessDenied (exit 4) naming the action, the secret and the policy."""
    backend, ref = provider(moto), new_ref()
    created = backend.create(ref, make_version(State.CURRENT), {})
    moto.deny = lambda action, request: action == "PutSecretValue"
    with pytest.raises(AccessDenied) as caught:
        backend.stage(ref, created, make_version())
    error = caught.value
    assert error.exit_code is ExitCode.BACKEND
    assert "secretsmanager:PutSecretValue" in str(error)
    assert ref.path in str(error)
    assert "deploy/policies/aws-iam-policy.json" in str(error.hint)
    moto.relax()
    after = provider(moto).read(ref)
    assert after is not None
    assert after.pending is None
    assert after.current == created.current


def test_deny_all_endpoint_refuses_reads(moto: GatedMotoServer) -> None:
    """With every call denied, even a read is AccessDenied naming DescribeSecret."""
    moto.deny = lambda action, request: True
    ref = new_ref()
    with pytest.raises(AccessDenied, match="secretsmanager:DescribeSecret"):
        provider(moto).read(ref)
    with pytest.raises(AccessDenied, match="secretsmanager:ListSecrets"):
        provider(moto).check()


def test_server_stopped_mid_rotation_then_resumed(moto: GatedMotoServer) -> None:
    """The endpoint vanishing after stage gives BackendUnavailable; after restart the pending is resumable."""
    backend, ref = provider(moto), new_ref()
    staged = backend.stage(ref, backend.create(ref, make_version(State.CURRENT), {}), make_version())
    moto.stop()
    try:
        with pytest.raises(BackendUnavailable, match=r"127\.0\.0\.1") as caught:
            backend.promote(ref, staged, _pending(staged), NOW, GRACE)
        assert caught.value.exit_code is ExitCode.BACKEND
    finally:
        moto.start()
    found = provider(moto).read(ref)
    assert found is not None
    assert found.pending is not None
    assert found.pending.id == _pending(staged)
    one_current(backend, ref, found)
    done = backend.promote(ref, found, found.pending.id, NOW, GRACE)
    assert one_current(backend, ref, done) == found.pending.id


@pytest.mark.parametrize(("step", "write"), [("stage", "PutSecretValue"), ("promote", "UpdateSecretVersionStage")])
def test_failed_write_leaves_a_consistent_keyset(moto: GatedMotoServer, step: str, write: str) -> None:
    """A 500 on the conditional write of a step leaves the step undone, and repeating it then succeeds."""
    backend, ref = provider(moto), new_ref()
    base = backend.create(ref, make_version(State.CURRENT), {})
    version = make_version()
    if step == "promote":
        base = backend.stage(ref, base, version)
    moto.fail = lambda action, request: action == write

    def run(keyset: Keyset) -> Keyset:
        if step == "stage":
            return backend.stage(ref, keyset, version)
        return backend.promote(ref, keyset, _pending(keyset), NOW, GRACE)

    with pytest.raises(BackendUnavailable):
        run(base)
    moto.relax()
    seen = provider(moto).read(ref)
    assert seen is not None
    assert [(v.id, v.state) for v in seen.versions] == [(v.id, v.state) for v in base.versions]
    one_current(backend, ref, seen)
    done = run(seen)
    assert as_aws_stamps(provider(moto).read(ref), done) == done
    changed = done.pending if step == "stage" else done.current
    assert changed is not None
    assert changed.value is not None
    assert changed.value.reveal() == version.value.reveal()  # type: ignore[union-attr]


def test_pending_left_by_a_crashed_run_can_be_discarded_and_replaced(moto: GatedMotoServer) -> None:
    """A pending version from a dead process (or a stuck AWS rotation) never blocks the next rotation."""
    ref = new_ref()
    provider(moto).stage(ref, provider(moto).create(ref, make_version(State.CURRENT), {}), make_version())
    later = provider(moto)
    found = later.read(ref)
    assert found is not None
    assert found.pending is not None
    cleared = later.discard(ref, found, found.pending.id)
    staged = later.stage(ref, cleared, make_version())
    done = later.promote(ref, staged, _pending(staged), NOW, GRACE)
    assert one_current(later, ref, done) == _pending(staged)
    # a value staged by something else entirely, AWS-style, is a pending version too
    later.client.put_secret_value(SecretId=ref.path, SecretString="x" * 40, VersionStages=["AWSPENDING"],
                                  ClientRequestToken=uuid.uuid4().hex)
    foreign = later.read(ref)
    assert foreign is not None
    assert foreign.pending is not None
    assert foreign.pending.attempt is None
    assert later.discard(ref, foreign, foreign.pending.id).pending is None


def test_unmanaged_secret_is_read_as_foreign_and_adopted(moto: GatedMotoServer) -> None:
    """A secret rotator did not create reads managed=False; adopt marks it and rotation then works."""
    backend, ref = provider(moto), new_ref()
    backend.client.create_secret(Name=ref.path, SecretString="legacy-value-0123456789")
    foreign = backend.read(ref)
    assert foreign is not None
    assert not foreign.managed
    assert foreign.current is not None
    adopted = backend.adopt(ref, foreign)
    assert adopted.managed
    assert adopted.current == foreign.current
    staged = backend.stage(ref, adopted, make_version())
    done = backend.promote(ref, staged, _pending(staged), NOW, GRACE)
    assert done.previous is not None
    assert done.previous.value is not None
    assert done.previous.value.reveal() == "legacy-value-0123456789"
    assert provider(moto).read(ref) == done


def test_foreign_secret_is_readable_without_value_permission(moto: GatedMotoServer) -> None:
    """The shipped policy denies GetSecretValue on unmanaged secrets; they still read (no value) and adopt."""
    backend, ref = provider(moto), new_ref()
    backend.client.create_secret(Name=ref.path, SecretString="legacy-value-0123456789")
    moto.deny = lambda action, request: action == "GetSecretValue"
    foreign = backend.read(ref)
    assert foreign is not None
    assert foreign.current is not None
    assert foreign.current.value is None
    moto.relax()  # once tagged rotator:managed=true the policy grants value access
    adopted = backend.adopt(ref, foreign)
    assert adopted.current is not None
    assert adopted.current.value is not None


def test_create_applies_kms_key_description_and_labels(moto: GatedMotoServer) -> None:
    """The first run creates the secret with the configured KMS key, description and labels as tags."""
    backend = provider(moto, kms_key_id="alias/rotator")
    ref = new_ref(labels={"team": "payments"}, description="webhook signing key")
    backend.create(ref, make_version(State.CURRENT), {})
    desc = backend.client.describe_secret(SecretId=ref.path)
    tags = {t["Key"]: t["Value"] for t in desc["Tags"]}
    assert (desc["KmsKeyId"], desc["Description"]) == ("alias/rotator", "webhook signing key")
    assert tags["team"] == "payments"
    assert tags["rotator:managed"] == "true"


def test_list_names_managed_secrets_under_the_prefix(moto: GatedMotoServer) -> None:
    """list() returns paths (prefix stripped) of managed secrets only."""
    prefix = f"team-{uuid.uuid4().hex[:6]}/"
    backend = provider(moto, name_prefix=prefix)
    ref = new_ref()
    backend.create(ref, make_version(State.CURRENT), {})
    backend.client.create_secret(Name=prefix + "not-ours", SecretString="value-not-managed-here")
    assert backend.list() == [ref.path]


def test_throttling_is_retried_with_backoff(moto: GatedMotoServer) -> None:
    """ThrottlingException is retried by botocore's adaptive mode and the read succeeds: the two throttled
    requests were sent again (the gate counts every request it answered)."""
    backend, ref = provider(moto, max_attempts=4), new_ref()
    backend.create(ref, make_version(State.CURRENT), {})
    moto.reset_counts()
    moto.throttle = 2
    assert backend.read(ref) is not None
    assert moto.throttle == 0  # both throttled answers were given out ...
    assert moto.calls["DescribeSecret"] == 3  # ... and the describe was retried until it was answered


def test_assume_role_signs_with_temporary_credentials(moto: GatedMotoServer) -> None:
    """With assume_role_arn, Secrets Manager calls are signed with STS credentials, not the base ones."""
    backend = provider(moto, assume_role_arn="arn:aws:iam::123456789012:role/rotator", external_id="ext-42")
    ref = new_ref()
    backend.create(ref, make_version(State.CURRENT), {})
    assert moto.calls["AssumeRole"] == 1
    used = {key for key, n in moto.access_keys.items() if n and key}
    assert used
    assert DUMMY_ENV["AWS_ACCESS_KEY_ID"] in used
    assert len(used) == 2


def test_no_value_in_logs_or_errors(moto: GatedMotoServer, caplog: pytest.LogCaptureFixture) -> None:
    """Even with DEBUG logging everywhere, no value reaches a log record or an error message."""
    for name in (None, "botocore", "rotator", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=name)
    backend, ref = provider(moto), new_ref()
    first, second = make_version(State.CURRENT), make_version()
    staged = backend.stage(ref, backend.create(ref, first, {}), second)
    texts: list[str] = []
    moto.fail = lambda action, request: action == "UpdateSecretVersionStage"
    attempts: list[Callable[[], Keyset]] = [lambda: backend.promote(ref, staged, _pending(staged), NOW, GRACE),
                                            lambda: backend.stage(ref, staged, make_version())]
    for attempt in attempts:
        with pytest.raises(RotatorError) as caught:
            attempt()
        texts += [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
    moto.relax()
    backend.promote(ref, backend.read(ref), _pending(staged), NOW, GRACE)  # type: ignore[arg-type]
    secrets = [v.value.reveal() for v in (first, second) if v.value is not None]
    assert caplog.records
    for value in secrets:
        assert value not in caplog.text
        assert not [t for t in texts if value in t]


def test_repr_names_where_not_what(moto: GatedMotoServer) -> None:
    """The provider's repr shows its endpoint and prefix and nothing else."""
    text = repr(provider(moto, name_prefix="p/"))
    assert moto.endpoint in text
    assert "p/" in text



def test_a_rotation_in_a_fresh_process_is_five_calls(moto: GatedMotoServer) -> None:
    """Describe, put (the compare-and-set), read-back, tag, label move: nothing else, no current value read."""
    ref = new_ref()
    provider(moto).create(ref, make_version(State.CURRENT), {})
    fresh = provider(moto)
    moto.reset_counts()
    seen = fresh.read_state(ref)
    assert seen is not None
    assert seen.current is not None
    assert seen.current.value is None  # not needed to decide or to step
    staged = fresh.stage(ref, seen, make_version())
    assert fresh.read_value(ref, _pending(staged)) is not None
    done = fresh.promote(ref, staged, _pending(staged), NOW, GRACE)
    assert dict(moto.calls) == {"DescribeSecret": 1, "PutSecretValue": 1, "GetSecretValue": 1, "TagResource": 1,
                                "UpdateSecretVersionStage": 1}
    assert done.current is not None
    one_current(fresh, ref)
    stored = provider(moto).read(ref)
    assert stored is not None
    assert [(v.id, v.state) for v in stored.versions] == [(v.id, v.state) for v in done.versions]


def test_racing_puts_of_one_token_fail_like_aws(moto: GatedMotoServer) -> None:
    """Two instances that read the same state derive the same stage token; the second put is refused."""
    ref = new_ref()
    provider(moto).create(ref, make_version(State.CURRENT), {})
    first, second = provider(moto), provider(moto)
    seen_first, seen_second = first.read(ref), second.read(ref)
    assert seen_first is not None
    assert seen_second is not None
    winner = make_version()
    staged = first.stage(ref, seen_first, winner)
    with pytest.raises(ConflictError):
        second.stage(ref, seen_second, make_version())
    stored = provider(moto).read(ref)
    assert stored is not None
    assert stored.pending is not None
    assert stored.pending.id == _pending(staged)
    assert stored.pending.value == winner.value  # the loser's put changed nothing


def test_a_token_used_up_outside_rotator_moves_to_the_next_sequence(moto: GatedMotoServer) -> None:
    """AWSPENDING taken off by hand (no sequence bump): the next stage finds its token taken and goes on."""
    backend, ref = provider(moto), new_ref()
    staged = backend.stage(ref, backend.create(ref, make_version(State.CURRENT), {}), make_version())
    backend.client.update_secret_version_stage(SecretId=ref.path, VersionStage="AWSPENDING",
                                               RemoveFromVersionId=_pending(staged))
    cold = provider(moto)
    seen = cold.read(ref)
    assert seen is not None
    assert seen.pending is None
    again = cold.stage(ref, seen, version := make_version())
    assert _pending(again) != _pending(staged)
    assert cold.read_value(ref, _pending(again)) == version.value
    done = cold.promote(ref, again, _pending(again), NOW, GRACE)
    assert done.current is not None
    assert one_current(cold, ref) == _pending(again) == done.current.id


def test_keyring_policy_without_retired_values_still_reads(moto: GatedMotoServer) -> None:
    """aws-readonly-policy.json denies GetSecretValue on ROTATOR_RETIRED; a read then has no retired value."""
    backend, ref = provider(moto), new_ref()
    staged = backend.stage(ref, backend.create(ref, make_version(State.CURRENT), {}), make_version())
    done = backend.promote(ref, staged, _pending(staged), NOW, timedelta(0), "revoked")
    assert done.retired
    moto.deny = lambda action, request: (action == "GetSecretValue"
                                         and request.get("VersionStage") == "ROTATOR_RETIRED")
    consumer = provider(moto).read(ref)
    assert consumer is not None
    assert consumer.current is not None
    assert consumer.current.value is not None
    assert [v.value for v in consumer.retired] == [None]
