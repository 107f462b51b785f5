"""Reminder-only secrets (``kind: manual``): never generated or verified; ``mark-rotated`` records; the same
notices, an overdue reminder once per cycle, metrics and report counts; end to end through the CLI."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from rotator.app import Runtime
from rotator.errors import ManifestError, OperationFailed, UsageError
from rotator.events import Event, EventType
from rotator.generators import GeneratorParams, ParamError, check_params, generate, matches_kind
from rotator.keyring import Keyring
from rotator.keyset import Keyset, KeyVersion, SecretValue, State
from rotator.manifest import parse_manifest
from rotator.manual import mark_rotated
from rotator.metrics import METRICS
from rotator.plan import Action, decide
from rotator.testing import FakeClock, MemoryProvider
from tests.conftest import Workspace, memory_runtime
from tests.moto_server import aws_env, moto

__all__ = ["aws_env", "moto"]  # pytest fixtures used below

H, D = timedelta(hours=1), timedelta(days=1)
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


# --- the generator registry and the manifest -------------------------------------------------------------------

def test_the_generator_registry_refuses_manual() -> None:
    """``manual`` passes the parameter check (a manifest may name it) but nothing generates or checks a value."""
    params = GeneratorParams(kind="manual")
    check_params(params)
    with pytest.raises(OperationFailed, match="reminder-only: rotator never generates its value"):
        generate(params)
    with pytest.raises(ValueError, match="reminder-only"):
        matches_kind("manual", "anything")
    with pytest.raises(ParamError, match="bytes only applies to kind hmac, not manual"):
        check_params(GeneratorParams(kind="manual", bytes=32))


@pytest.mark.parametrize("extra", ["verify: {command: [./check.sh]}", "post_check: {command: [./smoke.sh]}",
                                   "adopt: true", "auto_rollback: true"])
def test_value_hooks_are_refused_for_manual_secrets(extra: str) -> None:
    """verify, post_check, adopt and auto_rollback need a value rotator holds: an error naming the field."""
    key = extra.split(":")[0]
    text = f"version: 1\nsecrets:\n  - name: vendor/console\n    kind: manual\n    {extra}\n"
    with pytest.raises(ManifestError, match=rf"rotation.yaml:5:\d+: secrets\[0\]\.{key}: kind manual is reminder"):
        parse_manifest(text, Path("rotation.yaml"), {})


# --- decide ------------------------------------------------------------------------------------------------------

POLICY = parse_manifest("version: 1\ndefaults: {every: 30d, grace: 1d, notice: [7d, 1d]}\n"
                        "secrets:\n  - {name: vendor/console, kind: manual}\n",
                        Path("rotation.yaml"), {}).secrets["vendor/console"]


def record(age: timedelta, sent: list[str] | None = None, pending: bool = False) -> Keyset:
    at = NOW - age
    versions = [KeyVersion("rec00001", State.CURRENT, at, promoted_at=at)]
    if pending:
        versions.append(KeyVersion("rec00002", State.PENDING, NOW - timedelta(seconds=5)))
    meta = {"notices": {"cycle": "rec00001", "sent": sent}} if sent is not None else {}
    return Keyset("vendor/console", "1", tuple(versions), meta)


def test_without_a_record_a_manual_secret_is_a_reminder_never_a_create() -> None:
    """Nothing stored: ``remind`` pointing at mark-rotated; no next time (nothing will change by itself)."""
    decision = decide(POLICY, None, NOW)
    assert decision.action is Action.REMIND
    assert "rotator mark-rotated" in decision.detail
    assert decision.next_at is None


def test_a_manual_secret_gets_the_same_upcoming_notices() -> None:
    """7d and 1d before due: ``notice`` exactly as a generated secret; before that, nothing to do."""
    assert decide(POLICY, record(10 * D), NOW).action is Action.NONE
    assert decide(POLICY, record(23 * D), NOW).action is Action.NOTICE
    assert decide(POLICY, record(29 * D + H, sent=["7d"]), NOW).notice == D


def test_past_due_it_is_overdue_once_per_cycle_then_a_reminder() -> None:
    """Due: ``overdue`` (send rotation.overdue) until that is recorded, then ``remind``; never ``rotate``."""
    overdue = decide(POLICY, record(33 * D, sent=["7d", "1d"]), NOW)
    assert overdue.action is Action.OVERDUE
    assert overdue.detail == "rotation by hand overdue by 3d (due 2026-05-29 12:00Z)"
    reminded = decide(POLICY, record(33 * D, sent=["7d", "1d", "overdue"]), NOW)
    assert reminded.action is Action.REMIND
    assert reminded.detail.endswith("; reminded")


def test_a_keyset_without_a_current_record_is_a_reminder() -> None:
    """Only retired records left (purged by hand, say): remind, never an overdue notice without a cycle."""
    gone = Keyset("vendor/console", "1", (KeyVersion("rec00001", State.RETIRED, NOW - 40 * D,
                                                    retired_at=NOW - H),))
    assert decide(POLICY, gone, NOW).action is Action.REMIND


def test_an_interrupted_mark_rotated_is_discarded_not_resumed() -> None:
    """A lone pending record is discarded at once: resuming would mean verifying a value rotator lacks."""
    decision = decide(POLICY, record(10 * D, pending=True), NOW)
    assert decision.action is Action.DISCARD


def test_decide_never_asks_for_a_value() -> None:
    """Over many ages and notice states, no decision for a manual secret would generate or verify."""
    generating = {Action.CREATE, Action.ROTATE, Action.RESUME, Action.BACKOFF, Action.ADOPT}
    for days in range(0, 120, 3):
        for sent in (None, ["7d"], ["7d", "1d"], ["7d", "1d", "overdue"]):
            for pending in (False, True):
                assert decide(POLICY, record(days * D, sent, pending), NOW).action not in generating


# --- the engine --------------------------------------------------------------------------------------------------

MANIFEST = """\
version: 1
defaults: {{provider: {store}, every: 30d, grace: 1d, notice: 7d}}
providers: {{{store}: {{type: memory}}}}
secrets:
  - {{name: vendor/console, kind: manual}}
  - {{name: app/hmac, kind: hmac}}
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Runtime, FakeClock, str, list[Event]]]:
    """A runtime on a memory store (first pass done) and the events it emits from then on."""
    with memory_runtime(tmp_path, MANIFEST) as (rt, clock, store):
        events: list[Event] = []
        rt.bus.subscribe(events.append)
        yield rt, clock, store, events


