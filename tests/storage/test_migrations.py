"""One migration path for both catalogues: an index made before Alembic opens and upgrades
without a rebuild, and a catalogue at an older revision keeps its rows through the upgrade."""

import json
import sqlite3

import numpy as np
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from archive_search.api import Archive
from archive_search.errors import IndexMismatchError
from archive_search.storage import migrations
from archive_search.storage.store import LINK_NAME, Store, StoredWord, Transcript
from archive_search.storage.vectors import VectorIndex
from tests.storage.conftest import SETTINGS

# The schema exactly as the store wrote it before Alembic (SQLAlchemy create_all on SQLite,
# copied from `.schema` of such an index). Files, windows and meta came first; transcripts
# and words were added later by a second create_all.
LEGACY_FILES = """
CREATE TABLE files (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, path BLOB NOT NULL, content_hash VARCHAR(64) NOT NULL,
	size INTEGER NOT NULL, mtime FLOAT NOT NULL, duration FLOAT NOT NULL, sample_rate INTEGER NOT NULL,
	n_windows INTEGER NOT NULL, note TEXT, indexed_at FLOAT NOT NULL, UNIQUE (path)
);
CREATE TABLE meta ("key" VARCHAR(64) NOT NULL, value TEXT NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE windows (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, file_id INTEGER NOT NULL, start FLOAT NOT NULL,
	"end" FLOAT NOT NULL, scale SMALLINT NOT NULL, FOREIGN KEY(file_id) REFERENCES files (id) ON DELETE CASCADE
);
CREATE INDEX ix_windows_file ON windows (file_id);
"""
LEGACY_TRANSCRIPTS = """
CREATE TABLE transcripts (
	file_id INTEGER NOT NULL, model VARCHAR(64) NOT NULL, n_words INTEGER NOT NULL, transcribed_at FLOAT NOT NULL,
	PRIMARY KEY (file_id), FOREIGN KEY(file_id) REFERENCES files (id) ON DELETE CASCADE
);
CREATE TABLE words (
	id INTEGER NOT NULL, file_id INTEGER NOT NULL, start FLOAT NOT NULL, "end" FLOAT NOT NULL,
	token VARCHAR(64) NOT NULL, probability FLOAT NOT NULL, phonemes TEXT NOT NULL,
	PRIMARY KEY (id), FOREIGN KEY(file_id) REFERENCES files (id) ON DELETE CASCADE
);
CREATE INDEX ix_words_file ON words (file_id);
CREATE INDEX ix_words_token ON words (token);
"""
LEGACY_META = {"model_name": '"model-a"', "dim": "8", "window_scales_s": "[0.5, 1.0]",
               "window_hop_fraction": "0.3333333333333333", "schema_version": "1", "index_kind": '"Flat"',
               "trained_at": "0", "created_at": "1796304844.6"}  # fmt: skip


def legacy_index(folder, transcripts: bool) -> np.ndarray:
    """An index as the store wrote it before Alembic: files a.wav (windows 1-4) and b.wav
    (windows 5-7), b.wav's row then deleted as a re-index would, so sqlite_sequence (7) is
    above every row id left; vectors saved for windows 1-4. Returns a.wav's vectors."""
    folder.mkdir()
    db = sqlite3.connect(folder / "index.sqlite")
    db.executescript(LEGACY_FILES + (LEGACY_TRANSCRIPTS if transcripts else ""))
    db.execute("PRAGMA journal_mode=WAL")
    db.executemany("INSERT INTO meta VALUES (?, ?)", LEGACY_META.items())
    for file_id, (path, first, count) in enumerate([(b"/a.wav", 1, 4), (b"/b.wav", 5, 3)], 1):
        db.execute("INSERT INTO files VALUES (?, ?, 'h', 10, 1.0, 2.0, 16000, ?, NULL, 0.0)", (file_id, path, count))
        db.executemany("INSERT INTO windows VALUES (?, ?, ?, ?, 0)",
                       [(i, file_id, 0.25 * k, 0.25 * k + 0.5) for k, i in enumerate(range(first, first + count))])  # fmt: skip
    if transcripts:
        db.execute("INSERT INTO transcripts VALUES (1, 'fake-asr', 1, 0.0)")
        db.execute("INSERT INTO words VALUES (1, 1, 0.0, 0.3, 'hello', 0.9, 'HH AH L OW')")
    db.execute("DELETE FROM windows WHERE file_id = 2")
    db.execute("DELETE FROM files WHERE id = 2")
    db.commit()
    db.close()
    vectors = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = VectorIndex(8)
    index.add(np.arange(1, 5, dtype=np.int64), vectors)
    index.save(folder / "vectors.faiss")
    return vectors


def revision_of(folder) -> str | None:
    engine = create_engine(f"sqlite:///{folder / 'index.sqlite'}")
    try:
        with engine.connect() as connection:
            return migrations.revision(connection)
    finally:
        engine.dispose()


