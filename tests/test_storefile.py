"""A lost store is an error, never a silent new store; planted links and foreign folders are refused.

Each test first performs the attack or accident (emptying, deleting, swapping the store, planting a symlink)
and then checks that rotator refuses with exit 4 / BackendUnavailable and writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rotator.errors import BackendUnavailable
from rotator.keyset import State
from rotator.localstore import MASTER_KEY_ENV, LocalConfig, LocalProvider
from rotator.provider import SecretRef
from rotator.testing.contract import make_version
from tests.conftest import Workspace

Opener = Callable[..., LocalProvider]
MANIFEST = """
version: 1
secrets:
  - {name: api, kind: api_key}
  - {name: signing, kind: hmac}
"""


@pytest.fixture
def open_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Opener]:
    """LocalProviders under tmp_path/state (no master key in the environment), closed afterwards."""
    monkeypatch.delenv(MASTER_KEY_ENV, raising=False)
    opened: list[LocalProvider] = []

    def build(path: str = "state/store.db", **options: str) -> LocalProvider:
        provider = LocalProvider(name="local", config=LocalConfig(path=path, **options), base_dir=tmp_path)
        opened.append(provider)
        return provider

    yield build
    for provider in opened:
        provider.close()


def _snapshot(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every entry in ``folder`` (links by target), to prove nothing was written."""
    out = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            out[entry.name] = "link:" + os.readlink(entry)
        elif entry.is_file():
            out[entry.name] = hashlib.sha256(entry.read_bytes()).hexdigest()
        else:
            out[entry.name] = "dir"
    return out


def _populate(open_store: Opener) -> None:
    provider = open_store()
    provider.create(SecretRef(name="a", path="a"), make_version(State.CURRENT), {})
    provider.close()


def _empty(db: Path) -> None:
    db.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)


# --- a lost store ------------------------------------------------------------------------------------------


def test_first_run_creates_store_key_and_marker(open_store: Opener, tmp_path: Path) -> None:
    """A genuine first run creates the store, its key file and its marker, all 0600 in a 0700 folder."""
    old = os.umask(0o000)  # a careless umask must not loosen any of them
    try:
        open_store().check()
    finally:
        os.umask(old)
    folder = tmp_path / "state"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert {p.name for p in folder.iterdir()} >= {"store.db", "master.key", "store.db.marker"}
    assert not (folder / "store.db.creating").exists()
    for entry in folder.iterdir():
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600, entry.name


@pytest.mark.parametrize("how", ["emptied", "deleted", "zero-page database"])
def test_lost_store_is_refused_and_nothing_is_written(open_store: Opener, tmp_path: Path, how: str) -> None:
    """Emptied (`: > store.db`, -wal/-shm removed), deleted or replaced by an empty database: exit 4, and
    the folder is byte-for-byte unchanged afterwards."""
    _populate(open_store)
    db = tmp_path / "state" / "store.db"
    _empty(db)
    if how == "deleted":
        db.unlink()
    elif how == "zero-page database":
        import sqlite3

        sqlite3.connect(db).execute("PRAGMA user_version = 7").connection.close()
    before = _snapshot(db.parent)
    with pytest.raises(BackendUnavailable, match="values are lost; refusing to create a new store") as caught:
        open_store().read(SecretRef(name="a", path="a"))
    assert caught.value.exit_code == 4
    assert caught.value.hint is not None
    assert "move store.db.marker and master.key aside" in caught.value.hint
    assert _snapshot(db.parent) == before