def test_the_engine_never_creates_rotates_or_verifies_a_manual_secret(
        env: tuple[Runtime, FakeClock, str, list[Event]]) -> None:
    """Passes leave it unrecorded; ``--now`` is refused with the way forward; no rotation event at all."""
    rt, _clock, store, events = env
    policy = rt.manifest.secret("vendor/console")
    assert MemoryProvider(name=store).read(policy.ref) is None
    assert rt.engine.reconcile_one(policy).action == "remind"
    forced = rt.engine.reconcile_one(policy, force=True)
    assert not forced.ok
    assert "reminder-only: rotate it by hand, then `rotator mark-rotated vendor/console" in forced.message
    assert MemoryProvider(name=store).read(policy.ref) is None
    assert events == []


def test_mark_rotated_records_reminds_once_when_overdue_and_exports_the_age(
        env: tuple[Runtime, FakeClock, str, list[Event]]) -> None:
    """A backfilled record 40 days old: one rotation.overdue, then reminders; a new mark retires the old
    record at once, and the age gauge follows the record."""
    rt, clock, store, events = env
    policy = rt.manifest.secret("vendor/console")
    backfill = clock() - 40 * D
    marked = mark_rotated(rt.engine, policy, reason="rotated in the vendor console", fingerprint="AKIA1234",
                          at=backfill)
    assert marked.action == "marked"
    assert "(fingerprint AKIA1234) recorded as rotated by hand at" in marked.message
    keyset = MemoryProvider(name=store).read(policy.ref)
    assert keyset is not None
    assert keyset.current is not None
    assert keyset.current.promoted_at == backfill
    assert keyset.current.value is not None
    assert keyset.current.value.reveal() == f"manual-record:{keyset.current.id}:AKIA1234"
    assert [e.type for e in events] == [EventType.SUCCEEDED]
    assert events[0].details == {"manual": True, "rotated_at": backfill.isoformat(), "fingerprint": "AKIA1234"}
    assert events[0].reason == "rotated in the vendor console"

    first = rt.engine.reconcile_one(policy)
    assert (first.action, first.ok) == ("overdue", True)
    second = rt.engine.reconcile_one(policy)
    assert second.action == "remind"
    assert [e.type for e in events].count(EventType.OVERDUE) == 1
    overdue = next(e for e in events if e.type is EventType.OVERDUE)
    assert overdue.details["manual"] is True
    assert METRICS.age.labels(secret="vendor/console")._value.get() == pytest.approx((40 * D).total_seconds())

    clock.advance(60)
    again = mark_rotated(rt.engine, policy, reason="rotated again")
    assert again.old_version == keyset.current.id
    after = MemoryProvider(name=store).read(policy.ref)
    assert after is not None
    assert sorted(str(v.state) for v in after.versions) == ["current", "retired"]
    assert rt.engine.reconcile_one(policy).action == "none"
    assert METRICS.age.labels(secret="vendor/console")._value.get() == 0


