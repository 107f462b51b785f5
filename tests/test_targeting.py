"""Targets through the engine, on the in-memory store and target: every strategy keeps its promise (the stored
current logs in; during grace the previous does too where the strategy allows; retire, revoke, rollback and
discard act on the target), crashes resume, and a failing target leaves the store as it was."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.engine import Engine, Outcome
from rotator.errors import CredentialRefused, ExitCode, ManifestError
from rotator.events import Event, EventBus
from rotator.keyset import Keyset, State
from rotator.manifest import parse_manifest
from rotator.target import Binding, Credential
from rotator.targeting import TargetSet, credential_of, render_url
from rotator.testing.clock import FakeClock
from rotator.testing.memory_target import MemoryTarget

MANIFEST = """
version: 1
defaults: {{provider: store, every: 10d, grace: 2d, notice: 1d, stale_pending_after: 1h, rollback_window: 1d}}
providers:
  store: {{type: memory}}
targets:
  db: {{type: memory, host: db.internal, admin: {{username: root, password: "admin-pass-123"}},
        url: "mem://{{username}}:{{password}}@{{host}}/app"}}
secrets:
  - {{name: app, kind: password, length: 24, target: {{name: db, username: app, strategy: {strategy}}}{extra}}}
"""


class World:
    """An engine over a fresh memory store and memory target."""

    def __init__(self, tmp_path: Path, strategy: str, extra: str = "") -> None:
        suffix = uuid.uuid4().hex[:8]
        # the target first: a store name ending in "db" must not be rewritten again
        text = MANIFEST.format(strategy=strategy, extra=extra).replace("  db:", f"  tgt{suffix}:") \
            .replace("name: db,", f"name: tgt{suffix},").replace("store", f"store{suffix}")
        self.target_name = f"tgt{suffix}"
        self.manifest = parse_manifest(text, tmp_path / "rotation.yaml")
        self.policy = self.manifest.secret("app")
        self.clock = FakeClock()
        self.events: list[Event] = []
        self.providers = self.manifest.build_providers()
        self.target = MemoryTarget(name=self.target_name)

    def engine(self) -> Engine:
        bus = EventBus()
        bus.subscribe(self.events.append, critical=True)
        engine = Engine(self.manifest, self.providers, bus, actor="test", clock=self.clock)
        engine.targets = self.manifest.build_targets(lambda _: ())
        return engine

    def run(self, **kwargs: Any) -> Outcome:
        return self.engine().reconcile_one(self.policy, **kwargs)

    def keyset(self) -> Keyset:
        found = self.providers.get(self.policy.provider).read(self.policy.ref)
        assert found is not None
        return found

    @property
    def binding(self) -> Binding:
        assert self.policy.binding is not None
        return self.policy.binding

    def logs_in(self, state: State) -> bool:
        version = next(v for v in self.keyset().versions if v.state is state)
        credential = credential_of(version)
        assert credential is not None
        try:
            self.target.login(self.binding, credential)
        except CredentialRefused:
            return False
        return True


@pytest.fixture(autouse=True)
def _fresh_targets() -> None:
    MemoryTarget.reset()


def test_create_sets_the_value_on_the_target_before_storing_it(tmp_path: Path) -> None:
    """The first value is applied to the target and logs in; the stored document has the target's fields."""
    w = World(tmp_path, "alternating")
    assert w.run().action == "created"
    assert w.logs_in(State.CURRENT)
    doc = credential_of(w.keyset().current)
    assert doc is not None
    assert (doc["username"], doc["host"]) == ("app", "db.internal")
    assert doc["url"].startswith("mem://app:")
    assert MemoryTarget.identities(w.target_name) == {"app": 1, "app_clone": 0}


@pytest.mark.parametrize("strategy", ["alternating", "dual"])
def test_grace_keeps_the_previous_login_then_retire_refuses_it(tmp_path: Path, strategy: str) -> None:
    """dual / alternating: during grace current and previous both log in; after retire only current."""
    w = World(tmp_path, strategy)
    w.run()
    assert w.run(force=True).action == "rotated"
    assert w.logs_in(State.CURRENT)
    assert w.logs_in(State.PREVIOUS)
    if strategy == "alternating":
        users = {credential_of(v).username for v in w.keyset().accepted()}  # type: ignore[union-attr]
        assert users == {"app", "app_clone"}
    w.clock.advance(timedelta(days=2, seconds=1))
    assert w.run().action == "retired"
    assert w.logs_in(State.CURRENT)
    assert not w.logs_in(State.RETIRED)


