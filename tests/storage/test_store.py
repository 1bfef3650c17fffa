import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest

from archive_search.errors import CatalogueError, IndexLockedError, IndexMismatchError, IndexNotFoundError
from archive_search.storage.store import LINK_NAME, IndexSettings, Store, StoredWord, Transcript
from tests.storage.conftest import SETTINGS


def windows_and_vectors(n, seed=0):
    rng = np.random.default_rng(seed)
    starts = np.arange(n) * 0.25
    windows = np.stack([starts, starts + 0.5, np.zeros(n)], axis=1)
    x = rng.standard_normal((n, 8)).astype(np.float32)
    return windows, x / np.linalg.norm(x, axis=1, keepdims=True)


def put(store, path, n, seed=0, size=100, transcript=None):
    w, v = windows_and_vectors(n, seed)
    store.put_file(path, f"hash{seed}", size, 1.0, n * 0.25 + 0.25, 16000, w, v, transcript=transcript)
    return v


def test_round_trip_and_exact_removal(backend):
    with backend.writer() as store:
        va = put(store, "/a.wav", 10, seed=1)
        vb = put(store, "/b.wav", 6, seed=2)
        store.save_vectors()
        assert store.counts() == (2, 16) and store.vectors.ntotal == 16
    reader = backend.reader()
    result = reader.vectors.search(vb[3], 1)[0]
    row = reader.windows(result.ids.tolist())[int(result.ids[0])]
    assert (row.file, row.start, row.end) == ("/b.wav", 0.75, 1.25)
    assert int(reader.vectors.search(va[0], 1)[0].ids[0]) in reader.windows(reader.vectors.ids().tolist())
    reader.close()
    with backend.writer() as store:
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


def test_window_ids_of_a_removed_last_file_are_never_given_again(backend):
    with backend.writer() as store:
        put(store, "/a.wav", 5, seed=1)
        put(store, "/b.wav", 5, seed=2)
        store.save_vectors()
        top = int(store.vectors.ids().max())
        store.remove_files(["/b.wav"])  # the highest ids are gone from rows and vectors
        store.save_vectors()
    with backend.writer() as store:  # a new run: nothing in memory remembers them
        put(store, "/c.wav", 3, seed=3)
        fresh = [i for i in store.vectors.ids().tolist() if i > 5]
        assert len(fresh) == 3 and min(fresh) > top


def test_missing_index_and_mismatch_and_lock(backend):
    with pytest.raises(IndexNotFoundError, match="no archive index"):
        Store.open(backend.folder / "nothing")
    store = backend.writer()
    with pytest.raises(IndexLockedError, match="another archive-index"):
        backend.writer()
    store.close()
    with pytest.raises(IndexMismatchError, match="model-a"):
        backend.writer(IndexSettings("model-b", 8, (0.5, 1.0), 1 / 3))
    with pytest.raises(IndexMismatchError, match="windows"):
        backend.writer(IndexSettings("model-a", 8, (0.5, 2.0), 1 / 3))
    backend.writer().close()  # the lock was released