def test_mark_rotated_refuses_what_it_cannot_record(env: tuple[Runtime, FakeClock, str, list[Event]]) -> None:
    """A generated secret, a future time, a fingerprint that could be a value."""
    rt, clock, _, _ = env
    manual = rt.manifest.secret("vendor/console")
    with pytest.raises(UsageError, match="app/hmac is a hmac secret that rotator rotates itself"):
        mark_rotated(rt.engine, rt.manifest.secret("app/hmac"), reason="x")
    with pytest.raises(UsageError, match="is in the future"):
        mark_rotated(rt.engine, manual, reason="x", at=clock() + D)
    with pytest.raises(UsageError, match="--fingerprint wants an identifier"):
        mark_rotated(rt.engine, manual, reason="x", fingerprint="correct horse battery staple")


def test_a_mistaken_record_is_corrected_by_recording_the_right_time_not_by_rollback(
        env: tuple[Runtime, FakeClock, str, list[Event]]) -> None:
    """``--at`` before the last record dates the secret from then; ``rollback`` is refused with that advice."""
    rt, clock, store, _ = env
    manual = rt.manifest.secret("vendor/console")
    real = clock() - 20 * D
    mark_rotated(rt.engine, manual, reason="onboarding", at=real)
    clock.advance(60)
    mark_rotated(rt.engine, manual, reason="clicked the wrong secret")
    with pytest.raises(UsageError, match="correct its record with `rotator mark-rotated vendor/console --at WHEN"):
        rt.engine.rollback(manual, "mistake")
    mark_rotated(rt.engine, manual, reason="correction: the last rotation was the onboarding one", at=real)
    keyset = MemoryProvider(name=store).read(manual.ref)
    assert keyset is not None
    assert keyset.current is not None
    assert keyset.current.promoted_at == real
    assert rt.engine.reconcile_one(manual).ok  # purges the replaced records (retired at the backdated time)
    assert decide(manual, MemoryProvider(name=store).read(manual.ref), clock()).due_at == real + 30 * D


def test_an_interrupted_mark_is_cleaned_up_by_the_next_pass_or_mark(
        env: tuple[Runtime, FakeClock, str, list[Event]]) -> None:
    """A pending record left by a crash is discarded by ``run``, or replaced by the next mark-rotated."""
    rt, clock, store, _ = env
    policy = rt.manifest.secret("vendor/console")
    mark_rotated(rt.engine, policy, reason="first")
    provider = MemoryProvider(name=store)

    def leave_pending() -> None:
        keyset = provider.read(policy.ref)
        assert keyset is not None
        provider.stage(policy.ref, keyset, KeyVersion("crashed0" * 4, State.PENDING, clock(),
                                                      value=SecretValue("manual-record:crashed:-")))

    leave_pending()
    assert "discarded" in rt.engine.reconcile_one(policy).message
    leave_pending()
    clock.advance(60)
    mark_rotated(rt.engine, policy, reason="second")
    keyset = provider.read(policy.ref)
    assert keyset is not None
    assert keyset.pending is None
    assert keyset.current is not None
    assert keyset.current.promoted_at == clock()


def test_a_keyring_refuses_a_manual_secret(tmp_path: Path) -> None:
    """Its records are no key: ``Keyring.from_manifest`` says so instead of serving one."""
    (tmp_path / "rotation.yaml").write_text("version: 1\nsecrets:\n  - {name: vendor/console, kind: manual}\n")
    with pytest.raises(UsageError, match="kind: manual secret: rotator holds no value"):
        Keyring.from_manifest(tmp_path / "rotation.yaml", "vendor/console")


# --- end to end through the CLI ----------------------------------------------------------------------------------

