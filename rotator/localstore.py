"""The embedded default backend: every keyset in one SQLite file, values sealed with AES-256-GCM.

Layout of the file (WAL mode, mode 0600, directory 0700)::

    keysets(path TEXT PRIMARY KEY, revision INTEGER, doc TEXT)   one row per secret, keyed by its path
    meta(key TEXT PRIMARY KEY, value TEXT)                       'keycheck' (proves the master key fits),
                                                                 'store_id' (matches the marker file)

``doc`` is JSON ``{"format": 2, "name", "meta", "versions": [version_to_json(v) + {"nonce", "ct"}]}``. Each
value is encrypted with a fresh 12-byte nonce and associated data ``"rotator row v2\\0" + row key + "\\0" +
version id``, so a ciphertext (or a whole row) moved to another secret or version fails to decrypt. Rows
written before format 2 (associated data ``name + "\\0" + version id``) are accepted only when the name inside
is the secret's own, and are re-sealed in place on that first read. Every step is one ``BEGIN IMMEDIATE``
transaction whose write is conditional on the revision that was read (compare-and-set), so daemons, CronJobs
and the CLI can share the file; ``synchronous=FULL`` makes a committed step survive power loss.

The master key is ``ROTATOR_MASTER_KEY`` (base64 of 32 bytes) or a key file created on the first run with
mode 0600 (``master.key`` beside the store by default). A key that does not fit the store is refused before
anything is read or written. How the files are opened, and why a lost store is an error rather than a new
store, is in :mod:`rotator._storefile`.
"""

from __future__ import annotations

import base64
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

from rotator._paths import require_canonical
from rotator._storefile import MASTER_KEY_ENV, StoreFiles, read_meta
from rotator.errors import BackendUnavailable, ConflictError
from rotator.keyset import Keyset, SecretValue, version_from_json, version_to_json
from rotator.provider import DocumentProvider, SecretRef
from rotator.target import Capability

__all__ = ["MASTER_KEY_ENV", "LocalConfig", "LocalProvider"]