def test_lost_store_with_key_from_environment_is_refused(
    open_store: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ROTATOR_MASTER_KEY (no key file) the marker alone proves the store existed."""
    import base64

    monkeypatch.setenv(MASTER_KEY_ENV, base64.b64encode(os.urandom(32)).decode())
    _populate(open_store)
    assert not (tmp_path / "state" / "master.key").exists()
    _empty(tmp_path / "state" / "store.db")
    with pytest.raises(BackendUnavailable, match=r"its marker store\.db\.marker is still there"):
        open_store().check()


def test_lost_store_of_an_older_version_is_refused_by_its_key_file(open_store: Opener, tmp_path: Path) -> None:
    """A store made before markers existed: its default key file is the evidence."""
    _populate(open_store)
    (tmp_path / "state" / "store.db.marker").unlink()
    _empty(tmp_path / "state" / "store.db")
    with pytest.raises(BackendUnavailable, match=r"its key file master\.key is still there"):
        open_store().check()


def test_older_store_gets_a_marker_on_first_open(open_store: Opener, tmp_path: Path) -> None:
    """A populated store without marker or store id (older versions) is adopted: both are written."""
    _populate(open_store)
    import sqlite3

    db = tmp_path / "state" / "store.db"
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM meta WHERE key = 'store_id'")
    conn.commit()
    conn.close()
    (tmp_path / "state" / "store.db.marker").unlink()
    assert open_store().read(SecretRef(name="a", path="a")) is not None
    assert (tmp_path / "state" / "store.db.marker").exists()
    _empty(db)
    with pytest.raises(BackendUnavailable, match="values are lost"):
        open_store().check()


def test_swapped_store_is_refused(open_store: Opener, tmp_path: Path) -> None:
    """Another store copied over this one (a different store id than the marker's) is refused."""
    _populate(open_store)
    open_store(path="other/store.db").check()
    own, other = tmp_path / "state", tmp_path / "other"
    (own / "store.db").write_bytes((other / "store.db").read_bytes())
    (own / "master.key").write_bytes((other / "master.key").read_bytes())
    for suffix in ("-wal", "-shm"):
        (own / f"store.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(BackendUnavailable, match=r"is not the store its marker store\.db\.marker names"):
        open_store().check()


def test_deliberate_fresh_start_after_moving_the_marker_and_key(open_store: Opener, tmp_path: Path) -> None:
    """The documented way to start afresh: move the marker and the key aside; then a new store is made."""
    _populate(open_store)
    folder = tmp_path / "state"
    _empty(folder / "store.db")
    for name in ("store.db.marker", "master.key"):
        (folder / name).rename(tmp_path / name)
    fresh = open_store()
    assert fresh.list() == []


def test_interrupted_first_run_is_finished(open_store: Opener, tmp_path: Path) -> None:
    """A first run killed after writing the key file (store still `.creating`) is completed, not refused."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    (folder / "store.db.creating").write_bytes(b"")
    import base64

    (folder / "master.key").write_bytes(base64.b64encode(os.urandom(32)) + b"\n")
    (folder / "master.key").chmod(0o600)
    open_store().check()
    assert not (folder / "store.db.creating").exists()
    assert (folder / "store.db.marker").exists()


# --- planted links and special files ----------------------------------------------------------------------


@pytest.mark.parametrize("target", ["dangling", "empty file"])
def test_symlink_at_store_path_is_refused(open_store: Opener, tmp_path: Path, target: str) -> None:
    """A symlink at the store path (dangling, or to an empty file) is refused; nothing is created there."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere.db"
    if target == "empty file":
        elsewhere.write_bytes(b"")
    (folder / "store.db").symlink_to(elsewhere)
    with pytest.raises(BackendUnavailable, match=r"store\.db is a symbolic link"):
        open_store().check()
    assert elsewhere.exists() == (target == "empty file")
    if elsewhere.exists():
        assert elsewhere.read_bytes() == b""
    assert not (folder / "master.key").exists()


@pytest.mark.parametrize("name", ["store.db-wal", "store.db-shm", "master.key", "store.db.marker"])
def test_symlink_beside_the_store_is_refused(open_store: Opener, tmp_path: Path, name: str) -> None:
    """A planted link at the WAL, shared-memory, key or marker path of an existing store is refused."""
    _populate(open_store)
    folder = tmp_path / "state"
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BackendUnavailable, match="is a symbolic link"):
        open_store().check()
    assert not (tmp_path / "elsewhere").exists()


def test_fifo_at_store_path_is_refused(open_store: Opener, tmp_path: Path) -> None:
    """A FIFO at the store path is refused at once (not opened, so nothing hangs)."""
    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    os.mkfifo(folder / "store.db")
    with pytest.raises(BackendUnavailable, match=r"store\.db is a FIFO"):
        open_store().check()


def test_foreign_writable_folder_is_refused(tmp_path: Path) -> None:
    """A group/world-writable folder owned by someone else (like /tmp) could hold planted files: refused,
    and nothing is created in it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    if os.geteuid() == 0:
        os.chown(shared, 12345, 12345)  # root can make it someone else's
    else:
        shared = Path("/tmp")
    provider = LocalProvider(name="local", config=LocalConfig(path=str(shared / "rotator-refused.db")),
                             base_dir=tmp_path)
    with pytest.raises(BackendUnavailable, match="is writable by others") as caught:
        provider.check()
    assert caught.value.hint is not None
    assert "folder of their own" in caught.value.hint
    assert not (shared / "rotator-refused.db").exists()
    assert not (shared / "master.key").exists()


def test_key_file_readable_by_others_is_refused(open_store: Opener, tmp_path: Path) -> None:
    """A master key file others can read or write is refused with the chmod hint."""
    _populate(open_store)
    key = tmp_path / "state" / "master.key"
    key.chmod(0o644)
    with pytest.raises(BackendUnavailable, match="is open to others") as caught:
        open_store().check()
    assert caught.value.hint is not None
    assert "chmod 600" in caught.value.hint


def test_loose_store_mode_is_tightened(open_store: Opener, tmp_path: Path) -> None:
    """An existing store of ours with a loose mode is made 0600 again when opened."""
    _populate(open_store)
    db = tmp_path / "state" / "store.db"
    db.chmod(0o644)
    open_store().check()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


# --- through the CLI ---------------------------------------------------------------------------------------


def test_cli_emptied_store_exits_4_and_recreates_nothing(workspace: Workspace) -> None:
    """The reported attack: `: > store.db` and -wal/-shm removed, then `status` and `run` exit 4 with one
    line naming the store; no secret is re-created."""
    workspace.write_manifest(MANIFEST)
    assert workspace.cli("run").code == 0
    folder = workspace.root / ".rotator"
    workspace.extra_values += workspace.store_values()  # the canary scan still looks for them
    _empty(folder / "store.db")
    before = _snapshot(folder)
    for command in (["status"], ["run"]):
        result = workspace.cli(*command)
        assert result.code == 4, (command, result.out, result.err)
        assert "values are lost; refusing to create a new store" in result.err
        assert str(folder / "store.db") in result.err
        assert "created" not in result.out
    assert _snapshot(folder) == before
    assert (folder / "store.db").read_bytes() == b""
    (folder / "store.db").unlink()  # let the teardown scan open the folder again
    for name in ("store.db.marker", "master.key"):
        (folder / name).rename(workspace.root / f"{name}.moved")


def test_cli_fresh_clone_still_just_runs(workspace: Workspace) -> None:
    """A first `run` on a fresh folder needs nothing beforehand (the `make run` experience)."""
    workspace.write_manifest(MANIFEST)
    result = workspace.cli("run")
    assert result.code == 0, result.err
    assert "2 created" in result.out
    assert (workspace.root / ".rotator" / "store.db.marker").exists()


def test_first_run_over_an_empty_database_with_stale_wal(open_store: Opener, tmp_path: Path) -> None:
    """With no marker and no key file, an empty WAL-mode database (and its -wal/-shm) is replaced cleanly."""
    import sqlite3

    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    db = folder / "store.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    holder = sqlite3.connect(db)  # keeps the -wal and -shm files in place
    holder.execute("PRAGMA user_version").fetchone()
    provider = open_store()
    provider.create(SecretRef(name="a", path="a"), make_version(State.CURRENT), {})
    provider.close()
    holder.close()
    conn.close()
    stored = open_store().read(SecretRef(name="a", path="a"))
    assert stored is not None
    assert stored.current is not None