def test_alternating_flips_identity_each_rotation(tmp_path: Path) -> None:
    """Each rotation changes the identity not in use, and the one before keeps working through grace."""
    w = World(tmp_path, "alternating")
    w.run()
    seen = []
    for _ in range(3):
        w.clock.advance(timedelta(days=10, seconds=1))
        w.run()  # retire the previous (grace ended) ...
        w.run()  # ... and rotate
        current = credential_of(w.keyset().current)
        assert current is not None
        seen.append(current.username)
        assert w.logs_in(State.CURRENT)
    assert seen == ["app_clone", "app", "app_clone"]


def test_rotating_inside_grace_of_a_two_slot_target_is_refused_unless_revoking(tmp_path: Path) -> None:
    """alternating holds one previous: a second forced rotation in grace fails with a clear line; a revoke
    goes ahead and the old logins stop at once."""
    w = World(tmp_path, "alternating")
    w.run()
    w.run(force=True)
    refused = w.run(force=True)
    assert (refused.ok, refused.error.exit_code if refused.error else None) == (False, ExitCode.FAILED)
    assert "would end the grace" in refused.message
    old_current, old_previous = w.keyset().current, w.keyset().previous
    revoked = w.run(force=True, revoke_previous=True, reason="INC-1 leaked")
    assert revoked.action == "revoked"
    keyset = w.keyset()
    assert keyset.get(old_current.id).state is State.REVOKED  # type: ignore[union-attr]
    assert keyset.get(old_previous.id).state is State.REVOKED  # type: ignore[union-attr]
    assert w.logs_in(State.CURRENT)
    for version in keyset.revoked:
        credential = credential_of(version)
        assert credential is not None
        with pytest.raises(CredentialRefused):
            w.target.login(w.binding, credential)


def test_rollback_reenables_the_previous_and_disables_the_rolled_back(tmp_path: Path) -> None:
    """After rollback the stored current logs in on the target; the value rolled back from does not."""
    w = World(tmp_path, "dual")
    w.run()
    w.run(force=True)
    rolled_from = w.keyset().current
    outcome = w.engine().rollback(w.policy, "consumer broke")
    assert outcome.action == "rolled_back"
    assert w.logs_in(State.CURRENT)
    credential = credential_of(w.keyset().get(rolled_from.id))  # type: ignore[union-attr]
    assert credential is not None
    with pytest.raises(CredentialRefused):
        w.target.login(w.binding, credential)


def test_rollback_never_restores_a_revoked_value(tmp_path: Path) -> None:
    """A value revoked in an incident is never made current again (exit 1, naming the incident)."""
    w = World(tmp_path, "dual")
    w.run()
    w.run(force=True, revoke_previous=True, reason="INC-1234 key leaked")
    from rotator.errors import IllegalTransition

    with pytest.raises(IllegalTransition, match="INC-1234"):
        w.engine().rollback(w.policy, "undo")
    assert w.logs_in(State.CURRENT)


def test_single_replaces_the_password_and_needs_grace_zero(tmp_path: Path) -> None:
    """single: the old login stops at promote; a manifest with single and a grace above zero is refused."""
    with pytest.raises(ManifestError, match="alternating"):
        World(tmp_path, "single")
    w = World(tmp_path, "single", ", grace: 0s")
    w.run()
    w.run(force=True)
    assert w.logs_in(State.CURRENT)
    assert not w.logs_in(State.RETIRED)


def test_a_failed_login_discards_the_attempt_and_restores_the_target(tmp_path: Path) -> None:
    """A verify hook refusing the new value: current unchanged and still logs in; the pending is gone."""
    hook = tmp_path / "refuse"
    w = World(tmp_path, "single", f', grace: 0s, verify: {{command: ["sh", "-c", "! test -e {hook}"]}}')
    w.run()
    hook.touch()
    outcome = w.run(force=True)
    assert not outcome.ok
    keyset = w.keyset()
    assert keyset.pending is None
    assert w.logs_in(State.CURRENT)  # single: staging had replaced the password; discard put it back