def test_wal_mode(tmp_path):
    Store.open_for_writing(tmp_path, SETTINGS).close()
    mode = sqlite3.connect(tmp_path / "index.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_repair_after_crash_before_vectors_were_saved(backend):
    with backend.writer() as store:
        put(store, "/kept.wav", 5, seed=1)
        store.save_vectors()
        put(store, "/lost.wav", 5, seed=2)  # rows committed, vectors only in memory: a kill here
    reader = backend.reader()
    report = reader.check()
    assert report.missing_vectors == 5 and not report.ok
    # a reader never sees a window it cannot find a vector for, nor fails
    assert len(reader.vectors.search(np.ones(8, np.float32) / np.sqrt(8), 10)[0].ids) == 5
    reader.close()
    store = backend.writer()  # repairs on open
    assert store.last_check.dropped_files == ["/lost.wav"] and store.last_check.repaired
    assert store.check().ok and set(store.stored_files()) == {"/kept.wav"}
    store.close()


def test_repair_removes_orphan_vectors(backend):
    with backend.writer() as store:
        put(store, "/a.wav", 5, seed=1)
        put(store, "/b.wav", 3, seed=2)
        store.save_vectors()
    backend.sql("DELETE FROM windows WHERE file_id = (SELECT id FROM files WHERE path = :p)", p=b"/b.wav")
    backend.sql("DELETE FROM files WHERE path = :p", p=b"/b.wav")
    reader = backend.reader()
    assert reader.check().orphan_vectors == 3
    reader.close()
    with backend.writer() as store:
        assert store.last_check.orphan_vectors == 3 and store.check().ok and store.vectors.ntotal == 5


def test_non_utf8_and_unicode_paths_round_trip(backend):
    odd = os.fsdecode(b"/archive/caf\xe9-\xff.wav")
    with backend.writer() as store:
        put(store, odd, 3)
        put(store, "/archive/émission 東京.flac", 2, seed=4)
        store.save_vectors()
    reader = backend.reader()
    assert set(reader.stored_files()) == {odd, "/archive/émission 東京.flac"}
    assert os.fsencode(odd) == b"/archive/caf\xe9-\xff.wav"
    reader.close()


def test_large_files_and_long_words_fit(backend):
    long_token = "a" * 300  # a transcriber's runaway "word"
    words = [StoredWord("apple", 0.1, 0.4, 0.9, "AE P AH L"), StoredWord(long_token, 0.5, 0.9, 0.2, "AH")]
    with backend.writer() as store:
        put(store, "/long.wav", 4, size=5_000_000_000, transcript=Transcript("fake-asr", words))  # past 2**31 bytes
        store.save_vectors()
    reader = backend.reader()
    assert reader.stored_files()["/long.wav"].size == 5_000_000_000
    [file_words] = reader.transcript_words()
    assert file_words.file == "/long.wav" and file_words.tokens == ["apple", long_token]
    assert np.allclose(file_words.starts, [0.1, 0.5]) and reader.word_count() == 2
    assert reader.size_bytes() > 0
    reader.close()


def test_reader_reloads_vectors_after_a_save(backend):
    writer = backend.writer()
    put(writer, "/a.wav", 4)
    writer.save_vectors()
    reader = backend.reader()
    assert reader.vectors.ntotal == 4
    put(writer, "/b.wav", 3, seed=5)
    assert reader.vectors.ntotal == 4  # not saved yet: the reader keeps its snapshot
    os.utime(backend.folder / "vectors.faiss", ns=(1, 1))  # make the next save's mtime certainly differ
    writer.save_vectors()
    assert reader.vectors.ntotal == 7
    writer.close()
    reader.close()


def test_a_newer_schema_is_refused_not_misread(backend):
    backend.writer().close()
    backend.sql("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(IndexMismatchError, match="newer archive-search"):
        backend.reader()
    with pytest.raises(IndexMismatchError, match="newer archive-search"):
        backend.writer()


def test_catalogue_errors_name_the_url_without_its_password(tmp_path):
    with pytest.raises(CatalogueError, match="cannot use the catalogue") as refused:
        Store.open_for_writing(tmp_path / "a", SETTINGS, db="postgresql://someone:s3cret@127.0.0.1:1/archive")
    assert "s3cret" not in str(refused.value) and "someone@127.0.0.1:1/archive" in str(refused.value)
    with pytest.raises(CatalogueError, match="SQLite or PostgreSQL"):
        Store.open_for_writing(tmp_path / "b", SETTINGS, db="mysql://someone@localhost/archive")
    Store.open_for_writing(tmp_path / "c", SETTINGS).close()
    with pytest.raises(IndexMismatchError, match="keeps its catalogue in"):
        Store.open_for_writing(tmp_path / "c", SETTINGS, db=f"sqlite:///{tmp_path / 'elsewhere.sqlite'}")


# -- an outside catalogue (PostgreSQL): the folder's tie to it, the lock across machines ----------
def test_postgres_folder_remembers_its_catalogue_without_the_password(backend_postgres):
    folder, url = backend_postgres
    with Store.open_for_writing(folder, SETTINGS, db=url.replace("postgres@", "postgres:s3cret@")) as store:
        put(store, "/a.wav", 3)
        store.save_vectors()
    link = json.loads((folder / LINK_NAME).read_text())
    assert link["url"] == url and "s3cret" not in (folder / LINK_NAME).read_text()
    assert not (folder / "index.sqlite").exists()
    with Store.open(folder) as reader:  # no URL: the folder names it (trust auth needs no password)
        assert set(reader.stored_files()) == {"/a.wav"} and reader.postgres


def test_postgres_vectors_are_never_joined_with_another_catalogue(backend_postgres, tmp_path):
    folder, url = backend_postgres
    with Store.open_for_writing(folder, SETTINGS, db=url) as store:
        put(store, "/a.wav", 3)
        store.save_vectors()
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"  # an outside catalogue too, with another id
    Store.open_for_writing(tmp_path / "other-folder", SETTINGS, db=other).close()
    with pytest.raises(IndexMismatchError, match="belong to the catalogue"):
        Store.open(folder, db=other)
    with pytest.raises(IndexMismatchError, match="belong to the catalogue"):
        Store.open_for_writing(folder, SETTINGS, db=other)
    # a fresh folder must not adopt a catalogue whose vectors live elsewhere: its repair would drop every file
    with pytest.raises(IndexMismatchError, match="vectors are in another folder"):
        Store.open_for_writing(tmp_path / "stranger", SETTINGS, db=url)
    with Store.open(folder, db=url) as reader:
        assert reader.counts() == (1, 3)


def test_postgres_writers_on_two_machines_exclude_each_other(backend_postgres, tmp_path):
    folder, url = backend_postgres
    Store.open_for_writing(folder, SETTINGS, db=url).close()
    copy = tmp_path / "second-machine"  # another machine's copy of the folder: its own file lock
    copy.mkdir()
    (copy / LINK_NAME).write_bytes((folder / LINK_NAME).read_bytes())
    holder = Store.open_for_writing(folder, SETTINGS, db=url)
    with pytest.raises(IndexLockedError, match="another archive-index is writing this catalogue"):
        Store.open_for_writing(copy, SETTINGS, db=url)
    holder.close()
    Store.open_for_writing(copy, SETTINGS, db=url).close()


HOLD_LOCK = """
import sys, time
from archive_search.storage.store import IndexSettings, Store
store = Store.open_for_writing(sys.argv[1], IndexSettings("model-a", 8, (0.5, 1.0), 1 / 3), db=sys.argv[2])
print("locked", flush=True)
time.sleep(60)
"""


def test_postgres_lock_dies_with_its_writer(backend_postgres, tmp_path):
    folder, url = backend_postgres
    copy = tmp_path / "second-machine"
    Store.open_for_writing(folder, SETTINGS, db=url).close()
    copy.mkdir()
    (copy / LINK_NAME).write_bytes((folder / LINK_NAME).read_bytes())
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), url], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLockedError):
            Store.open_for_writing(copy, SETTINGS, db=url)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    Store.open_for_writing(copy, SETTINGS, db=url).close()  # the server dropped the dead session's lock