_BUSY_TIMEOUT = 30.0  # seconds; several processes write the same file
_ROW_FORMAT = 2  # 1: associated data "name\0version id" (before 0.2); 2: bound to the row key, see _associated
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
    """A value and its ciphertext under the row's associated data (row key, version id); reused while the
    value stays."""

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
        self._files = StoreFiles(self.path, self.key_path, default_key=not key_file)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._conns: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._aead: AESGCM | None = None
        self._sealed: dict[str, dict[str, _Sealed]] = {}  # path -> version id -> sealed value

    def __repr__(self) -> str:
        return f"LocalProvider(name={self.name!r}, path={str(self.path)!r})"

    # --- Provider ----------------------------------------------------------------------------------------

    def read(self, ref: SecretRef) -> Keyset | None:
        require_canonical(ref.path, ref.name, f"local store {self.path}")
        conn, aead = self._conn()
        try:
            row = conn.execute("SELECT revision, doc FROM keysets WHERE path = ?", (ref.path,)).fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(f"cannot read {ref.name}", exc) from exc
        if row is None:
            return None
        try:
            doc = json.loads(row[1])
            keyset, sealed = self._decode(ref, str(row[0]), doc, aead)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                f"local store {self.path}: the keyset of {ref.name} at {ref.path} is corrupt "
                f"({type(exc).__name__})"
            ) from exc
        if doc.get("format", 1) != _ROW_FORMAT:
            self._migrate(conn, ref, row, doc, sealed, aead)
        else:
            self._sealed[ref.path] = sealed
        return keyset

    def _decode(self, ref: SecretRef, revision: str, doc: dict[str, Any],
                aead: AESGCM) -> tuple[Keyset, dict[str, _Sealed]]:
        """The keyset in a row's document, each value authenticated against the row it was read from."""
        name, meta, row_format = str(doc["name"]), dict(doc["meta"]), doc.get("format", 1)
        if row_format not in (1, _ROW_FORMAT):
            raise ValueError(f"row format {row_format} is newer than this rotator")
        if row_format == 1 and name != ref.name:  # old rows bind the name inside: it must be this secret's
            raise BackendUnavailable(
                f"cannot decrypt store: the row of {ref.name} at {ref.path} holds the keyset of '{name}' "
                f"({self.path})",
                hint="the row was copied from another secret; restore it from backup", transient=False)
        known = self._sealed.get(ref.path, {})
        sealed: dict[str, _Sealed] = {}
        versions = []
        for entry in doc["versions"]:
            value = None
            if "ct" in entry:
                item = _Sealed("", entry["nonce"], entry["ct"])
                cached = known.get(entry["id"]) if row_format == _ROW_FORMAT else None
                if cached is not None and cached._replace(value="") == item:
                    item = cached  # same ciphertext as last time: skip decrypting it again
                else:
                    ad = _associated(ref.path, str(entry["id"])) if row_format == _ROW_FORMAT else (
                        _associated_v1(name, str(entry["id"])))
                    item = item._replace(value=self._open(aead, ref, ad, entry))
                sealed[entry["id"]] = item
                value = SecretValue(item.value)
            versions.append(version_from_json(entry, value))
        return Keyset(name=ref.name, revision=revision, versions=tuple(versions), meta=meta), sealed

    def _migrate(self, conn: sqlite3.Connection, ref: SecretRef, row: tuple[Any, ...], doc: dict[str, Any],
                 opened: dict[str, _Sealed], aead: AESGCM) -> None:
        """Re-seal an old-format row under its row key, in place (same revision, only if unchanged)."""
        sealed: dict[str, _Sealed] = {}
        for entry in doc["versions"]:
            if entry["id"] in opened:
                nonce = os.urandom(12)
                plain = opened[entry["id"]].value
                ct = aead.encrypt(nonce, plain.encode(), _associated(ref.path, str(entry["id"])))
                sealed[entry["id"]] = _Sealed(plain, _b64(nonce), _b64(ct))
                entry["nonce"], entry["ct"] = sealed[entry["id"]].nonce, sealed[entry["id"]].ct
        doc["format"] = _ROW_FORMAT
        try:
            conn.execute("UPDATE keysets SET doc = ? WHERE path = ? AND revision = ? AND doc = ?",
                         (json.dumps(doc, separators=_COMPACT), ref.path, row[0], row[1]))
        except sqlite3.Error:
            return  # read-only or busy: the old row stays readable and is migrated by a later read
        self._sealed.pop(ref.path, None)  # a concurrent writer may have won; the next read caches afresh

    def write(self, ref: SecretRef, expected: Keyset | None, new: Keyset) -> Keyset:
        """One ``BEGIN IMMEDIATE`` transaction: write the row only if its revision is still ``expected``'s."""
        require_canonical(ref.path, ref.name, f"local store {self.path}")
        conn, aead = self._conn()
        known = self._sealed.get(ref.path, {})
        sealed: dict[str, _Sealed] = {}
        entries = []
        for version in new.versions:
            entry = version_to_json(version)
            if version.value is not None:
                plain = version.value.reveal()
                item = known.get(version.id)
                if item is None or not hmac.compare_digest(item.value, plain):
                    nonce = os.urandom(12)
                    ct = aead.encrypt(nonce, plain.encode(), _associated(ref.path, version.id))
                    item = _Sealed(plain, _b64(nonce), _b64(ct))
                sealed[version.id] = item
                entry["nonce"], entry["ct"] = item.nonce, item.ct
            entries.append(entry)
        body = {"format": _ROW_FORMAT, "name": new.name, "meta": dict(new.meta), "versions": entries}
        doc = json.dumps(body, separators=_COMPACT)
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
            self._files.verify_key(aead, read_meta(conn, "keycheck"))
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

    # --- connections ---------------------------------------------------------------------------------------

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
                conn = self._files.connect()
            for thread, old in [pair for pair in self._conns if not pair[0].is_alive()]:
                old.close()  # its thread has ended, so nothing else can be using it
                self._conns.remove((thread, old))
            self._conns.append((threading.current_thread(), conn))
            local.conn = conn
            return conn, self._aead

    def _open_store(self) -> tuple[sqlite3.Connection, AESGCM]:
        """Open the store (a first run creates it, see rotator._storefile) and switch it to WAL."""
        conn, key = self._files.open()
        try:
            self._use_wal(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._unavailable("cannot open", exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn, AESGCM(key)

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

    # --- helpers -----------------------------------------------------------------------------------------

    def _open(self, aead: AESGCM, ref: SecretRef, associated: bytes, entry: dict[str, Any]) -> str:
        """Decrypt one stored value; a failed tag means tampering, a copied row or a wrong key."""
        version_id = str(entry["id"])
        try:
            nonce, ct = base64.b64decode(entry["nonce"]), base64.b64decode(entry["ct"])
            return aead.decrypt(nonce, ct, associated).decode()
        except (InvalidTag, ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                f"cannot decrypt store: version {version_id} of {ref.name} fails authentication "
                f"({self.path})",
                hint="the row was altered or copied from another secret or version; restore it from backup",
                transient=False,
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


def _associated(row_key: str, version_id: str) -> bytes:
    """Row format 2: a ciphertext is bound to the row (the secret's path) and the version it belongs to."""
    return f"rotator row v2\0{row_key}\0{version_id}".encode()


def _associated_v1(name: str, version_id: str) -> bytes:
    """Row format 1 (read and migrated only): bound to the name inside the document."""
    return f"{name}\0{version_id}".encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
