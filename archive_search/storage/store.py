"""An index: a folder with `vectors.faiss` and a write lock, and a catalogue database with the
files, windows, transcripts and meta. The catalogue is `index.sqlite` in the folder (WAL mode)
unless the index was made with a database URL (`db=`, `--db`): then PostgreSQL (any
`postgresql://` URL runs on psycopg) keeps it, and several search servers can share it.

A folder with an outside catalogue remembers it in `catalogue.json`: the URL without its
password (libpq's PGPASSWORD or ~/.pgpass supplies that, or the URL passed again) and the
catalogue's id, which must match, so a folder's vectors are never joined with another
catalogue's rows.

Consistency protocol between the catalogue and FAISS (so a kill at any moment loses nothing
committed and duplicates nothing):

1. A file's rows (file + windows, ids chosen by the writer) are committed in ONE transaction.
2. Only then are its vectors added to the in-memory FAISS index (and removed ones dropped).
3. The FAISS index is saved atomically from time to time and at the end.

So the saved FAISS index only ever holds ids that were committed. After a crash, the catalogue
may hold windows whose vectors were never saved (those files are dropped and re-indexed on the
next run) and FAISS may hold vectors whose rows were deleted (those vectors are removed).
`Store.check(repair=True)` does both; writers run it on open. Readers never repair: they
join search results with the rows they can see, so a search during indexing sees a
consistent snapshot.

One writer at a time: a lock file in the folder (flock) and, on PostgreSQL, a session advisory
lock, so indexers on different machines that share a catalogue exclude each other. Both are
released by the operating system or the server when the writer dies.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from sqlalchemy import create_engine, delete, event, func, select, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from archive_search.errors import (
    CatalogueError,
    IndexCorruptError,
    IndexLockedError,
    IndexMismatchError,
    IndexNotFoundError,
    IndexWriteError,
)
from archive_search.storage import migrations
from archive_search.storage.schema import FileRow, MetaRow, TranscriptRow, WindowRow, WordRow
from archive_search.storage.vectors import ShardedIndex, shard_files, windows_per_hour

DB_NAME = "index.sqlite"
VECTORS_NAME = "vectors.faiss"
LOCK_NAME = "write.lock"
LINK_NAME = "catalogue.json"

ADVISORY_LOCK_SPACE = 0x41534348
"""First key of the PostgreSQL advisory write lock ("ASCH"); the second is the schema's hash, so
catalogues in different schemas of one database do not exclude each other."""

TABLES = ("files", "windows", "transcripts", "words", "meta")


_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
"""OS errors that mean the index folder cannot take more data (not a bug, not a bad file)."""

_SQLITE_WRITE_FAILURES = ("database or disk is full", "readonly database", "disk i/o error")
_POSTGRES_WRITE_FAILURES = frozenset({"53100", "25006"})
"""SQLSTATEs: disk full, read-only transaction (a standby, or default_transaction_read_only)."""


def write_failure(folder: Path, exc: BaseException) -> IndexWriteError | None:
    """An IndexWriteError naming `folder` if `exc` is a failed write of the index (disk full,
    quota, read-only), else None."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        reason = exc.strerror or str(exc)
    elif isinstance(exc, OperationalError) and any(m in str(exc.orig).lower() for m in _SQLITE_WRITE_FAILURES):
        reason = str(exc.orig)
    elif isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in _POSTGRES_WRITE_FAILURES:
        reason = str(exc.orig).strip()
    else:
        return None
    return IndexWriteError(
        f"{folder}: cannot write the index ({reason}); the index as last saved is intact and searchable, "
        "free space and run archive-index again to finish"
    )


def _writes(method):
    """Raise IndexWriteError instead of a raw OSError/database error when the index cannot be written.

    The underlying writes are atomic (one transaction, temp file + rename), so a
    failure here leaves the index as it was before the call."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (OSError, DBAPIError) as exc:
            error = write_failure(self.folder, exc)
            if error is None:
                raise
            raise error from exc

    return wrapper


def path_key(path: str | Path) -> bytes:
    """How a file path is stored: the file system's bytes, so any file name round-trips."""
    return os.fsencode(os.fspath(path))


def path_text(key: bytes) -> str:
    """The stored path as a str (undecodable bytes become surrogate escapes, as os does)."""
    return os.fsdecode(key)


@dataclass(frozen=True)
class IndexSettings:
    """What an index was built with; vectors from other settings are refused, not mixed."""

    model_name: str
    dim: int
    window_scales_s: tuple[float, ...]
    window_hop_fraction: float

    def to_meta(self) -> dict:
        return {
            "model_name": self.model_name,
            "dim": self.dim,
            "window_scales_s": list(self.window_scales_s),
            "window_hop_fraction": self.window_hop_fraction,
        }


