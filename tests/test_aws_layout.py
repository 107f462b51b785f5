"""The pure AWS layout: tag codec, label semantics, revision and the step planners."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from rotator_aws import _steps as steps
from rotator_aws._layout import (
    CURRENT,
    MANAGED,
    PENDING,
    PREVIOUS,
    RETIRED,
    SEQ,
    Move,
    Plan,
    Remote,
    decode,
    encode,
    record_key,
    record_of,
    stage_token,
)

from rotator.generators import GeneratorParams, generate
from rotator.keyset import State
from rotator.testing.contract import make_version

NOW = datetime(2025, 3, 1, 9, 30, tzinfo=UTC)
_TAG_VALUE = re.compile(r"[\w .:/=+@-]{0,256}")


def remote(stages: dict[str, set[str]], tags: dict[str, str] | None = None) -> Remote:
    return Remote("arn:aws:secretsmanager:us-east-1:123456789012:secret:x", {k: frozenset(v) for k, v in
                                                                              stages.items()}, tags or {})


def test_codec_round_trips_large_json_in_valid_tag_values() -> None:
    """An RSA public JWK spans several tags, each a legal AWS tag value, and decodes back unchanged."""
    jwk = generate(GeneratorParams(kind="rsa", rsa_bits=4096)).public
    tags = encode("rotator:v:abc", {"pub": jwk, "why": "quote \" { } , and ünicode"})
    assert len(tags) > 1
    assert all(_TAG_VALUE.fullmatch(v) for v in tags.values())
    assert decode(tags, "rotator:v:abc") == {"pub": jwk, "why": "quote \" { } , and ünicode"}


def test_codec_treats_damaged_records_as_absent() -> None:
    """A missing chunk or garbage decodes to None instead of failing the read."""
    tags = encode("k", {"x": "y" * 400})
    del tags["k:1"]
    assert decode(tags, "k") is None
    assert decode({"k": "1.@@@"}, "k") is None
    assert decode({"k": "no-count"}, "k") is None


def test_moving_current_drags_previous_like_aws() -> None:
    """Moving AWSCURRENT puts AWSPREVIOUS on the version it left and takes it off the one it reaches."""
    before = remote({"a": {CURRENT}, "b": {PENDING}, "c": {PREVIOUS}})
    after = before.after(Plan(moves=(Move(CURRENT, "a", "b"),)))
    assert after.stages == {"a": {PREVIOUS}, "b": {PENDING, CURRENT}}
    assert after.members() == {"a": State.PREVIOUS, "b": State.CURRENT}


def test_put_moves_awspending_and_unlabelled_versions_vanish() -> None:
    """A put takes AWSPENDING off the version it idled on; a version left without labels leaves the keyset."""
    after = remote({"a": {CURRENT, PENDING}}).after(Plan(put="new"))
    assert after.stages == {"a": {CURRENT}, "new": {PENDING}}
    assert after.members() == {"a": State.CURRENT, "new": State.PENDING}
    again = after.after(Plan(put="newer"))
    assert again.members() == {"a": State.CURRENT, "newer": State.PENDING}


def test_state_precedence_makes_a_stray_marker_harmless() -> None:
    """AWSPENDING beside another state label is the idle marker, not a pending version."""
    state = remote({"a": {CURRENT, PENDING}, "b": {PREVIOUS, PENDING}, "c": {RETIRED}, "d": {PENDING, "OTHER"}})
    assert state.members() == {"a": State.CURRENT, "b": State.PREVIOUS, "c": State.RETIRED, "d": State.PENDING}


def test_revision_covers_states_records_and_meta_only() -> None:
    """Labels, records, meta and the stage sequence change the revision; info and user tags do not."""
    base = remote({"a": {CURRENT}}, {MANAGED: "true", **encode(record_key("a"), {"c": NOW.isoformat()})})
    same = [
        base.after(Plan(tags={"team": "payments", "rotator:last-rotated-at": "now"})),
        base.after(Plan(tags=encode(record_key("orphan"), {"c": "x"}))),
    ]
    different = [
        base.after(Plan(put="x")),
        base.after(Plan(tags={SEQ: "1"})),
        base.after(Plan(moves=(Move(PENDING, None, "a"),))),
        base.after(Plan(tags=encode("rotator:meta", {"n": 1}))),
        base.after(Plan(tags=encode(record_key("a"), {"c": NOW.isoformat(), "p": NOW.isoformat()}))),
        base.after(Plan(untag=(MANAGED,))),
    ]
    assert all(r.revision == base.revision for r in same)
    assert len({r.revision for r in different} | {base.revision}) == len(different) + 1


def test_keyset_reads_metadata_by_state() -> None:
    """A record's fields count only in the state they belong to (no expiry on a current version)."""
    version = make_version(State.PREVIOUS).replace(promoted_at=NOW, expires_at=NOW + timedelta(days=1))
    tags = encode(record_key(version.id), record_of(version))
    as_previous = remote({version.id: {PREVIOUS}}, tags).keyset("n", {})
    as_current = remote({version.id: {CURRENT}}, tags).keyset("n", {})
    assert as_previous.versions[0] == version
    assert as_current.versions[0].expires_at is None
    assert as_current.versions[0].promoted_at == NOW


