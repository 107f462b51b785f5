"""The embedded default backend: every keyset in one SQLite file, values sealed with AES-256-GCM.

Layout of the file (WAL mode, mode 0600, directory 0700)::

    keysets(path TEXT PRIMARY KEY, revision INTEGER, doc TEXT)   one row per secret
    meta(key TEXT PRIMARY KEY, value TEXT)                       'keycheck': proves the master key fits

``doc`` is JSON ``{"name", "meta", "versions": [version_to_json(v) + {"nonce", "ct"}]}``. Each value is
encrypted with a fresh 12-byte nonce and associated data ``name + "\\0" + version id``, so a ciphertext moved
to another secret or version fails to decrypt. Every step is one ``BEGIN IMMEDIATE`` transaction whose write
is conditional on the revision that was read (compare-and-set), so daemons, CronJobs and the CLI can share
the file; ``synchronous=FULL`` makes a committed step survive power loss.

The master key is ``ROTATOR_MASTER_KEY`` (base64 of 32 bytes) or a key file created on first use with mode
0600 (``master.key`` beside the store by default). A key that does not fit the store is refused before
anything is read or written.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict

from rotator.errors import BackendUnavailable, ConflictError
from rotator.keyset import Keyset, SecretValue, version_from_json, version_to_json
from rotator.provider import DocumentProvider, SecretRef
from rotator.target import Capability

__all__ = ["MASTER_KEY_ENV", "LocalConfig", "LocalProvider"]

MASTER_KEY_ENV = "ROTATOR_MASTER_KEY"
_KEY_HINT = "generate one with: python -c 'import base64,os;print(base64.b64encode(os.urandom(32)).decode())'"
_WRONG_KEY_HINT = f"set {MASTER_KEY_ENV} (or master_key_file) to the key this store was created with"
_BUSY_TIMEOUT = 30.0  # seconds; several processes write the same file
_KEY_FILE_WAIT = 2.0  # seconds to wait for another process to finish writing a new key file
_KEYCHECK = b"rotator keycheck v1"
_KEYCHECK_AD = b"rotator\0keycheck"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keysets (path TEXT PRIMARY KEY, revision INTEGER NOT NULL, doc TEXT)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_COMPACT = (",", ":")
_INSERT = "INSERT INTO keysets (path, revision, doc) VALUES (?, 1, ?) ON CONFLICT (path) DO NOTHING"
_UPDATE = "UPDATE keysets SET revision = ?, doc = ? WHERE path = ? AND revision = ?"


class LocalConfig(BaseModel):
    """Manifest configuration of the ``local`` provider; relative paths resolve in the manifest's folder."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["local"] = "local"
    path: str = ".rotator/store.db"
    master_key_file: str | None = None  # default: master.key next to the store


class _Sealed(NamedTuple):
    """A value and its ciphertext under associated data (name, version id); reused while both stay."""

    name: str
    value: str
    nonce: str
    ct: str


