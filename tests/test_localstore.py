"""The embedded store's own guarantees: file modes, encryption at rest, master key, multi-process CAS."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from rotator.errors import BackendUnavailable, ConflictError
from rotator.keyset import KeyVersion, SecretValue, State
from rotator.localstore import MASTER_KEY_ENV, LocalConfig, LocalProvider
from rotator.provider import SecretRef
from rotator.testing.contract import NOW, make_version

Opener = Callable[..., LocalProvider]


@pytest.fixture
def open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Opener]:
    """Opens LocalProviders under tmp_path (no master key in the environment) and closes them afterwards."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    opened: list[LocalProvider] = []

    def build(path: str = "state/store.db", **options: str) -> LocalProvider:
        provider = LocalProvider(name="local", config=LocalConfig(path=path, **options), base_dir=tmp_path)
        opened.append(provider)
        return provider

    yield build
    for provider in opened:
        provider.close()


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _rows(db: Path) -> list[tuple[str, int, str]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT path, revision, doc FROM keysets ORDER BY path").fetchall()
    finally:
        conn.close()


def _edit_doc(db: Path, path: str, change: Callable[[dict[str, Any]], object]) -> None:
    conn = sqlite3.connect(db)
    doc = json.loads(conn.execute("SELECT doc FROM keysets WHERE path = ?", (path,)).fetchone()[0])
    change(doc)
    conn.execute("UPDATE keysets SET doc = ? WHERE path = ?", (json.dumps(doc), path))
    conn.commit()
    conn.close()


def test_nothing_touches_disk_before_first_use(open_store: Opener, tmp_path: Path) -> None:
    """Constructing a provider creates no directory, store or key file."""
    open_store()
    assert list(tmp_path.iterdir()) == []


def test_files_are_private(open_store: Opener, tmp_path: Path) -> None:
    """The store directory is 0700 and the store, its WAL and the key file are 0600."""
    provider = open_store()
    provider.create(SecretRef(name="a", path="a"), make_version(State.CURRENT), {})
    folder = tmp_path / "state"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("store.db", "store.db-wal", "master.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name


def test_custom_key_file_location(open_store: Opener, tmp_path: Path) -> None:
    """master_key_file puts the key where configured, resolved against the base directory."""
    open_store(master_key_file="keys/rotator.key").check()
    assert (tmp_path / "keys" / "rotator.key").exists()
    assert not (tmp_path / "state" / "master.key").exists()


def test_values_are_not_stored_in_plaintext(open_store: Opener, tmp_path: Path) -> None:
    """Neither the database nor its WAL contains a written value."""
    provider = open_store()
    ref = SecretRef(name="plain", path="plain")
    first, second = make_version(State.CURRENT), make_version()
    staged = provider.stage(ref, provider.create(ref, first, {}), second)
    provider.promote(ref, staged, second.id, NOW, timedelta(0))
    raw = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("store.db*"))
    for version in (first, second):
        assert version.id.encode() in raw  # metadata is stored in clear, so the search itself works
        assert version.value is not None
        assert version.value.reveal().encode() not in raw


def test_unchanged_versions_keep_their_ciphertext(open_store: Opener, tmp_path: Path) -> None:
    """A step re-uses the stored nonce and ciphertext of versions whose value did not change."""
    provider = open_store()
    ref = SecretRef(name="reuse", path="reuse")
    created = provider.create(ref, make_version(State.CURRENT), {})

    def sealed() -> dict[str, tuple[str, str]]:
        doc = json.loads(_rows(tmp_path / "state" / "store.db")[0][2])
        return {v["id"]: (v["nonce"], v["ct"]) for v in doc["versions"]}

    before = sealed()
    provider.update_meta(ref, created, {"note": 1})
    assert sealed() == before
    fresh = open_store()  # a new instance (empty cache) reads, then writes
    again = fresh.read(ref)
    assert again is not None
    fresh.stage(ref, again, make_version())
    assert {k: v for k, v in sealed().items() if k in before} == before


def test_wrong_master_key_is_refused_and_changes_nothing(
    open_store: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another key fails every call with 'cannot decrypt store: wrong master key'; the file is untouched."""
    monkeypatch.setenv(MASTER_KEY_ENV, _key())
    ref = SecretRef(name="k", path="k")
    owner = open_store()
    created = owner.create(ref, make_version(State.CURRENT), {})
    owner.close()
    db = tmp_path / "state" / "store.db"
    digest, rows = hashlib.sha256(db.read_bytes()).hexdigest(), _rows(db)
    monkeypatch.setenv(MASTER_KEY_ENV, _key())
    intruder = open_store()
    calls: list[Callable[[], object]] = [
        lambda: intruder.read(ref),
        lambda: intruder.update_meta(ref, created, {"x": 1}),
        lambda: intruder.create(SecretRef(name="n", path="n"), make_version(State.CURRENT), {}),
        intruder.list,
        intruder.check,
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable, match="cannot decrypt store: wrong master key") as caught:
            call()
        assert str(db) in str(caught.value)
    intruder.close()
    assert _rows(db) == rows
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_missing_key_file_for_existing_store(open_store: Opener, tmp_path: Path) -> None:
    """Losing the key file of a populated store is reported, and no new key is silently generated."""
    open_store().create(SecretRef(name="a", path="a"), make_version(State.CURRENT), {})
    (tmp_path / "state" / "master.key").unlink()
    with pytest.raises(BackendUnavailable, match=r"master key file .* is missing"):
        open_store().check()
    assert not (tmp_path / "state" / "master.key").exists()


@pytest.mark.parametrize("target", ["other version", "other secret"])
def test_moved_ciphertext_fails_to_decrypt(open_store: Opener, tmp_path: Path, target: str) -> None:
    """A ciphertext copied to another version or secret fails authentication instead of decrypting."""
    provider = open_store()
    source, dest = SecretRef(name="src", path="src"), SecretRef(name="dst", path="dst")
    shared = KeyVersion(id="v1", state=State.CURRENT, created_at=NOW, value=SecretValue("value-of-src"))
    staged = provider.stage(source, provider.create(source, shared, {}), make_version())
    provider.create(dest, shared.replace(value=SecretValue("value-of-dst")), {})
    provider.close()
    db = tmp_path / "state" / "store.db"
    src_doc = json.loads({path: doc for path, _, doc in _rows(db)}["src"])
    copied = {k: src_doc["versions"][0][k] for k in ("nonce", "ct")}
    if target == "other version":
        pending_id = staged.pending.id if staged.pending else ""
        _edit_doc(db, "src", lambda doc: doc["versions"][1].update(copied))
        victim, wanted = source, pending_id
    else:
        _edit_doc(db, "dst", lambda doc: doc["versions"][0].update(copied))
        victim, wanted = dest, "v1"
    with pytest.raises(BackendUnavailable, match=f"cannot decrypt store: version {wanted}") as caught:
        open_store().read(victim)
    assert "value-of" not in str(caught.value)


def test_master_key_from_environment(
    open_store: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ROTATOR_MASTER_KEY is used instead of a key file, and reopens the store."""
    monkeypatch.setenv(MASTER_KEY_ENV, _key())
    ref = SecretRef(name="env", path="env")
    version = make_version(State.CURRENT)
    open_store().create(ref, version, {})
    assert not (tmp_path / "state" / "master.key").exists()
    stored = open_store().read(ref)
    assert stored is not None
    assert stored.current is not None
    assert stored.current.value == version.value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!!", "is not valid base64"),
        (base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        ("", "decodes to 0 bytes"),
    ],
)
def test_malformed_environment_key(
    open_store: Opener, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    """A malformed ROTATOR_MASTER_KEY is a clear error naming the variable, never echoing it."""
    monkeypatch.setenv(MASTER_KEY_ENV, value)
    with pytest.raises(BackendUnavailable, match=MASTER_KEY_ENV) as caught:
        open_store().check()
    assert message in str(caught.value)
    assert caught.value.hint is not None
    assert "base64" in caught.value.hint
    if value:
        assert value not in str(caught.value)


@pytest.mark.parametrize("kind", ["garbage file", "directory"])
def test_unusable_store_file(open_store: Opener, tmp_path: Path, kind: str) -> None:
    """A store path that is not an SQLite database raises BackendUnavailable naming the path."""
    db = tmp_path / "state" / "store.db"
    db.parent.mkdir()
    if kind == "directory":
        db.mkdir()
    else:
        db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackendUnavailable) as caught:
        open_store().check()
    assert str(db) in str(caught.value)


def test_corrupt_keyset_row(open_store: Opener, tmp_path: Path) -> None:
    """A row whose document is not a keyset raises BackendUnavailable naming the secret."""
    provider = open_store()
    provider.create(SecretRef(name="bad", path="bad"), make_version(State.CURRENT), {})
    provider.close()
    _edit_doc(tmp_path / "state" / "store.db", "bad", lambda doc: doc.pop("versions"))
    with pytest.raises(BackendUnavailable, match="keyset of bad at bad is corrupt"):
        open_store().read(SecretRef(name="bad", path="bad"))


def test_close_then_reuse_reopens(open_store: Opener) -> None:
    """After close() the provider reopens the store on the next call."""
    provider = open_store()
    ref = SecretRef(name="c", path="c")
    provider.create(ref, make_version(State.CURRENT), {})
    provider.close()
    assert provider.read(ref) is not None
    assert provider.list() == ["c"]


# --- several processes on one store ------------------------------------------------------------------------

_CHILD_PRELUDE = """
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from rotator.errors import ConflictError
from rotator.keyset import KeyVersion, SecretValue, State
from rotator.localstore import LocalConfig, LocalProvider
from rotator.provider import SecretRef
from datetime import datetime, UTC
base, me, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
Path(f"{go}.{me}").touch()
while not go.exists():
    time.sleep(0.001)
"""


def _run_children(script: str, base: Path, count: int = 2) -> list[str]:
    """Start ``count`` Python processes running ``script``, release them together, return their stdout."""
    go = base / "go"
    code = textwrap.dedent(_CHILD_PRELUDE) + textwrap.dedent(script)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(base), f"p{i}", str(go)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if k != MASTER_KEY_ENV},
        )
        for i in range(count)
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.p{i}").exists() for i in range(count)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(out)
    return outputs