def test_stage_is_one_put_under_a_token_every_racer_derives_alike() -> None:
    """The token depends on the secret, its current version and the stage sequence, nothing else."""
    state = remote({"c": {CURRENT, PENDING}, "p": {PREVIOUS}}, {MANAGED: "true"})
    token = stage_token("svc/key", state)
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert steps.plan_stage(token) == Plan(put=token)
    assert stage_token("svc/key", state.after(Plan(tags=encode("rotator:meta", {"n": 1})))) == token
    assert stage_token("svc/key", state.after(Plan(put=token))) == token  # still the same current
    others = {
        stage_token("svc/other", state),
        stage_token("svc/key", state.after(steps.plan_bump(state))),
        stage_token("svc/key", remote({"p": {CURRENT}}, {MANAGED: "true"})),
    }
    assert token not in others
    assert len(others) == 3


def test_promote_plans_for_grace_and_for_revocation() -> None:
    """With grace, only AWSCURRENT moves (plus RETIRED for an older previous); grace 0 retires at once."""
    state = remote({"c": {CURRENT}, "p": {PREVIOUS}, "r": {RETIRED}, "n": {PENDING}},
                   encode(record_key("r"), {"c": NOW.isoformat()}))
    kept = steps.plan_promote(state, "n", NOW - timedelta(minutes=1), NOW, timedelta(days=7), None)
    assert kept.moves == (Move(CURRENT, "c", "n"), Move(RETIRED, "r", "p"))
    assert set(kept.untag) == {record_key("r")}
    assert state.after(kept).members() == {"c": State.PREVIOUS, "n": State.CURRENT, "p": State.RETIRED}
    assert state.after(kept).keyset("n", {}).current.created_at == NOW - timedelta(minutes=1)
    revoked = steps.plan_promote(state, "n", NOW, NOW, timedelta(0), "leak")
    assert state.after(revoked).members() == {"c": State.RETIRED, "n": State.CURRENT}
    assert decode(revoked.tags, record_key("c"))["why"] == "leak"


def test_rollback_takes_the_idle_marker_along() -> None:
    """Rolling back moves AWSCURRENT and the marker to the target and retires the rolled-back version."""
    state = remote({"c": {CURRENT, PENDING}, "p": {PREVIOUS}})
    after = state.after(steps.plan_rollback(state, "p", NOW, "broken"))
    assert after.stages == {"p": {CURRENT, PENDING}, "c": {RETIRED}}
    assert after.seq == state.seq + 1  # "c" may become current again one day: its stage token is used up


def test_discard_and_purge_forget_records() -> None:
    """Discard returns the marker to current; purge drops the retired label; both untag the records."""
    tags = {**encode(record_key("n"), {"c": "x"}), **encode(record_key("r"), {"c": "x"})}
    state = remote({"c": {CURRENT}, "n": {PENDING}, "r": {RETIRED}}, tags)
    discarded = steps.plan_discard(state, "n")
    assert state.after(discarded).stages == {"c": {CURRENT, PENDING}, "r": {RETIRED}}
    assert state.after(discarded).seq == 1  # the next stage derives a new token
    assert discarded.untag == (record_key("n"),)
    purged = state.after(steps.plan_purge(state, ["r"]))
    assert record_key("r") not in purged.tags
    assert purged.members() == {"c": State.CURRENT, "n": State.PENDING}


def test_meta_plan_removes_chunks_a_shorter_meta_leaves() -> None:
    """Shrinking the bookkeeping untags the chunks it no longer uses."""
    state = remote({"c": {CURRENT}}, encode("rotator:meta", {"big": "x" * 600}))
    plan = steps.plan_meta(state, {"small": 1})
    assert plan.untag
    assert state.after(plan).meta == {"small": 1}
