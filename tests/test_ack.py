"""Consumer acknowledgements: the conditional meta write, `retire: when_acknowledged` in the manifest, the
planner and engine retiring as soon as every consumer moved (and at the grace deadline otherwise), and
`rotator status` showing who has and has not moved."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.acks import acknowledged, waiting_for
from rotator.app import Runtime
from rotator.errors import ConflictError, ManifestError, UsageError
from rotator.keyring import Keyring
from rotator.keyset import State
from rotator.manifest import load_manifest
from rotator.plan import Action, decide
from rotator.provider import SecretRef
from rotator.testing import FakeClock, MemoryProvider
from tests.conftest import Workspace, memory_runtime

MANIFEST = """\
version: 1
defaults: {{provider: {store}, every: 30d, grace: 3d, notice: 1d}}
providers: {{{store}: {{type: memory}}}}
audit: {{path: audit.jsonl}}
secrets:
  - name: api/hmac
    kind: hmac
    retire: when_acknowledged
    consumers: [gateway, billing]
  - {{name: api/plain, kind: hmac, consumers: [gateway]}}
"""


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[Runtime, FakeClock, str]]:
    """An in-process runtime on a fresh memory provider with a fake clock; both secrets created."""
    with memory_runtime(tmp_path, MANIFEST) as made:
        yield made


def _ring(env: tuple[Runtime, FakeClock, str], secret: str = "api/hmac") -> Keyring:
    rt, clock, name = env
    return Keyring(MemoryProvider(name=name), rt.manifest.secret(secret).ref, clock=clock, background=False)


def _rotate(rt: Runtime, secret: str = "api/hmac") -> None:
    outcome = rt.engine.reconcile_one(rt.manifest.secret(secret), force=True)
    assert outcome.ok, outcome
    assert outcome.action == "rotated", outcome


def _states(rt: Runtime, secret: str = "api/hmac") -> list[str]:
    keyset = rt.engine.read(rt.manifest.secret(secret))
    assert keyset is not None
    return sorted(str(v.state) for v in keyset.versions)


def test_acknowledge_records_current_version(env: Any) -> None:
    """acknowledge() writes {version: {consumer: time}} to the keyset meta and returns the version id."""
    rt, clock, _ = env
    ring = _ring(env)
    version = ring.acknowledge("gateway")
    keyset = rt.engine.read(rt.manifest.secret("api/hmac"))
    assert version == keyset.current.id
    assert acknowledged(keyset) == {"gateway": clock().isoformat()}
    assert waiting_for(["gateway", "billing"], keyset) == ["billing"]
    revision = keyset.revision
    assert ring.acknowledge("gateway") == version  # already recorded: no second write
    assert rt.engine.read(rt.manifest.secret("api/hmac")).revision == revision


def test_acknowledge_moves_keyring_to_newest_current(env: Any) -> None:
    """A keyring with a stale cache re-reads before acknowledging, and then signs with the new version."""
    rt, _, _ = env
    ring = _ring(env)
    old = ring.signing_key().id
    _rotate(rt)
    new = ring.acknowledge("gateway")
    assert new != old
    assert ring.signing_key().id == new


def test_acknowledge_retries_after_conflict(env: Any) -> None:
    """A lost conditional write is retried after a re-read, keeping the other writer's change."""
    rt, clock, name = env
    provider = MemoryProvider(name=name)
    ref = rt.manifest.secret("api/hmac").ref
    original = provider.apply
    raced = []

    def racing_update(ref: SecretRef, expected: Any, transition: Any) -> Any:
        if not raced:  # another consumer wins the race in between our read and write
            raced.append(True)
            _ring(env).acknowledge("billing")
        return original(ref, expected, transition)

    provider.apply = racing_update  # type: ignore[method-assign]
    Keyring(provider, ref, clock=clock, background=False).acknowledge("gateway")
    assert set(acknowledged(provider.read(ref))) == {"gateway", "billing"}  # type: ignore[arg-type]