def test_target_down_fails_with_exit_4_and_leaves_the_store_unchanged(tmp_path: Path) -> None:
    """An unreachable target: exit 4, the message names the target, nothing staged; the next run rotates."""
    w = World(tmp_path, "dual")
    w.run()
    before = w.keyset()
    MemoryTarget.switch(w.target_name, "down")
    outcome = w.run(force=True)
    assert (outcome.ok, outcome.error.exit_code if outcome.error else None) == (False, ExitCode.BACKEND)
    assert w.target_name in outcome.message
    assert w.keyset().revision == before.revision
    MemoryTarget.switch(w.target_name, "down", on=False)
    assert w.run(force=True).action == "rotated"
    assert w.logs_in(State.CURRENT)


def test_a_crash_after_staging_resumes_and_logs_in(tmp_path: Path) -> None:
    """A pending staged in the store but never applied to the target (a crash) is applied on resume."""
    w = World(tmp_path, "alternating")
    w.run()
    engine = w.engine()
    keyset = w.keyset()
    version = engine._new_version(w.policy, w.clock(), State.PENDING, keyset)
    from rotator.transitions import Stage

    w.providers.get(w.policy.provider).apply(w.policy.ref, keyset, Stage(version))  # the crash: no enable
    assert w.run().action == "resumed"
    assert w.logs_in(State.CURRENT)
    assert w.logs_in(State.PREVIOUS)


def test_url_template_escapes_every_field() -> None:
    """Characters that mean something in a URL are percent-escaped in the rendered DATABASE_URL."""
    doc = Credential({"username": "a@b", "password": "p:/@?#", "host": "h", "port": 5432, "database": "d b"})
    url = render_url("postgresql://{username}:{password}@{host}:{port}/{database}", doc)
    assert url == "postgresql://a%40b:p%3A%2F%40%3F%23@h:5432/d%20b"
    assert "p:/@?#" not in repr(doc)


def test_unknown_strategy_for_a_target_is_a_manifest_error(tmp_path: Path) -> None:
    """A strategy the target does not declare, or an unknown target, is exit 2 naming the secret's line."""
    with pytest.raises(ManifestError, match=r"rotation.yaml:\d+:\d+: .*unknown target"):
        parse_manifest(MANIFEST.format(strategy="dual", extra="").replace("name: db,", "name: nope,"),
                       tmp_path / "rotation.yaml")


def test_a_typo_in_a_binding_key_is_a_manifest_error(tmp_path: Path) -> None:
    """Keys a target's binding_model does not know are refused at load with file:line and the known keys."""
    text = MANIFEST.format(strategy="dual", extra="").replace("strategy: dual", "strategy: dual, nte: x")
    with pytest.raises(ManifestError, match=r"rotation.yaml:\d+:\d+: .*unknown key .*binding keys: note"):
        parse_manifest(text, tmp_path / "rotation.yaml")
    parse_manifest(text.replace("nte: x", "note: x"), tmp_path / "rotation.yaml")


def test_admin_from_a_managed_secret(tmp_path: Path) -> None:
    """``admin: {secret: NAME}`` gives the target the secret's current value, then pending and previous."""
    text = MANIFEST.format(strategy="dual", extra="").replace(
        'admin: {username: root, password: "admin-pass-123"}', "admin: {secret: app}")
    manifest = parse_manifest(text, tmp_path / "rotation.yaml")
    seen: list[str] = []
    targets = manifest.build_targets(lambda name: seen.append(name) or ())  # type: ignore[func-returns-value]
    assert isinstance(targets, TargetSet)
    targets.get("db")._admin()  # type: ignore[attr-defined]
    assert seen == ["app"]


def test_plan_and_status_show_the_target_strategy_and_active_identity(workspace: Any) -> None:
    """`plan` and `status` name the target, the strategy and the identity in use (table and JSON)."""
    workspace.write_manifest("""
        version: 1
        defaults: {every: 10d, grace: 1d, notice: 1d}
        targets:
          db: {type: memory, admin: {username: root, password: "admin-pass-123"}}
        secrets:
          - {name: app, kind: password, length: 24, target: {name: db, username: app, strategy: alternating}}
    """)
    assert workspace.cli("run").code == 0
    status = workspace.cli("status", "-o", "json").json()["secrets"][0]
    assert status["target"] == {"name": "db", "strategy": "alternating", "identity": "app"}
    plan = workspace.cli("plan", "-o", "json").json()["secrets"][0]
    assert plan["target"] == status["target"]
    table = workspace.cli("plan")
    assert "target db (alternating, active: app)" in " ".join(table.out.split())
