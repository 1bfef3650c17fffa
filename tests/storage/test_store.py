import os
import sqlite3

import numpy as np
import pytest

from archive_search.errors import IndexLockedError, IndexMismatchError, IndexNotFoundError
from archive_search.storage.store import IndexSettings, Store

SETTINGS = IndexSettings("model-a", 8, (0.5, 1.0), 1 / 3)


def windows_and_vectors(n, seed=0):
    rng = np.random.default_rng(seed)
    starts = np.arange(n) * 0.25
    windows = np.stack([starts, starts + 0.5, np.zeros(n)], axis=1)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return windows, x / np.linalg.norm(x, axis=1, keepdims=True)


def put(store, path, n, seed=0):
    w, v = windows_and_vectors(n, seed)
    store.put_file(path, f"hash{seed}", 100, 1.0, n * 0.25 + 0.25, 16000, w, v)
    return v


def test_round_trip_and_exact_removal(tmp_path):
    with Store.open_for_writing(tmp_path, SETTINGS) as store:
        va = put(store, "/a.wav", 10, seed=1)
        vb = put(store, "/b.wav", 6, seed=2)
        store.save_vectors()
        assert store.counts() == (2, 16) and store.vectors.ntotal == 16
    reader = Store.open(tmp_path)
    result = reader.vectors.search(vb[3], 1)[0]
    row = reader.windows(result.ids.tolist())[int(result.ids[0])]
    assert (row.file, row.start, row.end) == ("/b.wav", 0.75, 1.25)
    reader.close()
    with Store.open_for_writing(tmp_path, SETTINGS) as store:
        b_ids = set(store.vectors.ids().tolist())
        assert store.remove_files(["/a.wav"]) == 10
        store.save_vectors()
        remaining = set(store.vectors.ids().tolist())
        assert len(remaining) == 6 and remaining < b_ids
        assert set(store.stored_files()) == {"/b.wav"}
        assert store.check().ok
        # replacing a file swaps exactly its vectors, and ids are never reused
        put(store, "/b.wav", 4, seed=3)
        new_ids = set(store.vectors.ids().tolist())
        assert len(new_ids) == 4 and not new_ids & b_ids


def test_missing_index_and_mismatch_and_lock(tmp_path):
    with pytest.raises(IndexNotFoundError, match="no archive index"):
        Store.open(tmp_path / "nothing")
    store = Store.open_for_writing(tmp_path, SETTINGS)
    with pytest.raises(IndexLockedError, match="another archive-index"):
        Store.open_for_writing(tmp_path, SETTINGS)
    store.close()
    with pytest.raises(IndexMismatchError, match="model-a"):
        Store.open_for_writing(tmp_path, IndexSettings("model-b", 8, (0.5, 1.0), 1 / 3))
    with pytest.raises(IndexMismatchError, match="windows"):
        Store.open_for_writing(tmp_path, IndexSettings("model-a", 8, (0.5, 2.0), 1 / 3))
    Store.open_for_writing(tmp_path, SETTINGS).close()  # the lock was released


def test_wal_mode(tmp_path):
    Store.open_for_writing(tmp_path, SETTINGS).close()
    mode = sqlite3.connect(tmp_path / "index.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_repair_after_crash_before_vectors_were_saved(tmp_path):
    with Store.open_for_writing(tmp_path, SETTINGS) as store:
        put(store, "/kept.wav", 5, seed=1)
        store.save_vectors()
        put(store, "/lost.wav", 5, seed=2)  # rows committed, vectors only in memory: a kill here
    reader = Store.open(tmp_path)
    report = reader.check()
    assert report.missing_vectors == 5 and not report.ok
    # a reader never sees a window it cannot find a vector for, nor fails
    assert len(reader.vectors.search(np.ones(8, np.float32) / np.sqrt(8), 10)[0].ids) == 5
    reader.close()
    store = Store.open_for_writing(tmp_path, SETTINGS)  # repairs on open
    assert store.last_check.dropped_files == ["/lost.wav"] and store.last_check.repaired
    assert store.check().ok and set(store.stored_files()) == {"/kept.wav"}
    store.close()


def test_repair_removes_orphan_vectors(tmp_path):
    with Store.open_for_writing(tmp_path, SETTINGS) as store:
        put(store, "/a.wav", 5, seed=1)
        put(store, "/b.wav", 3, seed=2)
        store.save_vectors()
    db = sqlite3.connect(tmp_path / "index.sqlite")
    db.execute("DELETE FROM windows WHERE file_id = (SELECT id FROM files WHERE path = ?)", (b"/b.wav",))
    db.execute("DELETE FROM files WHERE path = ?", (b"/b.wav",))
    db.commit()
    db.close()
    reader = Store.open(tmp_path)
    assert reader.check().orphan_vectors == 3
    reader.close()
    with Store.open_for_writing(tmp_path, SETTINGS) as store:
        assert store.last_check.orphan_vectors == 3 and store.check().ok and store.vectors.ntotal == 5


def test_non_utf8_and_unicode_paths_round_trip(tmp_path):
    odd = os.fsdecode(b"/archive/caf\xe9-\xff.wav")
    with Store.open_for_writing(tmp_path, SETTINGS) as store:
        put(store, odd, 3)
        put(store, "/archive/émission 東京.flac", 2, seed=4)
        store.save_vectors()
    reader = Store.open(tmp_path)
    assert set(reader.stored_files()) == {odd, "/archive/émission 東京.flac"}
    assert os.fsencode(odd) == b"/archive/caf\xe9-\xff.wav"
    reader.close()


def test_reader_reloads_vectors_after_a_save(tmp_path):
    writer = Store.open_for_writing(tmp_path, SETTINGS)
    put(writer, "/a.wav", 4)
    writer.save_vectors()
    reader = Store.open(tmp_path)
    assert reader.vectors.ntotal == 4
    put(writer, "/b.wav", 3, seed=5)
    assert reader.vectors.ntotal == 4  # not saved yet: the reader keeps its snapshot
    os.utime(tmp_path / "vectors.faiss", ns=(1, 1))  # make the next save's mtime certainly differ
    writer.save_vectors()
    assert reader.vectors.ntotal == 7
    writer.close()
    reader.close()
