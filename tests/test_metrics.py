"""Metrics as a subscriber: counters initialised per secret and result, one count per failure, and age and
grace computed at scrape time from cached keyset dates (in-process runtimes on real providers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from rotator.app import build_runtime
from rotator.metrics import Metrics
from rotator.testing.clock import FakeClock
from rotator.testing.memory import MemoryProvider

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(metrics: Metrics) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _rotations(samples: Samples, secret: str, result: str) -> float | None:
    return samples.get(("rotator_rotations_total", (("result", result), ("secret", secret))))


class WallClock:
    """A settable wall clock for the metrics (the engine keeps its own FakeClock)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rotation.yaml"
    path.write_text(body)
    return path


def test_counters_exist_for_every_secret_and_result_after_the_first_creations(tmp_path: Path) -> None:
    """After a first pass that only creates, rotator_rotations_total has a 0 sample per secret and result
    (creations are not rotations), and every notifier/provider child exists."""
    store = "metrics-init"
    path = _manifest(tmp_path, f"""
version: 1
providers: {{{store}: {{type: memory}}}}
defaults: {{provider: {store}, every: 30d, grace: 1d, notice: 1d}}
secrets:
  - {{name: a, kind: api_key}}
  - {{name: b, kind: hmac}}
""")
    metrics = Metrics()
    rt = build_runtime(path, actor="test", clock=FakeClock(), notify=False, metrics=metrics)
    try:
        outcomes = rt.engine.reconcile(list(rt.manifest.secrets.values()))
        assert [o.action for o in outcomes] == ["created", "created"]
    finally:
        rt.close()
        MemoryProvider.reset(store)
    samples = _samples(metrics)
    for secret in ("a", "b"):
        for result in ("success", "failure"):
            assert _rotations(samples, secret, result) == 0
    assert samples[("rotator_backend_errors_total", (("provider", store),))] == 0
    assert samples[("rotator_backend_circuit_open", (("provider", store),))] == 0


def test_rotation_counts_once_and_age_moves_between_scrapes(tmp_path: Path) -> None:
    """A forced rotation counts one success and observes its duration; the age gauge is computed at scrape
    time (it grows with the clock with no reconcile in between) and the grace gauge disappears once the
    previous value's grace has ended."""
    store = "metrics-age"
    path = _manifest(tmp_path, f"""
version: 1
providers: {{{store}: {{type: memory}}}}
defaults: {{provider: {store}, every: 30d, grace: 1d, notice: 1d}}
secrets:
  - {{name: a, kind: api_key}}
""")
    clock = FakeClock()
    wall = WallClock(clock())
    metrics = Metrics(clock=wall)
    rt = build_runtime(path, actor="test", clock=clock, notify=False, metrics=metrics)
    try:
        policy = rt.manifest.secrets["a"]
        rt.engine.reconcile([policy])
        clock.advance(3600)
        wall.now = clock()
        assert _samples(metrics)[("rotator_secret_age_seconds", (("secret", "a"),))] == 3600
        rotated = rt.engine.reconcile([policy], force=True)
        assert rotated[0].action == "rotated"
        promoted = clock()
    finally:
        rt.close()
        MemoryProvider.reset(store)
    samples = _samples(metrics)
    assert _rotations(samples, "a", "success") == 1
    assert _rotations(samples, "a", "failure") == 0
    assert samples[("rotator_rotation_duration_seconds_count", ())] == 1
    wall.now = promoted + timedelta(hours=5)
    later = _samples(metrics)
    assert later[("rotator_secret_age_seconds", (("secret", "a"),))] == 5 * 3600
    assert later[("rotator_grace_expiry_timestamp_seconds", (("secret", "a"),))] == \
        (promoted + timedelta(days=1)).timestamp()
    assert later[("rotator_next_rotation_timestamp_seconds", (("secret", "a"),))] == \
        (promoted + timedelta(days=30)).timestamp()
    wall.now = promoted + timedelta(days=2)  # grace over: no stale expiry in the past
    assert ("rotator_grace_expiry_timestamp_seconds", (("secret", "a"),)) not in _samples(metrics)


def test_a_failed_read_is_one_backend_error_and_a_failed_rotation_one_failure(tmp_path: Path) -> None:
    """A store that cannot be opened: each failed call counts one backend error (not one in the engine and
    one in the breaker); a failing verify hook counts one rotation failure."""
    (tmp_path / "store-is-a-dir").mkdir()
    path = _manifest(tmp_path, """
version: 1
providers:
  broken: {type: local, path: store-is-a-dir}
  good: {type: local, path: good.db}
defaults: {every: 30d, grace: 1d, notice: 1d}
audit: {key_provider: good}   # the audit HMAC key needs a store, and no provider is called `local`
secrets:
  - {name: lost, kind: api_key, provider: broken}
  - name: hooked
    kind: api_key
    provider: good
    verify: {command: ["sh", "-c", "cat >/dev/null; test ! -e fail"]}
""")
    clock = FakeClock()
    metrics = Metrics()
    rt = build_runtime(path, actor="test", clock=clock, notify=False, metrics=metrics)
    try:
        lost, hooked = rt.manifest.secrets["lost"], rt.manifest.secrets["hooked"]
        assert not rt.engine.reconcile_one(lost).ok
        assert rt.engine.reconcile_one(hooked).action == "created"
        clock.advance(3600)
        (tmp_path / "fail").touch()  # the verify hook (run in the manifest's folder) now fails
        assert not rt.engine.reconcile_one(hooked, force=True).ok
    finally:
        rt.close()
    samples = _samples(metrics)
    assert samples[("rotator_backend_errors_total", (("provider", "broken"),))] == 1
    assert samples[("rotator_backend_errors_total", (("provider", "good"),))] == 0
    assert _rotations(samples, "hooked", "failure") == 1
    assert _rotations(samples, "hooked", "success") == 0


def test_a_reload_follows_the_new_manifest(tmp_path: Path) -> None:
    """watch() on a reloaded manifest drops the series of removed secrets and adds the new ones."""
    store = "metrics-reload"
    body = """
version: 1
providers: {{{store}: {{type: memory}}}}
defaults: {{provider: {store}, every: 30d, grace: 1d, notice: 1d}}
secrets:
  - {{name: {name}, kind: api_key}}
"""
    metrics = Metrics(clock=lambda: datetime.now(UTC))
    for name in ("old", "new"):
        path = _manifest(tmp_path, body.format(store=store, name=name))
        rt = build_runtime(path, actor="test", clock=FakeClock(), notify=False, metrics=metrics)
        try:
            rt.engine.reconcile(list(rt.manifest.secrets.values()))
        finally:
            rt.close()
    MemoryProvider.reset(store)
    secrets = {dict(labels).get("secret") for (name, labels) in _samples(metrics) if name.startswith("rotator_")}
    assert secrets - {None} == {"new"}