@dataclass
class StoredFile:
    """A file's row as change detection needs it."""

    id: int
    path: str
    content_hash: str
    size: int
    mtime: float
    duration: float
    n_windows: int
    transcribed: bool = False


@dataclass(frozen=True)
class StoredWord:
    """A transcript word as stored: token, [start, end) seconds, probability, phonemes
    (space-separated ARPAbet)."""

    token: str
    start: float
    end: float
    probability: float
    phonemes: str


@dataclass(frozen=True)
class Transcript:
    """A file's words and the transcriber that made them."""

    model: str
    words: Sequence[StoredWord]


@dataclass(frozen=True)
class FileWords:
    """Every stored word of one file, in time order, as column arrays (search's transcript channels)."""

    file: str
    starts: np.ndarray
    ends: np.ndarray
    tokens: list[str]
    probabilities: np.ndarray
    phonemes: list[str]


@dataclass
class WindowInfo:
    """A window joined with its file, as search needs it."""

    id: int
    file: str
    start: float
    end: float
    scale: int
    file_duration: float


@dataclass
class CheckReport:
    """Result of a consistency check between rows and vectors."""

    files: int
    windows: int
    vectors: int
    orphan_vectors: int = 0
    """Vectors with no window row (their file was deleted or replaced)."""
    missing_vectors: int = 0
    """Window rows with no vector (indexing was interrupted before the vectors were saved)."""
    untranscribed: int = 0
    """Files without a transcript in an index that keeps transcripts; the next run adds them."""
    dropped_files: list[str] = field(default_factory=list)
    """Files removed from the index by a repair; the next `archive-index` run indexes them again."""
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return self.orphan_vectors == 0 and self.missing_vectors == 0

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "windows": self.windows,
            "vectors": self.vectors,
            "orphan_vectors": self.orphan_vectors,
            "missing_vectors": self.missing_vectors,
            "untranscribed": self.untranscribed,
            "dropped_files": self.dropped_files,
            "repaired": self.repaired,
            "ok": self.ok,
        }


def catalogue_url(db: str | URL) -> URL:
    """A catalogue database URL as SQLAlchemy reads it; a bare `postgresql://` runs on psycopg
    (the `postgres` extra), the driver archive-search ships with. CatalogueError if unusable."""
    try:
        url = make_url(db)
    except ArgumentError as exc:
        raise CatalogueError(f"{db!r} is not a database URL (e.g. postgresql://user@host/archive): {exc}") from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise CatalogueError(
            f"{public_url(url)}: archive-search keeps its catalogue in SQLite or PostgreSQL, not {url.get_backend_name()}"
        )
    return url


def public_url(url: URL) -> str:
    """The URL without its password (nor a password query parameter): safe to print and to store."""
    return url._replace(password=None).difference_update_query(["password"]).render_as_string(hide_password=False)


def _engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")  # readers and the writer wait, never fail
            cursor.execute("PRAGMA journal_mode=WAL")  # readers see a snapshot while the writer commits
            cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    try:
        # pre-ping: a search server outlives server restarts and idle-connection cuts
        return create_engine(url, pool_pre_ping=True)
    except (NoSuchModuleError, ImportError) as exc:
        raise CatalogueError(
            f"{public_url(url)}: the PostgreSQL driver is not installed; pip install 'archive-search[postgres]' ({exc})"
        ) from exc


def _connect_error(url: URL, exc: DBAPIError) -> CatalogueError:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    return CatalogueError(
        f"{public_url(url)}: cannot use the catalogue database ({reason}); check the server and the URL, and give the "
        "password in PGPASSWORD or ~/.pgpass (or in the URL passed with --db each time)"
    )


def _initial_meta(settings: IndexSettings) -> dict:
    return {**settings.to_meta(), "index_kind": "Flat", "trained_at": 0, "created_at": time.time()}