@pytest.mark.xdist_group("processes")
def test_processes_racing_cas_never_both_win(open_store: Opener, tmp_path: Path) -> None:
    """Two processes doing 50 read-then-write rounds: each revision is won by exactly one write."""
    ref = SecretRef(name="race", path="race")
    owner = open_store()
    owner.create(ref, make_version(State.CURRENT), {"log": []})
    script = """
    p = LocalProvider(name="local", config=LocalConfig(path="state/store.db"), base_dir=base)
    ref = SecretRef(name="race", path="race")
    wins = []
    for _ in range(50):
        ks = p.read(ref)
        try:
            p.update_meta(ref, ks, {"log": [*ks.meta["log"], f"{me}@{ks.revision}"]})
            wins.append(ks.revision)
        except ConflictError:
            pass
    print(json.dumps(wins))
    """
    wins = [f"p{i}@{rev}" for i, out in enumerate(_run_children(script, tmp_path)) for rev in json.loads(out)]
    final = owner.read(ref)
    assert final is not None
    revisions = [entry.split("@")[1] for entry in wins]
    assert len(set(revisions)) == len(revisions) >= 50
    assert sorted(final.meta["log"]) == sorted(wins)
    assert int(final.revision) == 1 + len(wins)


@pytest.mark.xdist_group("processes")
def test_processes_creating_key_file_agree(open_store: Opener, tmp_path: Path) -> None:
    """Two processes opening 20 new stores at once agree on one key per store, which reads both writes."""
    script = """
    for n in range(20):
        p = LocalProvider(name="local", config=LocalConfig(path=f"s{n}/store.db"), base_dir=base)
        version = KeyVersion(id="v", state=State.CURRENT, created_at=datetime.now(UTC), value=SecretValue(me))
        p.create(SecretRef(name=me, path=me), version, {})
        p.close()
    """
    _run_children(script, tmp_path)
    for n in range(20):
        provider = open_store(path=f"s{n}/store.db")
        for me in ("p0", "p1"):
            stored = provider.read(SecretRef(name=me, path=me))
            assert stored is not None
            assert stored.current is not None
            assert stored.current.value == SecretValue(me)
        assert stat.S_IMODE((tmp_path / f"s{n}" / "master.key").stat().st_mode) == 0o600