WRITE_UNTIL_KILLED = """
import sys
import time
import numpy as np
from archive_search.storage.store import IndexSettings, Store, StoredWord, Transcript
store = Store.open_for_writing(sys.argv[1], IndexSettings("model-a", 8, (0.5, 1.0), 1 / 3), db=sys.argv[2] or None)
rng = np.random.default_rng(0)
for i in range(10_000):
    n = 2_000
    windows = np.stack([np.arange(n) * 0.25, np.arange(n) * 0.25 + 0.5, np.zeros(n)], axis=1)
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    words = [StoredWord("w", k * 0.5, k * 0.5 + 0.4, 0.9, "W") for k in range(300)]
    store.put_file(f"/f{i}.wav", "h", 1, 1.0, n * 0.25, 16000, windows, vectors, transcript=Transcript("asr", words))
    if i % 3 == 2:
        store.save_vectors()
        print(f"saved {i}", flush=True)
"""


def test_a_writer_killed_mid_run_loses_nothing_saved_and_leaves_no_partial_file(backend):
    """SIGKILL at a random moment, then a new writer: every file is whole or absent, and every file
    whose vectors were saved is there."""
    backend.writer().close()  # the folder knows its catalogue before the child writes
    child = subprocess.Popen([sys.executable, "-c", WRITE_UNTIL_KILLED, str(backend.folder), backend.db or ""],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        saved = [child.stdout.readline() for _ in range(3)][-1]
        time.sleep(np.random.default_rng().uniform(0.0, 0.5))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        child.kill()
    last_saved = int(saved.split()[1])
    with backend.writer() as store:
        files = store.stored_files()
        assert store.check().ok
        assert {f"/f{i}.wav" for i in range(last_saved + 1)} <= set(files)
        assert all(f.n_windows == 2_000 and f.transcribed for f in files.values())
        assert store.counts() == (len(files), 2_000 * len(files)) and store.word_count() == 300 * len(files)
        assert store.vectors.ntotal == 2_000 * len(files)


def test_postgres_a_stale_copy_of_the_folder_is_refused_as_a_writer_not_repaired(backend_postgres, tmp_path):
    """A search server's copy that is behind must not 'repair' the shared catalogue by dropping
    the files indexed since it was copied."""
    folder, url = backend_postgres
    with Store.open_for_writing(folder, SETTINGS, db=url) as store:
        put(store, "/a.wav", 4, seed=1)
        store.save_vectors()
    copy = tmp_path / "search-server"
    shutil.copytree(folder, copy)
    with Store.open_for_writing(folder, SETTINGS, db=url) as store:
        put(store, "/b.wav", 3, seed=2)
        store.save_vectors()
    with Store.open(copy) as reader:  # reading from the stale copy is fine: b.wav is just not found yet
        assert reader.vectors.ntotal == 4 and reader.counts() == (2, 7)
    with pytest.raises(IndexMismatchError, match="vectors are behind the catalogue"):
        Store.open_for_writing(copy, SETTINGS, db=url)
    with Store.open_for_writing(folder, SETTINGS, db=url) as store:  # nothing was dropped
        assert set(store.stored_files()) == {"/a.wav", "/b.wav"} and store.last_check.ok
