"""A full disk while indexing: the run stops with one clear IndexWriteError naming the index,
the index as last saved stays searchable, and a re-run once there is room finishes the job
(equal to a clean build). Two honest ways to run out of room: a real size-limited tmpfs (needs
mount, so root) and a file-size limit (RLIMIT_FSIZE, any user), which makes the kernel refuse
every write past the limit, SQLite's and FAISS's alike."""

import multiprocessing
import os
import resource
import shutil
import signal
import subprocess
import traceback

import pytest

from archive_search import Archive
from archive_search.errors import IndexWriteError
from archive_search.storage.store import Store
from tests.fakes import WORD_BANDS, episode, fake_bundle, write_episodes, write_wav
from tests.indexer.test_indexer import contents

FORK = multiprocessing.get_context("fork")


def more_files(folder, count=30, words=12):
    folder.mkdir(parents=True, exist_ok=True)
    names = list(WORD_BANDS)
    for i in range(count):
        write_wav(folder / f"more{i:02d}.wav", episode([names[(i + j) % len(names)] for j in range(words)], seed=100 + i)[0])


def assert_old_index_usable(index, old_files, old_contents):
    """A reader opens the index without repair; every old file is still there, with its vectors."""
    reader = Store.open(index)
    stored = reader.stored_files()
    assert set(old_files) <= set(stored)
    ids = reader.vectors.ids()
    rows = reader.windows(ids.tolist())
    assert set(rows) == set(ids.tolist())  # every saved vector has its row: nothing half-written
    saved = {key for key in old_contents}
    now = {(r.file, round(r.start, 4), round(r.end, 4), r.scale) for r in rows.values()}
    assert saved <= now
    assert reader.check().orphan_vectors == 0
    reader.close()
    archive = Archive.open(index, fake_bundle())
    hits = archive.search_audio(episode(["river"], seed=1)[0], top=50)
    assert {h.file for h in hits} & set(old_files)
    archive.close()


def _index_under_file_size_limit(audio, index, limit, queue):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        report = Archive.open(index, fake_bundle()).add([audio])
        queue.put(("finished", len(report.added)))
    except BaseException as exc:
        queue.put((type(exc).__name__, str(exc) if isinstance(exc, IndexWriteError) else traceback.format_exc()))


def test_file_size_limit_mid_run_keeps_the_old_index(tmp_path):
    audio, index = tmp_path / "audio", tmp_path / "index"
    old_files = write_episodes(audio / "old", count=2)
    Archive.open(index, fake_bundle()).add([audio])
    old_contents = contents(index)
    more_files(audio / "new")
    limit = max(os.path.getsize(index / name) for name in os.listdir(index)) + 200_000

    queue = FORK.SimpleQueue()
    child = FORK.Process(target=_index_under_file_size_limit, args=(audio, index, limit, queue))
    child.start()
    child.join()
    kind, message = queue.get()
    assert kind == "IndexWriteError", message
    assert message.startswith(f"{index}: cannot write the index (") and "\n" not in message
    assert_old_index_usable(index, old_files, old_contents)

    rerun = Archive.open(index, fake_bundle()).add([audio])  # room again: repairs and finishes
    assert rerun.ok
    Archive.open(tmp_path / "clean", fake_bundle()).add([audio])
    assert contents(index) == contents(tmp_path / "clean")


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not _can_mount(), reason="mounting a size-limited tmpfs needs root")
def test_full_tmpfs_keeps_the_old_index(tmp_path):
    audio, mount = tmp_path / "audio", tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {done.stderr.strip()}")
    try:
        index = mount / "index"
        old_files = write_episodes(audio / "old", count=2)
        Archive.open(index, fake_bundle()).add([audio])
        old_contents = contents(index)
        more_files(audio / "new")
        with pytest.raises(IndexWriteError) as caught:
            Archive.open(index, fake_bundle()).add([audio])
        message = str(caught.value)
        assert message.startswith(f"{index}: cannot write the index (") and "\n" not in message
        assert not list(index.glob("vectors.faiss.tmp-*"))  # no half-written vector file left behind
        assert_old_index_usable(index, old_files, old_contents)

        subprocess.run(["mount", "-o", "remount,size=20m", str(mount)], check=True)
        assert Archive.open(index, fake_bundle()).add([audio]).ok
        Archive.open(tmp_path / "clean", fake_bundle()).add([audio])
        assert contents(index) == contents(tmp_path / "clean")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
