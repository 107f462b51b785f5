"""Opening the local store's files: the SQLite database, its master key, and the marker that says it exists.

A store is created only by a first run, never as a fallback. The first run builds the database as
``<store>.creating`` (schema, key check, a random store id), renames it into place and then writes the marker
``<store>.marker`` holding the same store id, all under an ``flock`` of the folder (racing first runs agree).
Afterwards, a store that is missing, emptied or replaced while its marker or its default key file
(``master.key`` beside it) is still there is refused: it means the values were lost, and silently creating new
ones would hide that. Refusals write nothing.

A first run that crashed after writing the key file but before the rename leaves ``<store>.creating``:
the next run finishes it with that key instead of refusing.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hmac
import json
import os
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from rotator._files import UnsafePath, check_folder, fsync_folder, inspect, open_private, write_atomic
from rotator.errors import BackendUnavailable

__all__ = ["MASTER_KEY_ENV", "StoreFiles", "decode_key", "read_meta"]

MASTER_KEY_ENV = "ROTATOR_MASTER_KEY"
KEYCHECK = b"rotator keycheck v1"
KEYCHECK_AD = b"rotator\0keycheck"
_KEY_HINT = "generate one with: python -c 'import base64,os;print(base64.b64encode(os.urandom(32)).decode())'"
_WRONG_KEY_HINT = f"set {MASTER_KEY_ENV} (or master_key_file) to the key this store was created with"
_KEY_FILE_WAIT = 2.0  # seconds to wait for another process to finish writing a new key file
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keysets (path TEXT PRIMARY KEY, revision INTEGER NOT NULL, doc TEXT)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class StoreFiles:
    """The paths of one local store and how to open it; every failure is a BackendUnavailable (exit 4)."""

    def __init__(self, path: Path, key_path: Path, *, default_key: bool) -> None:
        self.path, self.key_path, self.default_key = path, key_path, default_key
        self.marker = path.with_name(path.name + ".marker")
        self.creating = path.with_name(path.name + ".creating")

    # --- opening -----------------------------------------------------------------------------------------

    def open(self) -> tuple[sqlite3.Connection, bytes]:
        """A connection to the store and its proven master key; creates the store only on a first run."""
        folder = self.path.parent
        try:
            if not folder.exists():
                folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_folder(folder, "local store folder")
            opened = self._open_existing()
            if opened is None:
                with _FolderLock(folder):
                    opened = self._open_existing() or self._first_run()
        except UnsafePath as exc:
            raise BackendUnavailable(f"local store: {exc.message}", hint=exc.hint, transient=False) from exc
        except OSError as exc:
            raise BackendUnavailable(f"cannot create local store {self.path}: {exc.strerror}") from exc
        return opened

    def connect(self) -> sqlite3.Connection:
        """A new connection (the caller has checked the paths); never creates the database file."""
        self._check_paths()
        if inspect(self.path, "local store") is None:
            raise BackendUnavailable(f"local store {self.path} has disappeared", transient=False)
        try:
            conn = sqlite3.connect(self.path, 30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"local store {self.path}: cannot open: {exc}") from exc
        return conn

    def _check_paths(self) -> None:
        for suffix in ("-wal", "-shm"):  # SQLite opens these itself and would follow a planted link
            inspect(self.path.with_name(self.path.name + suffix), "local store file")

    def _open_existing(self) -> tuple[sqlite3.Connection, bytes] | None:
        """The store if it holds a key check; None if it is absent or empty (first run, or lost)."""
        self._check_paths()
        st = inspect(self.path, "local store")
        wal = inspect(self.path.with_name(self.path.name + "-wal"), "local store file")
        if st is None or (st.st_size == 0 and (wal is None or wal.st_size == 0)):
            return None
        if st.st_uid != os.geteuid():
            raise BackendUnavailable(f"local store {self.path} is owned by uid {st.st_uid}, not by us "
                                     f"(uid {os.geteuid()})", transient=False)
        if st.st_mode & 0o077:
            fd = open_private(self.path, os.O_RDONLY, "local store")
            try:
                os.fchmod(fd, 0o600)  # ours, so keep it private whatever created it
            finally:
                os.close(fd)
        conn = self.connect()
        try:
            check = read_meta(conn, "keycheck")
            if check is None:
                if _has_tables(conn):
                    raise BackendUnavailable(
                        f"local store {self.path} has no key check: it is not a rotator store or it is damaged",
                        hint="restore it from a backup", transient=False)
                conn.close()
                return None  # an empty database: treated like an empty file
            key = self.master_key(store_exists=True)
            self.verify_key(AESGCM(key), check)
            self._check_marker(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise BackendUnavailable(f"local store {self.path}: cannot open: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn, key

    def _evidence(self) -> str | None:
        """Why a store should already exist here (marker or key file), or None on a genuine first run."""
        if os.path.lexists(self.marker):
            return f"its marker {self.marker.name} is still there"
        if self.default_key and os.path.lexists(self.key_path) and not os.path.lexists(self.creating):
            return f"its key file {self.key_path.name} is still there"
        return None

    def _first_run(self) -> tuple[sqlite3.Connection, bytes]:
        """Create the store (holding the folder lock): key, database as ``.creating``, rename, marker."""
        why = self._evidence()
        if why is not None:
            state = "missing" if not os.path.lexists(self.path) else "empty"
            raise BackendUnavailable(
                f"local store {self.path} is {state} but {why}: its values are lost; refusing to create a new "
                f"store over them",
                hint=f"restore {self.path.name} (and its -wal file) from a backup; to start a new, empty store "
                     f"deliberately, move {self.marker.name} and {self.key_path.name} aside first",
                transient=False)
        self.creating.unlink(missing_ok=True)
        os.close(open_private(self.creating, os.O_WRONLY | os.O_CREAT | os.O_EXCL, "new local store"))
        key = self.master_key(store_exists=False)
        store_id = uuid.uuid4().hex
        conn = sqlite3.connect(self.creating, 30.0, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            nonce = os.urandom(12)
            sealed = AESGCM(key).encrypt(nonce, KEYCHECK, KEYCHECK_AD)
            check = json.dumps({"nonce": _b64(nonce), "ct": _b64(sealed)})
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                             [("keycheck", check), ("store_id", store_id)])
            conn.execute("COMMIT")
        finally:
            conn.close()
        inspect(self.path, "local store")  # an empty file may be replaced; a planted link may not
        for suffix in ("-wal", "-shm"):  # left by an empty database: they would not match the new file
            self.path.with_name(self.path.name + suffix).unlink(missing_ok=True)
        os.replace(self.creating, self.path)
        fsync_folder(self.path.parent)
        self._write_marker(store_id)
        return self.connect(), key

    def verify_key(self, aead: AESGCM, check: str | None) -> None:
        """Prove the cipher's key is the one the store was created with (before anything else is read)."""
        try:
            data = json.loads(check or "")
            plain = aead.decrypt(base64.b64decode(data["nonce"]), base64.b64decode(data["ct"]),
                                        KEYCHECK_AD)
        except InvalidTag as exc:
            raise self._wrong_key() from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(f"local store {self.path}: the key check record is corrupt",
                                     transient=False) from exc
        if not hmac.compare_digest(plain, KEYCHECK):
            raise self._wrong_key()

    def _wrong_key(self) -> BackendUnavailable:
        return BackendUnavailable(f"cannot decrypt store: wrong master key ({self.path})", hint=_WRONG_KEY_HINT,
                                  transient=False)

    # --- marker ------------------------------------------------------------------------------------------

    def _check_marker(self, conn: sqlite3.Connection) -> None:
        """The marker must name this store's id; a store without either (older versions) gets both."""
        store_id = read_meta(conn, "store_id")
        if store_id is None:
            store_id = uuid.uuid4().hex
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (store_id,))
            store_id = read_meta(conn, "store_id") or store_id
        st = inspect(self.marker, "local store marker")
        if st is None:
            self._write_marker(store_id)
            return
        fd = open_private(self.marker, os.O_RDONLY, "local store marker")
        try:
            raw = os.read(fd, 4096)
        finally:
            os.close(fd)
        try:
            marked = str(json.loads(raw)["store_id"])
        except (ValueError, KeyError, TypeError):
            marked = "(unreadable)"
        if marked != store_id:
            raise BackendUnavailable(
                f"local store {self.path} is not the store its marker {self.marker.name} names "
                f"(store id {store_id}, marker {marked}): the store was replaced",
                hint=f"put the right {self.path.name} back; to adopt this one deliberately, remove "
                     f"{self.marker.name}", transient=False)

    def _write_marker(self, store_id: str) -> None:
        body = {"store_id": store_id, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "note": "rotator local store marker: while this file exists, a missing or empty store is an error"}
        write_atomic(self.marker, (json.dumps(body) + "\n").encode(), "local store marker", exclusive=True)

    # --- master key --------------------------------------------------------------------------------------

    def master_key(self, *, store_exists: bool) -> bytes:
        """The key from ``ROTATOR_MASTER_KEY``, else the key file (created race-safely for a new store)."""
        env = os.environ.get(MASTER_KEY_ENV)
        if env is not None:
            return decode_key(env, MASTER_KEY_ENV)
        path = self.key_path
        try:
            found = inspect(path, "master key file")
            if found is not None:
                return self._read_key_file(path)
            if store_exists:
                raise BackendUnavailable(
                    f"cannot decrypt store: master key file {path} is missing but {self.path} already exists",
                    hint=f"restore the key file, or set {MASTER_KEY_ENV} to the key the store was created with",
                    transient=False)
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            check_folder(path.parent, "master key folder")
            key = AESGCM.generate_key(bit_length=256)
            if write_atomic(path, base64.b64encode(key) + b"\n", "master key file", exclusive=True):
                return key
            return self._read_key_file(path)  # another process won the race
        except UnsafePath as exc:
            raise BackendUnavailable(exc.message, hint=exc.hint, transient=False) from exc
        except OSError as exc:
            raise BackendUnavailable(f"cannot create master key file {path}: {exc.strerror}") from exc

    @staticmethod
    def _read_key_file(path: Path) -> bytes:
        """Read a key file (regular, not a link, not writable or readable by others)."""
        deadline = time.monotonic() + _KEY_FILE_WAIT
        while True:
            try:
                fd = open_private(path, os.O_RDONLY, "master key file")
                try:
                    mode = os.fstat(fd).st_mode
                    if mode & 0o026:
                        raise BackendUnavailable(
                            f"master key file {path} is open to others (mode {mode & 0o777:04o})",
                            hint=f"chmod 600 {path}, and treat the key as leaked if others could read it",
                            transient=False)
                    text = os.read(fd, 4096).decode("ascii", errors="replace")
                finally:
                    os.close(fd)
            except UnsafePath as exc:
                raise BackendUnavailable(exc.message, hint=exc.hint, transient=False) from exc
            except OSError as exc:
                raise BackendUnavailable(f"cannot read master key file {path}: {exc.strerror}") from exc
            try:
                return decode_key(text, f"master key file {path}")
            except BackendUnavailable:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)


class _FolderLock:
    """An exclusive ``flock`` on a folder, held while a first run decides and creates."""

    def __init__(self, folder: Path) -> None:
        self.fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)

    def __enter__(self) -> _FolderLock:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self.fd)  # releases the lock


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """A ``meta`` value; None when absent or when the table does not exist yet."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return None if row is None else str(row[0])


def _has_tables(conn: sqlite3.Connection) -> bool:
    return bool(conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_key(text: str, source: str) -> bytes:
    """Decode a base64 master key; errors name the source, never the text."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BackendUnavailable(
            f"{source} is not valid base64; it must hold the base64 encoding of 32 random bytes",
            hint=_KEY_HINT, transient=False,
        ) from exc
    if len(key) != 32:
        raise BackendUnavailable(f"{source} decodes to {len(key)} bytes, not 32", hint=_KEY_HINT,
                                 transient=False)
    return key