def test_manual_secret_end_to_end_through_the_cli(workspace: Workspace, httpserver: HTTPServer) -> None:
    """run -> remind; mark-rotated (backfilled) -> overdue notice delivered once; report counts it overdue
    (exit 1); mark-rotated now -> compliant (exit 0); history and status show the records; no value leaks."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("", status=204)
    workspace.env.update(HOOK_URL=httpserver.url_for("/hook"), NO_PROXY="127.0.0.1,localhost")
    workspace.write_manifest("""
        version: 1
        defaults: {every: 30d, grace: 1d, notice: 7d, notify: [hook]}
        notifiers:
          hook: {type: webhook, url: "${HOOK_URL}", signing_secret: whsec-manual-e2e-0042}
        secrets:
          - {name: vendor/console, kind: manual, description: "vendor admin console password"}
          - {name: app/hmac, kind: hmac}
    """)
    workspace.extra_values.append("whsec-manual-e2e-0042")
    first = workspace.cli("run")
    assert first.code == 0, first.err
    assert "vendor/console: remind - no rotation on record" in first.out
    report = workspace.cli("report", "--format", "json")
    assert report.json()["summary"]["manual"]["missing"] == 1

    forced = workspace.cli("rotate", "vendor/console", "--now")
    assert forced.code == 1
    assert "reminder-only: rotate it by hand" in forced.out

    backfill = (datetime.now(UTC) - timedelta(days=40)).strftime("%Y-%m-%dT%H:%M:%SZ")
    marked = workspace.cli("mark-rotated", "vendor/console", "--reason", "rotated in the console by alice",
                           "--fingerprint", "key-7f3a", "--at", backfill)
    assert marked.code == 0, marked.err
    assert "marked - " in marked.out
    assert "(fingerprint key-7f3a)" in marked.out

    assert "vendor/console: overdue - rotation by hand overdue by" in workspace.cli("run").out
    assert "vendor/console: remind" in workspace.cli("run").out
    hooks = [json.loads(r.get_data()) for r, _ in httpserver.log]
    assert [(h["secret"], h["event"]) for h in hooks if h["secret"] == "vendor/console"] == [
        ("vendor/console", "rotation.succeeded"), ("vendor/console", "rotation.overdue")]

    overdue = workspace.cli("report", "--format", "json")
    assert overdue.code == 1
    doc = overdue.json()
    assert doc["summary"]["manual"]["overdue"] == 1
    assert doc["summary"]["statuses"]["overdue"] == 1
    entry: dict[str, Any] = next(s for s in doc["secrets"] if s["secret"] == "vendor/console")
    assert entry["manual"] is True
    assert entry["detail"].startswith("rotation by hand overdue by 10d")

    assert workspace.cli("mark-rotated", "vendor/console", "--reason", "rotated again").code == 0
    compliant = workspace.cli("report", "--format", "json")
    assert compliant.code == 0, compliant.out
    assert compliant.json()["summary"]["manual"]["compliant"] == 1

    history = workspace.cli("history", "vendor/console")
    assert history.out.count("rotation.succeeded") == 2
    assert "rotation.overdue" in history.out
    status = workspace.cli("status", "vendor/console", "-o", "json").json()["secrets"][0]
    assert sorted(v["state"] for v in status["versions"]) == ["current", "retired"]
    bad = workspace.cli("mark-rotated", "app/hmac", "--reason", "x")
    assert bad.code == 2
    assert "mark-rotated is for kind: manual" in bad.err
    assert workspace.cli("mark-rotated", "vendor/console").code == 2  # --reason is required


@pytest.mark.xdist_group("processes")
def test_manual_records_on_aws_secrets_manager(workspace: Workspace, moto: Any) -> None:
    """The same records work where every version needs a stored string: moto-served AWS Secrets Manager."""
    from rotator_aws.config import AwsConfig
    from rotator_aws.provider import AwsProvider

    from rotator.provider import SecretRef
    from tests.moto_server import DUMMY_ENV

    prefix = f"manual-{uuid.uuid4().hex[:8]}/"
    workspace.env.update(DUMMY_ENV, MOTO_ENDPOINT=moto.endpoint, PREFIX=prefix)
    workspace.write_manifest("""
        version: 1
        defaults: {provider: aws, every: 30d, grace: 1d, notice: 1d}
        providers:
          aws: {type: aws, region: us-east-1, endpoint_url: "${MOTO_ENDPOINT}", name_prefix: "${PREFIX}"}
        secrets:
          - {name: vendor/console, kind: manual}
    """)
    assert "remind" in workspace.cli("run").out
    for reason in ("first by hand", "second by hand"):
        marked = workspace.cli("mark-rotated", "vendor/console", "--reason", reason, "--fingerprint", "kid-1")
        assert marked.code == 0, marked.err
    assert "vendor/console: none" in workspace.cli("run").out
    provider = AwsProvider(name="check", config=AwsConfig(endpoint_url=moto.endpoint, region="us-east-1",
                                                          name_prefix=prefix))
    try:
        keyset = provider.read(SecretRef("vendor/console", "vendor/console"))
        assert keyset is not None
        assert sorted(str(v.state) for v in keyset.versions) == ["current", "retired"]
        assert keyset.current is not None
        assert keyset.current.value is not None
        assert keyset.current.value.reveal().startswith("manual-record:")
        workspace.extra_values += [v.value.reveal() for v in keyset.versions if v.value is not None]
    finally:
        provider.close()