def test_thread_pool_writers_share_one_provider(open_store: Opener) -> None:
    """Many threads writing different secrets through one provider all succeed."""
    provider = open_store()

    def rotate(n: int) -> str:
        ref = SecretRef(name=f"t{n}", path=f"t{n}")
        staged = provider.stage(ref, provider.create(ref, make_version(State.CURRENT), {}), make_version())
        assert staged.pending is not None
        return provider.promote(ref, staged, staged.pending.id, NOW, timedelta(0)).revision

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(rotate, range(40))) == ["3"] * 40
    assert len(provider.list()) == 40
    with pytest.raises(ConflictError):
        provider.create(SecretRef(name="t0", path="t0"), make_version(State.CURRENT), {})


# --- rows bound to their key (associated data) -------------------------------------------------------------


def test_row_copied_onto_another_secret_fails(open_store: Opener, tmp_path: Path) -> None:
    """The reported attack: one secret's whole encrypted document copied onto another secret's row must
    not decrypt as the second secret (the associated data binds the row key, not the name inside)."""
    provider = open_store()
    source, victim = SecretRef(name="src", path="team/src"), SecretRef(name="dst", path="team/dst")
    provider.create(source, make_version(State.CURRENT), {})
    provider.create(victim, make_version(State.CURRENT), {})
    provider.close()
    db = tmp_path / "state" / "store.db"
    docs = {path: doc for path, _, doc in _rows(db)}
    for doc_change in (lambda doc: None, lambda doc: doc.update(name="dst")):
        copied = json.loads(docs["team/src"])
        doc_change(copied)
        def replace(doc: dict[str, Any], new: dict[str, Any] = copied) -> None:
            doc.clear()
            doc.update(new)

        _edit_doc(db, "team/dst", replace)
        with pytest.raises(BackendUnavailable, match=r"cannot decrypt store: version .* of dst") as caught:
            open_store().read(victim)
        assert caught.value.exit_code == 4