def test_concurrent_acknowledgements_all_land(env: Any) -> None:
    """Several consumers acknowledging at once from threads are all recorded (compare-and-set + retry)."""
    rt, _, _ = env
    consumers = [f"worker-{i}" for i in range(6)]
    threads = [threading.Thread(target=_ring(env).acknowledge, args=(c,)) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(acknowledged(rt.engine.read(rt.manifest.secret("api/hmac")))) == set(consumers)


def test_acknowledge_gives_up_when_always_conflicting(env: Any) -> None:
    """A write that keeps losing ends in ConflictError rather than looping forever."""
    rt, clock, name = env
    provider = MemoryProvider(name=name)

    def always_conflict(*args: Any) -> Any:
        raise ConflictError("changed")

    provider.apply = always_conflict  # type: ignore[method-assign]
    ring = Keyring(provider, rt.manifest.secret("api/hmac").ref, clock=clock, background=False)
    with pytest.raises(ConflictError, match="kept changing"):
        ring.acknowledge("gateway")
    with pytest.raises(UsageError):
        _ring(env).acknowledge("")


def test_decide_retires_when_last_consumer_acknowledges(env: Any) -> None:
    """With when_acknowledged, RETIRE comes as soon as every named consumer acked the current version."""
    rt, clock, _ = env
    policy = rt.manifest.secret("api/hmac")
    _rotate(rt)
    _ring(env).acknowledge("gateway")
    assert decide(policy, rt.engine.read(policy), clock()).action is Action.NONE
    _ring(env).acknowledge("billing")
    decision = decide(policy, rt.engine.read(policy), clock())
    assert decision.action is Action.RETIRE
    assert "every consumer" in decision.detail


def test_acks_of_the_previous_cycle_do_not_count(env: Any) -> None:
    """Acknowledgements of an older version do not retire the new previous."""
    rt, clock, _ = env
    policy = rt.manifest.secret("api/hmac")
    _ring(env).acknowledge("gateway")
    _ring(env).acknowledge("billing")
    _rotate(rt)
    assert decide(policy, rt.engine.read(policy), clock()).action is Action.NONE


def test_engine_retires_early_with_reason(env: Any) -> None:
    """A reconcile after the last ack retires the previous version with an 'acknowledged' reason."""
    rt, _, _ = env
    _rotate(rt)
    for consumer in ("gateway", "billing"):
        _ring(env).acknowledge(consumer)
    outcome = rt.engine.reconcile_one(rt.manifest.secret("api/hmac"))
    assert outcome.action == "retired"
    keyset = rt.engine.read(rt.manifest.secret("api/hmac"))
    assert [v.reason for v in keyset.versions if v.state is State.RETIRED] == [
        "every consumer acknowledged the new version"]


def test_retires_at_grace_deadline_without_every_ack(env: Any) -> None:
    """Missing acknowledgements never extend the grace: RETIRE at the deadline anyway."""
    rt, clock, _ = env
    _rotate(rt)
    _ring(env).acknowledge("gateway")
    clock.advance(timedelta(days=3) - timedelta(seconds=1))
    assert rt.engine.reconcile_one(rt.manifest.secret("api/hmac")).action == "none"
    clock.advance(timedelta(seconds=1))
    assert rt.engine.reconcile_one(rt.manifest.secret("api/hmac")).action == "retired"
    assert _states(rt) == ["current", "retired"]


def test_at_grace_end_ignores_acknowledgements(env: Any) -> None:
    """Without when_acknowledged, acks are recorded but the previous stays until its grace ends."""
    rt, clock, _ = env
    _rotate(rt, "api/plain")
    _ring(env, "api/plain").acknowledge("gateway")
    policy = rt.manifest.secret("api/plain")
    assert policy.retire == "at_grace_end"
    assert decide(policy, rt.engine.read(policy), clock()).action is Action.NONE


def test_manifest_needs_consumers_for_when_acknowledged(tmp_path: Path) -> None:
    """`retire: when_acknowledged` without consumers is an error at the right line, also via defaults."""
    path = tmp_path / "rotation.yaml"
    path.write_text("version: 1\nsecrets:\n  - name: a\n    kind: hmac\n    retire: when_acknowledged\n")
    with pytest.raises(ManifestError, match=r"rotation.yaml:5:\d+: secrets\[0\].retire: .*non-empty 'consumers'"):
        load_manifest(path)
    path.write_text("version: 1\ndefaults: {retire: when_acknowledged}\nsecrets:\n"
                    "  - {name: a, kind: hmac, consumers: [x]}\n  - {name: b, kind: hmac}\n")
    with pytest.raises(ManifestError, match=r"rotation.yaml:5:\d+: secrets\[1\].*\(from defaults\)"):
        load_manifest(path)
    path.write_text("version: 1\nsecrets:\n  - {name: a, kind: hmac, retire: sometimes}\n")
    with pytest.raises(ManifestError, match="retire"):
        load_manifest(path)


def test_defaults_retire_is_inherited(tmp_path: Path) -> None:
    """`defaults.retire` applies to every secret that does not set its own."""
    path = tmp_path / "rotation.yaml"
    path.write_text("version: 1\ndefaults: {retire: when_acknowledged}\nsecrets:\n"
                    "  - {name: a, kind: hmac, consumers: [x]}\n  - {name: b, kind: hmac, retire: at_grace_end}\n")
    manifest = load_manifest(path)
    assert (manifest.secret("a").retire, manifest.secret("b").retire) == ("when_acknowledged", "at_grace_end")


def test_status_shows_who_moved(workspace: Workspace) -> None:
    """`rotator status` lists acknowledged consumers and those still waiting, in JSON and in the table."""
    workspace.write_manifest("""
        version: 1
        secrets:
          - {name: api/hmac, kind: hmac, retire: when_acknowledged, consumers: [gateway, billing]}
    """)
    assert workspace.cli("run").code == 0
    assert workspace.cli("rotate", "--now", "api/hmac").code == 0  # a previous value to move from
    with Keyring.from_manifest(workspace.manifest, "api/hmac") as ring:
        version = ring.acknowledge("gateway")
    item = workspace.cli("status", "-o", "json").json()["secrets"][0]
    assert set(item["acknowledged"]) == {"gateway"}
    assert item["waiting_for"] == ["billing"]
    table = workspace.cli("status").out
    assert "CONSUMERS MOVED" in table
    assert "1/2; retirement waits for: billing" in table
    assert version[:8] in table