def test_an_index_made_before_alembic_is_searched_as_it_is_and_upgraded_by_the_next_writer(tmp_path):
    folder = tmp_path / "index"
    vectors = legacy_index(folder, transcripts=True)
    assert revision_of(folder) == "0002"
    with Store.open(folder) as reader:  # a reader writes nothing, not even the version table
        hit = reader.vectors.search(vectors[2], 1)[0]
        assert reader.windows(hit.ids.tolist())[3].file == "/a.wav"
        assert [w.tokens for w in reader.transcript_words()] == [["hello"]]
    assert "alembic_version" not in inspect(create_engine(f"sqlite:///{folder / 'index.sqlite'}")).get_table_names()
    with Store.open_for_writing(folder, SETTINGS) as store:
        assert store.last_check.ok and not store.last_check.dropped_files  # no rebuild, nothing dropped
        assert set(store.stored_files()) == {"/a.wav"} and store.meta["catalogue_id"]
        w = np.stack([np.arange(2) * 0.25, np.arange(2) * 0.25 + 0.5, np.zeros(2)], axis=1)
        store.put_file("/c.wav", "h3", 10, 1.0, 1.0, 16000, w, vectors[:2])
        assert sorted(store.vectors.ids().tolist()) == [1, 2, 3, 4, 8, 9]  # above b.wav's deleted 5-7
    assert revision_of(folder) == "0003"


def test_an_index_made_before_transcripts_is_upgraded_in_place(tmp_path):
    folder = tmp_path / "index"
    legacy_index(folder, transcripts=False)
    assert revision_of(folder) == "0001"
    with pytest.raises(IndexMismatchError, match="upgrades it in place"):
        Store.open(folder)
    report = Archive.open(folder).check(repair=True)  # archive-index --check
    assert report.ok and not report.dropped_files and (report.files, report.windows) == (1, 4)
    with Store.open_for_writing(folder, SETTINGS) as store:
        store.put_transcript("/a.wav", Transcript("fake-asr", [StoredWord("apple", 0.1, 0.4, 0.8, "AE P AH L")]))
    with Store.open(folder) as reader:
        assert [w.tokens for w in reader.transcript_words()] == [["apple"]] and reader.counts() == (1, 4)
    assert revision_of(folder) == "0003"


def test_a_catalogue_at_the_first_revision_keeps_its_rows_through_the_upgrade(backend):
    """The same Alembic path on SQLite and PostgreSQL: rows written at 0001 survive to the head."""
    engine = create_engine(backend.url)
    backend.folder.mkdir()
    try:
        with engine.begin() as connection:
            command.upgrade(migrations._config(connection), "0001")
            connection.execute(text("INSERT INTO meta VALUES (:k, :v)"), [{"k": k, "v": v} for k, v in LEGACY_META.items()])
            connection.execute(text("INSERT INTO files VALUES (1, :p, 'h', 10, 1.0, 2.0, 16000, 2, NULL, 0.0)"), {"p": b"/a.wav"})
            connection.execute(text("INSERT INTO windows VALUES (1, 1, 0.0, 0.5, 0), (2, 1, 0.25, 0.75, 0)"))
            assert "transcripts" not in inspect(connection).get_table_names()
        with engine.begin() as connection:
            assert migrations.revision(connection) == "0001" and not migrations.readable("0001")
            migrations.upgrade(connection)
        with engine.connect() as connection:
            assert migrations.revision(connection) == "0003"
            assert {"transcripts", "words"} <= set(inspect(connection).get_table_names())
            catalogue_id = json.loads(connection.execute(text("SELECT value FROM meta WHERE key = 'catalogue_id'")).scalar())
    finally:
        engine.dispose()
    index = VectorIndex(8)
    index.add(np.array([1, 2], np.int64), np.eye(8, dtype=np.float32)[:2])
    index.save(backend.folder / "vectors.faiss")
    if backend.db is not None:  # the folder of an outside catalogue names it, as its first writer recorded
        (backend.folder / LINK_NAME).write_text(json.dumps({"url": backend.db, "catalogue_id": catalogue_id}))
    with backend.writer() as store:
        assert store.last_check.ok and store.counts() == (1, 2)
        store.put_transcript("/a.wav", Transcript("fake-asr", []))
    with backend.reader() as reader:
        assert set(reader.stored_files()) == {"/a.wav"} and reader.stored_files()["/a.wav"].transcribed


def test_an_upgrade_that_fails_halfway_leaves_nothing_behind(backend, monkeypatch):
    """All revisions run in one transaction (pysqlite needs an explicit BEGIN for DDL): a failure
    in the last one leaves the database as it was, not between two revisions."""
    import uuid

    def fail():
        raise RuntimeError("killed during revision 0003")

    monkeypatch.setattr(uuid, "uuid4", fail)
    with pytest.raises(RuntimeError, match="0003"):
        backend.writer()
    engine = create_engine(backend.url)
    try:
        with engine.connect() as connection:
            assert migrations.revision(connection) is None and not inspect(connection).get_table_names()
    finally:
        engine.dispose()
    monkeypatch.undo()
    with backend.writer() as store:
        assert store.meta["catalogue_id"] and store.check().ok


def test_a_failed_upgrade_of_an_old_index_leaves_it_at_its_revision(tmp_path, monkeypatch):
    import uuid

    folder = tmp_path / "index"
    legacy_index(folder, transcripts=False)
    monkeypatch.setattr(uuid, "uuid4", lambda: (_ for _ in ()).throw(RuntimeError("killed during revision 0003")))
    with pytest.raises(RuntimeError, match="0003"):
        Store.open_for_writing(folder, SETTINGS)
    assert revision_of(folder) == "0001"  # not 0002: the transcript tables went with the failed transaction
    monkeypatch.undo()
    with Store.open_for_writing(folder, SETTINGS) as store:
        assert store.last_check.ok and store.counts() == (1, 4)
    assert revision_of(folder) == "0003"