def _legacy(db: Path, key: bytes, path: str, name: str, value: str) -> None:
    """Write a row as rotator before row format 2 did: associated data ``name\\0version id``, no format."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, value.encode(), f"{name}\0v1".encode())
    version = {"id": "v1", "state": "current", "created_at": "2026-01-01T00:00:00+00:00",
               "nonce": base64.b64encode(nonce).decode(), "ct": base64.b64encode(ct).decode()}
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO keysets (path, revision, doc) VALUES (?, 1, ?)",
                 (path, json.dumps({"name": name, "meta": {}, "versions": [version]})))
    conn.commit()
    conn.close()


def test_old_rows_are_read_once_and_resealed(open_store: Opener, tmp_path: Path) -> None:
    """A row in the old format decrypts, is rewritten in format 2 (same revision), and reads again."""
    open_store().check()
    db = tmp_path / "state" / "store.db"
    key = base64.b64decode((tmp_path / "state" / "master.key").read_bytes())
    _legacy(db, key, "old", "old", "legacy-value-123")
    ref = SecretRef(name="old", path="old")
    first = open_store().read(ref)
    assert first is not None
    assert first.current is not None
    assert first.current.value == SecretValue("legacy-value-123")
    (path, revision, doc), = _rows(db)
    assert (path, revision, json.loads(doc)["format"]) == ("old", 1, 2)
    again = open_store().read(ref)
    assert again is not None
    assert again.current is not None
    assert again.current.value == SecretValue("legacy-value-123")


def test_old_row_copied_onto_another_secret_fails(open_store: Opener, tmp_path: Path) -> None:
    """An old-format row under another secret's key (its name inside is not this secret's) is refused."""
    open_store().check()
    db = tmp_path / "state" / "store.db"
    key = base64.b64decode((tmp_path / "state" / "master.key").read_bytes())
    _legacy(db, key, "victim", "attacker", "legacy-value-456")
    with pytest.raises(BackendUnavailable, match="row of victim at victim holds the keyset of 'attacker'"):
        open_store().read(SecretRef(name="victim", path="victim"))
    assert json.loads(_rows(db)[0][2]).get("format") is None  # not migrated