def _is_embedded(folder: Path, url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database is not None and (
        Path(url.database).resolve() == (folder / DB_NAME).resolve()
    )


def _read_link(folder: Path) -> dict | None:
    path = folder / LINK_NAME
    if not path.is_file():
        return None
    try:
        link = json.loads(path.read_text())
        return {"url": str(link["url"]), "catalogue_id": str(link["catalogue_id"])}
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexCorruptError(f"{path}: unreadable ({exc}); restore it from the index folder it was copied from") from exc


def _write_link(folder: Path, url: URL, catalogue_id: str) -> None:
    """Write `catalogue.json` atomically (temp file, fsync, rename), readable as the umask allows
    (search servers may run as other users): it never holds a password."""
    payload = json.dumps({"url": public_url(url), "catalogue_id": catalogue_id}, indent=2) + "\n"
    temporary = folder / f"{LINK_NAME}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, folder / LINK_NAME)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _bulk_insert(session: Session, table: str, columns: Sequence[str], rows: list[tuple]) -> None:
    """Insert many rows in the session's transaction through the driver's fast path: COPY on
    PostgreSQL, a plain executemany on SQLite. A 3-hour file has about 120k windows, and ORM
    objects cost 10x more."""
    connection = session.connection()
    names = ", ".join(f'"{c}"' for c in columns)
    if connection.dialect.name == "postgresql":
        with connection.connection.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    else:
        connection.exec_driver_sql(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", rows)


class Store:
    """One index: its folder and its catalogue. Open with `Store.open` (read) or `Store.open_for_writing` (locks)."""

    def __init__(self, folder: Path, url: URL, writable: bool):
        self.folder = folder
        self.url = url
        self.engine = _engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.writable = writable
        self._lock_handle = None
        self._advisory: Connection | None = None  # holds PostgreSQL's advisory write lock
        self._vectors: ShardedIndex | None = None
        self._vectors_mtime: float | None = None
        self._next_window_id: int | None = None
        self.settings: IndexSettings | None = None
        self._meta: dict = {}
        self.last_check: CheckReport | None = None
        """The check (and repair) a writer ran on open."""
        self._dirty = False  # vectors changed since the last save
        self._added_high_water = 0  # the highest window id this writer added to the vectors

    # -- opening ----------------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.folder / DB_NAME

    @property
    def vectors_path(self) -> Path:
        return self.folder / VECTORS_NAME

    @property
    def postgres(self) -> bool:
        return self.url.get_backend_name() == "postgresql"

    @property
    def embedded(self) -> bool:
        """Whether the catalogue is the folder's own `index.sqlite`."""
        return _is_embedded(self.folder, self.url)

    @property
    def location(self) -> str:
        """Where the catalogue is, for messages: the SQLite file, or the URL without its password."""
        return str(self.db_path) if self.embedded else public_url(self.url)

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / DB_NAME).is_file() or (Path(folder) / LINK_NAME).is_file()

    @staticmethod
    def _resolve(folder: Path, db: str | URL | None) -> URL:
        """The catalogue of `folder`: `db` if given, else the one its catalogue.json names, else its index.sqlite."""
        if db is None:
            link = _read_link(folder)
            return catalogue_url(link["url"]) if link else URL.create("sqlite", database=str(folder / DB_NAME))
        url = catalogue_url(db)
        if (folder / DB_NAME).is_file() and not _is_embedded(folder, url):
            raise IndexMismatchError(
                f"{folder}: this index keeps its catalogue in {folder / DB_NAME}; drop --db to use it, "
                f"or index into a new folder to keep the catalogue in {public_url(url)}"
            )
        return url

    @classmethod
    def open(cls, folder: str | Path, db: str | URL | None = None) -> "Store":
        """Open an existing index for reading; raises IndexNotFoundError if there is none,
        IndexMismatchError if its catalogue is not the folder's or needs an upgrade first,
        CatalogueError if the catalogue database cannot be used."""
        folder = Path(folder)
        if not cls.exists(folder):
            raise IndexNotFoundError(folder)
        store = cls(folder, cls._resolve(folder, db), writable=False)
        try:
            with store.engine.connect() as connection:
                store._check_revision(migrations.revision(connection))
            store._load_meta()
            store._bind(create=False)
        except DBAPIError as exc:
            store.close()
            if store.embedded:
                raise IndexCorruptError(f"{store.location}: metadata database is unreadable ({exc.orig})") from exc
            raise _connect_error(store.url, exc) from exc
        except BaseException:
            store.close()
            raise
        if store.settings is None:
            store.close()
            raise IndexNotFoundError(folder)
        return store

    @classmethod
    def open_for_writing(cls, folder: str | Path, settings: IndexSettings | None, db: str | URL | None = None) -> "Store":
        """Create or open an index, take its write lock, create or upgrade its catalogue, check
        settings (None: keep the index's own; IndexNotFoundError if it has none), repair after a crash.

        Raises IndexLockedError if another indexer holds the lock, IndexMismatchError if the
        index was built with another model or windowing or its catalogue is not the folder's,
        CatalogueError if the catalogue database cannot be used.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        lock_handle = open(folder / LOCK_NAME, "a+")
        try:
            fcntl.flock(lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_handle.close()
            raise IndexLockedError(f"{folder}: another archive-index is writing this index; wait for it to finish")
        store = None
        try:
            store = cls(folder, cls._resolve(folder, db), writable=True)
            store._lock_handle = lock_handle
            store._open_writer(settings)
            return store
        except (OSError, DBAPIError) as exc:
            store.close() if store is not None else lock_handle.close()
            error = write_failure(folder, exc)
            if error is not None:
                raise error from exc
            if isinstance(exc, DBAPIError) and store is not None and not store.embedded:
                raise _connect_error(store.url, exc) from exc
            raise
        except BaseException:
            store.close() if store is not None else lock_handle.close()
            raise

    def _open_writer(self, settings: IndexSettings | None) -> None:
        if self.postgres:
            self._take_advisory_lock()
        for stale in self.folder.glob(f"{DB_NAME}.tmp-*"):
            stale.unlink(missing_ok=True)  # a creation that was killed halfway
        if self.embedded and not self.db_path.exists() and settings is not None:
            self._create_embedded(settings)
        with self.engine.connect() as connection:
            self._migrate(connection)
            connection.commit()
        self._load_meta()
        if self.settings is None:
            if settings is None:
                raise IndexNotFoundError(self.folder)
            self._write_meta(_initial_meta(settings))  # before the folder names the catalogue: readers find it whole
            self._load_meta()
        elif settings is not None:
            self._check_settings(settings)
        self._bind(create=settings is not None)
        for stale in self.folder.glob(f"{VECTORS_NAME}.tmp-*"):
            stale.unlink(missing_ok=True)  # a save that was killed halfway
        self.last_check = self.check(repair=True)

    def _migrate(self, connection: Connection) -> None:
        """Create or upgrade the catalogue in one transaction, which the caller commits."""
        if connection.dialect.name == "sqlite":
            # pysqlite runs DDL outside any transaction unless one is begun by hand, and a kill
            # halfway would leave a schema between two revisions
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        revision = migrations.revision(connection)
        if revision is not None:
            self._check_revision(revision, upgrading=True)
        migrations.upgrade(connection)

    def _create_embedded(self, settings: IndexSettings) -> None:
        """Make a new index.sqlite under a temporary name and rename it into place, so a reader
        (and `Store.exists`) finds either no index or a whole one."""
        temporary = self.folder / f"{DB_NAME}.tmp-{os.getpid()}"
        engine = _engine(URL.create("sqlite", database=str(temporary)))
        try:
            with engine.connect() as connection:
                self._migrate(connection)
                connection.execute(MetaRow.__table__.insert(),
                                   [{"key": k, "value": json.dumps(v)} for k, v in _initial_meta(settings).items()])  # fmt: skip
                connection.commit()
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the file that is renamed
        finally:
            engine.dispose()
        os.replace(temporary, self.db_path)

    def _take_advisory_lock(self) -> None:
        """Hold PostgreSQL's session advisory lock on a connection of its own until `close`."""
        connection = self.engine.connect()
        try:
            held = connection.execute(
                text("SELECT pg_try_advisory_lock(:space, hashtext(current_schema()))"), {"space": ADVISORY_LOCK_SPACE}
            ).scalar()
            connection.commit()  # a session lock outlives the transaction; do not sit idle in one
        except BaseException:
            connection.close()
            raise
        if not held:
            connection.close()
            raise IndexLockedError(f"{self.location}: another archive-index is writing this catalogue; wait for it to finish")
        self._advisory = connection

    def _check_revision(self, revision: str | None, upgrading: bool = False) -> None:
        if revision is None:
            raise IndexNotFoundError(self.folder)
        if not migrations.known(revision):
            raise IndexMismatchError(
                f"{self.location}: catalogue schema revision {revision} was written by a newer archive-search; upgrade it to use this index"
            )
        if not upgrading and not migrations.readable(revision):
            raise IndexMismatchError(
                f"{self.location}: catalogue schema revision {revision} predates this archive-search; "
                f"`archive-index --check --index {self.folder}` upgrades it in place (no re-indexing)"
            )

    def _bind(self, create: bool) -> None:
        """Tie the folder's vectors to an outside catalogue (the writer records the tie in
        catalogue.json), or refuse a catalogue that is not the folder's."""
        if self.embedded:
            return
        catalogue_id = self._meta.get("catalogue_id")
        link = _read_link(self.folder)
        if link is None:
            if not create:
                raise IndexNotFoundError(self.folder)
            if self.counts()[0]:
                raise IndexMismatchError(
                    f"{self.location} already holds an index whose vectors are in another folder: index from that "
                    "folder (or a copy of it), or give an empty database"
                )
            _write_link(self.folder, self.url, str(catalogue_id))
        elif catalogue_id is not None and link["catalogue_id"] != catalogue_id:
            raise IndexMismatchError(
                f"{self.folder}: its vectors belong to the catalogue {link['url']}, not to {self.location}; "
                "give that catalogue's --db, or index into a new folder"
            )
        elif create and link["url"] != public_url(self.url):
            _write_link(self.folder, self.url, str(catalogue_id))  # the catalogue moved: the folder follows it

    def close(self) -> None:
        if self._advisory is not None:
            try:
                self._advisory.execute(text("SELECT pg_advisory_unlock_all()"))
                self._advisory.commit()
            except DBAPIError:
                pass  # the connection is gone, and the server released the lock with it
            self._advisory.close()
            self._advisory = None
        self.engine.dispose()
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- meta -------------------------------------------------------------------------
    def _load_meta(self) -> None:
        try:
            with self.sessions() as session:
                rows = session.scalars(select(MetaRow)).all()
        except DBAPIError as exc:
            raise IndexCorruptError(f"{self.location}: metadata database is unreadable ({exc.orig})") from exc
        self._meta = {row.key: json.loads(row.value) for row in rows}
        if "model_name" in self._meta:
            self.settings = IndexSettings(
                self._meta["model_name"],
                int(self._meta["dim"]),
                tuple(float(s) for s in self._meta["window_scales_s"]),
                float(self._meta["window_hop_fraction"]),
            )

    def reload_meta(self) -> None:
        """Read the meta values again (a reader sees what a writer recorded since it opened)."""
        self._load_meta()

    @_writes
    def _write_meta(self, values: dict) -> None:
        with self.sessions.begin() as session:
            for key, value in values.items():
                session.merge(MetaRow(key=key, value=json.dumps(value)))
        self._meta.update(values)

    @property
    def meta(self) -> dict:
        return dict(self._meta)

    def _check_settings(self, wanted: IndexSettings) -> None:
        have = self.settings
        assert have is not None
        if have.model_name != wanted.model_name:
            raise IndexMismatchError(
                f"{self.folder}: index was built with model {have.model_name!r}, not {wanted.model_name!r}; "
                "re-index into a new folder (--index) or use the same model"
            )
        if have.dim != wanted.dim:
            raise IndexMismatchError(f"{self.folder}: index vectors have {have.dim} dimensions, the model gives {wanted.dim}")
        if tuple(have.window_scales_s) != tuple(wanted.window_scales_s) or abs(
            have.window_hop_fraction - wanted.window_hop_fraction
        ) > 1e-9:
            raise IndexMismatchError(
                f"{self.folder}: index was cut into windows {have.window_scales_s} s, this version cuts "
                f"{wanted.window_scales_s} s; re-index into a new folder"
            )

    def check_model(self, model_name: str, dim: int) -> None:
        """Refuse to search this index with vectors of another model (IndexMismatchError)."""
        assert self.settings is not None
        self._check_settings(IndexSettings(model_name, dim, self.settings.window_scales_s, self.settings.window_hop_fraction))

    # -- vectors ----------------------------------------------------------------------
    @property
    def vectors(self) -> ShardedIndex:
        """The FAISS index; readers reload it when the writer has saved a newer one."""
        assert self.settings is not None
        mtime = self.vectors_path.stat().st_mtime_ns if self.vectors_path.exists() else None
        if self._vectors is None or (not self.writable and mtime != self._vectors_mtime):
            if mtime is None:
                self._vectors = ShardedIndex(self.settings.dim)
            else:
                self._load_meta()  # the kind may have changed with the file
                self._vectors = ShardedIndex.load(
                    self.vectors_path, self.settings.dim, self._meta.get("index_kind", "Flat"), self._meta.get("trained_at", 0)
                )
            self._vectors_mtime = mtime
        return self._vectors

    @_writes
    def save_vectors(self) -> None:
        """Migrate the index type if the archive's size calls for it, then save atomically."""
        assert self.writable and self.settings is not None
        vectors = self.vectors
        migrated = vectors.maybe_migrate(windows_per_hour(self.settings.window_scales_s, self.settings.window_hop_fraction))
        if not (migrated or self._dirty or not self.vectors_path.exists()):
            return  # nothing changed: do not rewrite a large index
        vectors.save(self.vectors_path)
        self._dirty = False
        saved = {"index_kind": vectors.kind, "trained_at": vectors.trained_at,
                 "vectors_high_water": max(int(self._meta.get("vectors_high_water", 0)), self._added_high_water)}  # fmt: skip
        if any(self._meta.get(key) != value for key, value in saved.items()):
            self._write_meta(saved)

    # -- files and windows ------------------------------------------------------------
    def stored_files(self) -> dict[str, StoredFile]:
        """Every indexed file by path."""
        with self.sessions() as session:
            rows = session.execute(
                select(FileRow.id, FileRow.path, FileRow.content_hash, FileRow.size, FileRow.mtime, FileRow.duration,
                       FileRow.n_windows, TranscriptRow.file_id.label("transcribed"))
                .outerjoin(TranscriptRow, TranscriptRow.file_id == FileRow.id)
            ).all()  # fmt: skip
        return {
            path_text(r.path): StoredFile(r.id, path_text(r.path), r.content_hash, r.size, r.mtime, r.duration, r.n_windows,
                                          r.transcribed is not None)  # fmt: skip
            for r in rows
        }

    def _allocate_ids(self, count: int) -> np.ndarray:
        """`count` new window ids, above every id ever given (rows or vectors): (count,) int64."""
        if self.postgres:
            return self._sequence_ids(count)
        if self._next_window_id is None:
            with self.sessions() as session:
                seq = session.execute(text("SELECT seq FROM sqlite_sequence WHERE name='windows'")).scalar()
                top = session.execute(select(func.max(WindowRow.id))).scalar()
            self._next_window_id = max(seq or 0, top or 0, self._top_vector_id()) + 1
        ids = np.arange(self._next_window_id, self._next_window_id + count, dtype=np.int64)
        self._next_window_id += count
        return ids

    def _top_vector_id(self) -> int:
        vector_ids = self.vectors.ids()
        return int(vector_ids.max()) if len(vector_ids) else 0

    def _sequence_ids(self, count: int) -> np.ndarray:
        """Ids from the windows' PostgreSQL sequence, which never goes back (nextval is not rolled
        back with a failed transaction either)."""
        with self.engine.begin() as connection:
            sequence = connection.execute(text("SELECT pg_get_serial_sequence('windows', 'id')")).scalar()
            if self._next_window_id is None:  # once per run: never below a vector FAISS already holds
                connection.execute(
                    text(f"SELECT setval(:sequence, :floor) FROM {sequence} WHERE last_value < :floor"),
                    {"sequence": sequence, "floor": self._top_vector_id()},
                )
                self._next_window_id = 0
            if count == 0:
                return np.zeros(0, np.int64)
            ids = connection.execute(
                text("SELECT nextval(:sequence) FROM generate_series(1, :count)"), {"sequence": sequence, "count": count}
            ).scalars().all()
        return np.sort(np.array(ids, dtype=np.int64))

    @_writes
    def put_file(
        self,
        path: str,
        content_hash: str,
        size: int,
        mtime: float,
        duration: float,
        sample_rate: int,
        windows: np.ndarray,
        vectors: np.ndarray,
        note: str | None = None,
        transcript: Transcript | None = None,
    ) -> int:
        """Replace (or add) one file with its windows (N, 3: start, end, scale), vectors (N, D)
        and, when given, its transcript.

        One transaction; the vectors join the FAISS index only after it commits.
        Returns the number of windows written.
        """
        assert self.writable
        ids = self._allocate_ids(len(windows))
        key = path_key(path)
        with self.sessions.begin() as session:
            old_ids = self._delete_file_rows(session, key)
            file_row = FileRow(
                path=key, content_hash=content_hash, size=size, mtime=mtime, duration=duration,
                sample_rate=sample_rate, n_windows=len(windows), note=note, indexed_at=time.time(),
            )
            session.add(file_row)
            session.flush()
            if len(windows):
                file_id = file_row.id
                _bulk_insert(session, "windows", ("id", "file_id", "start", "end", "scale"),
                             [(i, file_id, start, end, int(scale)) for i, (start, end, scale) in zip(ids.tolist(), windows.tolist())])  # fmt: skip
            if transcript is not None:
                self._insert_transcript(session, file_row.id, transcript)
        self.vectors.remove(old_ids)
        self.vectors.add(ids, vectors)
        self._dirty = True
        if len(ids):
            self._added_high_water = max(self._added_high_water, int(ids.max()))
        return len(windows)

    @_writes
    def put_transcript(self, path: str, transcript: Transcript) -> None:
        """Replace the transcript of an indexed file (one transaction; its windows stay)."""
        assert self.writable
        with self.sessions.begin() as session:
            file_id = session.execute(select(FileRow.id).where(FileRow.path == path_key(path))).scalar()
            if file_id is None:
                raise IndexCorruptError(f"{path}: not in the index {self.folder}, so it has no transcript to replace")
            session.execute(delete(WordRow).where(WordRow.file_id == file_id))
            session.execute(delete(TranscriptRow).where(TranscriptRow.file_id == file_id))
            self._insert_transcript(session, file_id, transcript)

    @staticmethod
    def _insert_transcript(session: Session, file_id: int, transcript: Transcript) -> None:
        session.add(TranscriptRow(file_id=file_id, model=transcript.model, n_words=len(transcript.words), transcribed_at=time.time()))
        if transcript.words:
            _bulk_insert(session, "words", ("file_id", "start", "end", "token", "probability", "phonemes"),
                         [(file_id, w.start, w.end, w.token, w.probability, w.phonemes) for w in transcript.words])  # fmt: skip

    def transcript_words(self) -> list[FileWords]:
        """Every transcript word of the index, per file in time order."""
        with self.engine.connect() as connection:
            rows = connection.exec_driver_sql(
                'SELECT files.path, words.start, words."end", words.token, words.probability, words.phonemes '
                "FROM words JOIN files ON files.id = words.file_id ORDER BY words.file_id, words.start, words.id"
            ).all()
        grouped: dict[bytes, list] = {}
        for row in rows:
            grouped.setdefault(row[0], []).append(row[1:])
        return [
            FileWords(path_text(path), np.array([r[0] for r in words]), np.array([r[1] for r in words]),
                      [r[2] for r in words], np.array([r[3] for r in words]), [r[4] for r in words])  # fmt: skip
            for path, words in grouped.items()
        ]

    def files_version(self) -> tuple[int, int]:
        """(files, highest file id): changes whenever a file is added, replaced or removed, since
        file ids are never reused (SQLite AUTOINCREMENT, a PostgreSQL sequence)."""
        with self.sessions() as session:
            count, top = session.execute(select(func.count(FileRow.id), func.max(FileRow.id))).one()
        return int(count or 0), int(top or 0)

    def transcript_version(self) -> tuple[int, float]:
        """(transcripts, latest transcription time): changes whenever a transcript is written or dropped."""
        with self.sessions() as session:
            count, latest = session.execute(select(func.count(TranscriptRow.file_id), func.max(TranscriptRow.transcribed_at))).one()
        return int(count or 0), float(latest or 0.0)

    @_writes
    def touch_file(self, path: str, size: int, mtime: float) -> None:
        """Record a new size/mtime for a file whose content hash did not change."""
        with self.sessions.begin() as session:
            row = session.scalars(select(FileRow).where(FileRow.path == path_key(path))).one()
            row.size, row.mtime = size, mtime

    @_writes
    def remove_files(self, paths: Iterable[str]) -> int:
        """Delete files and exactly their vectors; returns the number of vectors removed."""
        assert self.writable
        removed = np.zeros(0, np.int64)
        with self.sessions.begin() as session:
            for path in paths:
                removed = np.concatenate([removed, self._delete_file_rows(session, path_key(path))])
        self._dirty = True
        return self.vectors.remove(removed)

    @staticmethod
    def _delete_file_rows(session: Session, key: bytes) -> np.ndarray:
        file_id = session.execute(select(FileRow.id).where(FileRow.path == key)).scalar()
        if file_id is None:
            return np.zeros(0, np.int64)
        ids = np.array(session.scalars(select(WindowRow.id).where(WindowRow.file_id == file_id)).all(), dtype=np.int64)
        session.execute(delete(WordRow).where(WordRow.file_id == file_id))
        session.execute(delete(TranscriptRow).where(TranscriptRow.file_id == file_id))
        session.execute(delete(WindowRow).where(WindowRow.file_id == file_id))
        session.execute(delete(FileRow).where(FileRow.id == file_id))
        return ids

    def windows(self, ids: Sequence[int]) -> dict[int, WindowInfo]:
        """Rows of the given window ids that exist (ids without a row are left out)."""
        if len(ids) == 0:
            return {}
        with self.sessions() as session:
            rows = session.execute(
                select(WindowRow.id, WindowRow.start, WindowRow.end, WindowRow.scale, FileRow.path, FileRow.duration)
                .join(FileRow, FileRow.id == WindowRow.file_id)
                .where(WindowRow.id.in_([int(i) for i in ids]))
            ).all()
        return {r.id: WindowInfo(r.id, path_text(r.path), r.start, r.end, r.scale, r.duration) for r in rows}

    def counts(self) -> tuple[int, int]:
        """(files, windows) in the metadata."""
        with self.sessions() as session:
            files = session.execute(select(func.count(FileRow.id))).scalar() or 0
            windows = session.execute(select(func.count(WindowRow.id))).scalar() or 0
        return int(files), int(windows)

    def word_count(self) -> int:
        """Transcript words in the metadata."""
        with self.sessions() as session:
            return int(session.execute(select(func.count(WordRow.id))).scalar() or 0)

    @property
    def transcript_model(self) -> str | None:
        """The transcriber this index keeps transcripts from; None for an acoustic-only index."""
        return self._meta.get("transcript_model")

    def keep_transcripts(self, model: str) -> None:
        """Record that this index keeps transcripts made by `model` (checks then count files without one)."""
        if self._meta.get("transcript_model") != model:
            self._write_meta({"transcript_model": model})

    def size_bytes(self) -> int:
        """Bytes on disk: the catalogue (SQLite with its WAL, or the PostgreSQL tables with their
        indexes) plus the FAISS file."""
        names = [VECTORS_NAME] + ([DB_NAME, f"{DB_NAME}-wal"] if self.embedded else [])
        size = sum((self.folder / n).stat().st_size for n in names if (self.folder / n).exists())
        size += sum(f.stat().st_size for f in shard_files(self.vectors_path))
        if self.postgres:
            with self.engine.connect() as connection:
                size += int(connection.execute(
                    text("SELECT sum(pg_total_relation_size(to_regclass(t))) FROM unnest(CAST(:tables AS text[])) AS t"),
                    {"tables": list(TABLES)},
                ).scalar() or 0)  # fmt: skip
        elif not self.embedded and self.url.database:
            size += sum(Path(f"{self.url.database}{s}").stat().st_size for s in ("", "-wal") if Path(f"{self.url.database}{s}").exists())
        return size

    # -- consistency ------------------------------------------------------------------
    def _refuse_stale_vectors(self, missing: np.ndarray, files: int) -> None:
        """Refuse to repair an outside catalogue from a folder whose vectors are behind it.

        Window ids only grow, and every save records the highest id saved (`vectors_high_water`),
        so a writer killed before saving lacks only ids above it. Missing ids at or below it
        were saved from another folder: this one is a stale copy, and its repair would drop
        files that are intact where the catalogue was last written from."""
        high_water = int(self._meta.get("vectors_high_water", 0))
        if self.embedded or not len(missing) or int(missing.min()) > high_water:
            return
        raise IndexMismatchError(
            f"{self.folder}: its vectors are behind the catalogue {self.location} (windows up to id {high_water} were "
            f"saved, {int((missing <= high_water).sum())} of them are not here; a repair would drop {files} files): "
            "index from the folder the catalogue was last written from, or copy its vectors here"
        )

    def check(self, repair: bool = False) -> CheckReport:
        """Compare window rows with vector ids; with `repair`, drop what cannot be trusted.

        Orphan vectors are removed; files with any window lacking a vector are deleted from
        the index (rows and vectors) so the next indexing run re-indexes them.
        """
        vector_ids = self.vectors.ids()
        # (id, file_id) of every window as int64 arrays, read in slices: a Row object per
        # window would cost about 20x the memory on a large archive.
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True).exec_driver_sql("SELECT id, file_id FROM windows")
            # fromiter over the flattened rows: np.array(rows) probes each Row for array attributes
            # through SQLAlchemy's missing-key path, which costs ~40 us a row
            parts = [np.fromiter(itertools.chain.from_iterable(part), np.int64).reshape(-1, 2)
                     for part in result.partitions(1 << 16)]  # fmt: skip
        pairs = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
        row_ids = pairs[:, 0]
        files, _ = self.counts()
        orphans = np.setdiff1d(vector_ids, row_ids, assume_unique=False)
        missing = np.setdiff1d(row_ids, vector_ids, assume_unique=False)
        report = CheckReport(files, len(row_ids), len(vector_ids), len(orphans), len(missing))
        if self._meta.get("transcript_model"):
            report.untranscribed = sum(not f.transcribed for f in self.stored_files().values())
        if repair and (len(orphans) or len(missing)):
            if not self.writable:
                raise IndexCorruptError(f"{self.folder}: repairing needs the write lock")
            bad_files = set(pairs[np.isin(row_ids, missing), 1].tolist())
            self._refuse_stale_vectors(missing, len(bad_files))
            with self.sessions() as session:
                bad_paths = [path_text(p) for p in session.scalars(select(FileRow.path).where(FileRow.id.in_(bad_files))).all()]
            self.vectors.remove(orphans)
            self._dirty = True
            self.remove_files(bad_paths)
            self.save_vectors()
            report.dropped_files = sorted(bad_paths)
            report.repaired = True
        return report