class LocalProvider(DocumentProvider):
    """Keysets in an encrypted SQLite file; one connection per thread, nothing opened until first use."""

    type_name: ClassVar[str] = "local"
    config_model: ClassVar[type[BaseModel]] = LocalConfig
    capabilities: ClassVar[frozenset[Capability]] = frozenset({
        Capability.MULTI_PREVIOUS,
        Capability.NO_RETRY,  # local failures are not fixed by waiting
    })

    def __init__(self, *, name: str, config: LocalConfig, base_dir: Path) -> None:
        self.name = name
        self.config = config
        self.path = base_dir / Path(config.path).expanduser()
        key_file = config.master_key_file
        default_key = self.path.parent / "master.key"
        self.key_path = base_dir / Path(key_file).expanduser() if key_file else default_key
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._aead: AESGCM | None = None
        self._sealed: dict[str, dict[str, _Sealed]] = {}  # path -> version id -> sealed value

    def __repr__(self) -> str:
        return f"LocalProvider(name={self.name!r}, path={str(self.path)!r})"

    # --- Provider ----------------------------------------------------------------------------------------

    def read(self, ref: SecretRef) -> Keyset | None:
        conn, aead = self._conn()
        try:
            row = conn.execute("SELECT revision, doc FROM keysets WHERE path = ?", (ref.path,)).fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(f"cannot read {ref.name}", exc) from exc
        if row is None:
            return None
        known = self._sealed.get(ref.path, {})
        sealed: dict[str, _Sealed] = {}
        versions = []
        try:
            doc = json.loads(row[1])
            name, meta = str(doc["name"]), dict(doc["meta"])
            for entry in doc["versions"]:
                value = None
                if "ct" in entry:
                    item = _Sealed(name, "", entry["nonce"], entry["ct"])
                    cached = known.get(entry["id"])
                    if cached is not None and cached._replace(value="") == item:
                        item = cached  # same ciphertext as last time: skip decrypting it again
                    else:
                        item = item._replace(value=self._open(aead, ref, name, entry))
                    sealed[entry["id"]] = item
                    value = SecretValue(item.value)
                versions.append(version_from_json(entry, value))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                f"local store {self.path}: the keyset of {ref.name} at {ref.path} is corrupt "
                f"({type(exc).__name__})"
            ) from exc
        self._sealed[ref.path] = sealed
        return Keyset(name=ref.name, revision=str(row[0]), versions=tuple(versions), meta=meta)

    def write(self, ref: SecretRef, expected: Keyset | None, new: Keyset) -> Keyset:
        """One ``BEGIN IMMEDIATE`` transaction: write the row only if its revision is still ``expected``'s."""
        conn, aead = self._conn()
        known = self._sealed.get(ref.path, {})
        sealed: dict[str, _Sealed] = {}
        entries = []
        for version in new.versions:
            entry = version_to_json(version)
            if version.value is not None:
                plain = version.value.reveal()
                item = known.get(version.id)
                if item is None or item.name != new.name or not hmac.compare_digest(item.value, plain):
                    nonce = os.urandom(12)
                    ct = aead.encrypt(nonce, plain.encode(), _associated(new.name, version.id))
                    item = _Sealed(new.name, plain, _b64(nonce), _b64(ct))
                sealed[version.id] = item
                entry["nonce"], entry["ct"] = item.nonce, item.ct
            entries.append(entry)
        doc = json.dumps({"name": new.name, "meta": dict(new.meta), "versions": entries}, separators=_COMPACT)
        revision = self._cas(conn, ref, expected, doc)
        self._sealed[ref.path] = sealed
        return new.replace(revision=str(revision), managed=True)

    def list(self) -> list[str]:
        conn, _ = self._conn()
        try:
            return [row[0] for row in conn.execute("SELECT path FROM keysets ORDER BY path")]
        except sqlite3.Error as exc:
            raise self._unavailable("cannot list keysets", exc) from exc

    def check(self) -> None:
        """Open the store (creating it if new) and prove the master key decrypts it."""
        conn, aead = self._conn()
        try:
            self._verify_key(aead, self._read_keycheck(conn))
        except sqlite3.Error as exc:
            raise self._unavailable("cannot read the key check", exc) from exc

    def close(self) -> None:
        """Close every thread's connection; the next call opens the store again."""
        with self._lock:
            for _, conn in self._conns:
                conn.close()
            self._conns.clear()
            self._local = threading.local()
            self._aead = None
            self._sealed.clear()

    # --- connections and the key check -------------------------------------------------------------------

    def _conn(self) -> tuple[sqlite3.Connection, AESGCM]:
        """This thread's connection (opened, and the store checked, on first use) and the cipher."""
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        aead = self._aead
        if conn is not None and aead is not None:
            return conn, aead
        with self._lock:
            if self._aead is None:
                conn, self._aead = self._open_store()
            else:
                conn = self._connect()
            for thread, old in [pair for pair in self._conns if not pair[0].is_alive()]:
                old.close()  # its thread has ended, so nothing else can be using it
                self._conns.remove((thread, old))
            self._conns.append((threading.current_thread(), conn))
            local.conn = conn
            return conn, self._aead

    def _connect(self) -> sqlite3.Connection:
        """A new connection; closed by :meth:`close` or once its thread has ended."""
        try:
            conn = sqlite3.connect(self.path, _BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise self._unavailable("cannot open", exc) from exc
        return conn

    def _open_store(self) -> tuple[sqlite3.Connection, AESGCM]:
        """Create the file (0600) and schema if new, load the master key and prove it fits the store."""
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise BackendUnavailable(f"cannot create local store {self.path}: {exc.strerror}") from exc
        conn = self._connect()
        try:
            self._use_wal(conn)
            check = self._read_keycheck(conn)
            aead = AESGCM(self._master_key(store_exists=check is not None))
            if check is None:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    nonce = os.urandom(12)
                    sealed = aead.encrypt(nonce, _KEYCHECK, _KEYCHECK_AD)
                    value = json.dumps({"nonce": _b64(nonce), "ct": _b64(sealed)})
                    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('keycheck', ?)", (value,))
                    conn.execute("COMMIT")
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                check = self._read_keycheck(conn)
            self._verify_key(aead, check)
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable("cannot open", exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn, aead

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL (persistent). Retried: the switch fails at once, ignoring the busy timeout, while
        another process is opening or closing the same file."""
        deadline = time.monotonic() + _BUSY_TIMEOUT
        while True:
            try:
                mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)
        if mode.lower() != "wal":
            hint = "keep the store on a local filesystem (not NFS/SMB)"
            raise BackendUnavailable(f"local store {self.path}: cannot use WAL mode (got {mode})", hint=hint)

    @staticmethod
    def _read_keycheck(conn: sqlite3.Connection) -> str | None:
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'keycheck'").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return None if row is None else str(row[0])

    def _verify_key(self, aead: AESGCM, check: str | None) -> None:
        try:
            data = json.loads(check or "")
            plain = aead.decrypt(base64.b64decode(data["nonce"]), base64.b64decode(data["ct"]), _KEYCHECK_AD)
        except InvalidTag as exc:
            raise self._wrong_key() from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(f"local store {self.path}: the key check record is corrupt") from exc
        if not hmac.compare_digest(plain, _KEYCHECK):
            raise self._wrong_key()

    def _wrong_key(self) -> BackendUnavailable:
        message = f"cannot decrypt store: wrong master key ({self.path})"
        return BackendUnavailable(message, hint=_WRONG_KEY_HINT)

    # --- master key --------------------------------------------------------------------------------------

    def _master_key(self, *, store_exists: bool) -> bytes:
        """The key from ``ROTATOR_MASTER_KEY``, else the key file (created race-safely for a new store)."""
        env = os.environ.get(MASTER_KEY_ENV)
        if env is not None:
            return _decode_key(env, MASTER_KEY_ENV)
        path = self.key_path
        if store_exists and not path.exists():
            raise BackendUnavailable(
                f"cannot decrypt store: master key file {path} is missing but {self.path} already exists",
                hint=f"restore the key file, or set {MASTER_KEY_ENV} to the key the store was created with",
            )
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return self._read_key_file(path)
        except OSError as exc:
            raise BackendUnavailable(f"cannot create master key file {path}: {exc.strerror}") from exc
        key = AESGCM.generate_key(bit_length=256)
        try:
            os.write(fd, base64.b64encode(key) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return key

    @staticmethod
    def _read_key_file(path: Path) -> bytes:
        """Read a key file, waiting briefly if another process has just created it and is still writing."""
        deadline = time.monotonic() + _KEY_FILE_WAIT
        while True:
            try:
                text = path.read_bytes().decode("ascii", errors="replace")
            except OSError as exc:
                raise BackendUnavailable(f"cannot read master key file {path}: {exc.strerror}") from exc
            try:
                return _decode_key(text, f"master key file {path}")
            except BackendUnavailable:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.01)

    # --- helpers -----------------------------------------------------------------------------------------

    def _open(self, aead: AESGCM, ref: SecretRef, name: str, entry: dict[str, Any]) -> str:
        """Decrypt one stored value; a failed tag means tampering, a copied row or a wrong key."""
        version_id = str(entry["id"])
        try:
            nonce, ct = base64.b64decode(entry["nonce"]), base64.b64decode(entry["ct"])
            return aead.decrypt(nonce, ct, _associated(name, version_id)).decode()
        except (InvalidTag, ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                f"cannot decrypt store: version {version_id} of {ref.name} fails authentication "
                f"({self.path})",
                hint="the row was altered or copied from another secret or version; restore it from backup",
            ) from exc

    def _cas(self, conn: sqlite3.Connection, ref: SecretRef, expected: Keyset | None, doc: str) -> int:
        """Write ``doc`` if the row's revision is ``expected``'s (absent when None); the new revision."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if expected is None:
                    revision, changed = 1, conn.execute(_INSERT, (ref.path, doc)).rowcount
                else:
                    old = int(expected.revision) if expected.revision.isdigit() else 0  # 0: never stored
                    revision = old + 1
                    changed = conn.execute(_UPDATE, (revision, doc, ref.path, old)).rowcount if old else 0
                conn.execute("COMMIT" if changed == 1 else "ROLLBACK")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise self._unavailable(f"cannot write {ref.name}", exc) from exc
        if changed != 1:
            if expected is None:
                raise ConflictError(f"{ref.name}: a keyset already exists at {ref.path} in {self.path}")
            raise ConflictError(
                f"{ref.name}: the keyset changed since revision {expected.revision} was read "
                f"(local store {self.path}, path {ref.path}); re-read and decide"
            )
        return revision

    def _unavailable(self, what: str, exc: sqlite3.Error) -> BackendUnavailable:
        return BackendUnavailable(f"local store {self.path}: {what}: {exc}")


def _associated(name: str, version_id: str) -> bytes:
    return f"{name}\0{version_id}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _decode_key(text: str, source: str) -> bytes:
    """Decode a base64 master key; errors name the source, never the text."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BackendUnavailable(
            f"{source} is not valid base64; it must hold the base64 encoding of 32 random bytes",
            hint=_KEY_HINT,
        ) from exc
    if len(key) != 32:
        raise BackendUnavailable(f"{source} decodes to {len(key)} bytes, not 32", hint=_KEY_HINT)
    return key
