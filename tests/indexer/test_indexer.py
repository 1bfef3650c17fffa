import multiprocessing
import os
import shutil
import tempfile
import traceback

import numpy as np
import pytest
import soundfile as sf

from archive_search import Archive
from archive_search.audio import SAMPLE_RATE
from archive_search.errors import IndexLockedError, IndexMismatchError
from archive_search.indexer.windows import window_spans
from archive_search.storage.store import Store
from tests.fakes import episode, fake_bundle, lexicon, tone_word, write_episodes, write_wav


def contents(index_dir):
    """Every window as (file, start, end, scale) -> its vector, plus a consistency check."""
    store = Store.open(index_dir)
    ids = store.vectors.ids()
    rows = store.windows(ids.tolist())
    vectors = store.vectors.vectors(ids)
    result = {
        (rows[i].file, round(rows[i].start, 4), round(rows[i].end, 4), rows[i].scale): tuple(np.round(v, 4))
        for i, v in zip(ids.tolist(), vectors)
    }
    assert store.check().ok
    store.close()
    return result


def test_incremental_add_change_delete(tmp_path):
    audio = tmp_path / "audio"
    truth = write_episodes(audio, count=3)
    archive = Archive.open(tmp_path / "index", fake_bundle(lexicon()))
    report = archive.add([audio])
    assert report.ok and sorted(report.added) == sorted(truth) and report.unchanged == 0
    first = contents(tmp_path / "index")
    expected_windows = sum(len(window_spans(sf.info(p).frames / SAMPLE_RATE)) for p in truth)
    assert len(first) == expected_windows == report.windows_added

    again = archive.add([audio])
    assert again.unchanged == 3 and not again.added and not again.updated and again.windows_added == 0

    files = sorted(truth)
    samples, _ = episode(["planet", "coffee"], seed=9)
    write_wav(files[0], samples)  # changed
    os.remove(files[1])  # vanished
    new_file = audio / "sub" / "new.flac"
    sf.write(new_file, episode(["apple"], seed=11)[0], SAMPLE_RATE)  # added
    os.utime(files[2], (1_000_000, 1_000_000))  # touched, same content: not re-embedded
    report = archive.add([audio])
    assert report.updated == [files[0]] and report.removed == [files[1]]
    assert report.added == [str(new_file)] and report.unchanged == 1

    final = contents(tmp_path / "index")
    assert {key[0] for key in final} == {files[0], files[2], str(new_file)}
    # the incremental index equals a clean build of the same folder
    clean = Archive.open(tmp_path / "clean", fake_bundle(lexicon()))
    clean.add([audio])
    assert contents(tmp_path / "clean") == final


def test_bad_files_are_reported_and_the_rest_indexed(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    samples, _ = episode(["river", "garden"])
    write_wav(audio / "good.wav", samples)
    (audio / "empty.wav").write_bytes(b"")
    (audio / "text.mp3").write_text("this is not audio at all\n" * 20)
    good = (audio / "good.wav").read_bytes()
    (audio / "truncated.flac").write_bytes(good[:30])
    (audio / "garbage.ogg").write_bytes(np.random.default_rng(0).bytes(5000))
    write_wav(audio / "silence.wav", np.zeros(SAMPLE_RATE, np.float32))
    write_wav(audio / "tiny.wav", tone_word("apple")[:800])  # 50 ms
    write_wav(audio / "short.wav", tone_word("apple")[:4000])  # 0.25 s: one window
    sf.write(audio / "stereo-8k.wav", np.stack([samples[::2], samples[::2]], axis=1), 8000, subtype="PCM_U8")
    sf.write(audio / "mono-96k.flac", np.repeat(samples, 6), 96000, subtype="PCM_24")
    sf.write(audio / "float.wav", np.stack([samples] * 4, axis=1), SAMPLE_RATE, subtype="FLOAT")
    sf.write(audio / "int32.wav", samples, 22050, subtype="PCM_32")
    write_wav(audio / "émission 東京.wav", samples)
    odd_name = os.fsdecode(b"caf\xe9.wav")
    write_wav(os.path.join(os.fsdecode(bytes(audio)), odd_name), samples)
    os.symlink(audio, audio / "loop")  # a symlink loop must not hang or duplicate

    archive = Archive.open(tmp_path / "index", fake_bundle(lexicon()))
    report = archive.add([audio])
    failed = {os.path.basename(issue.path): issue.reason for issue in report.errors}
    assert set(failed) == {"empty.wav", "text.mp3", "truncated.flac", "garbage.ogg"}
    assert all(reason and "\n" not in reason for reason in failed.values())
    skipped = {os.path.basename(issue.path): issue.reason for issue in report.skipped}
    assert skipped == {"silence.wav": "is silent", "tiny.wav": skipped["tiny.wav"]} and "too short" in skipped["tiny.wav"]
    indexed = {os.path.basename(p) for p in report.added}
    assert {"good.wav", "short.wav", "stereo-8k.wav", "mono-96k.flac", "float.wav", "int32.wav",
            "émission 東京.wav", odd_name} <= indexed
    assert not any("loop" in p for p in report.added)
    assert not report.ok

    # every decodable file finds its own audio
    for name in ("stereo-8k.wav", "mono-96k.flac", odd_name):
        hits = archive.search_audio(tone_word("garden"), top=20)
        assert any(os.path.basename(h.file) == name for h in hits)
    # failed files are retried, skipped ones are not
    again = archive.add([audio])
    assert {os.path.basename(i.path) for i in again.errors} == set(failed)
    assert not again.skipped and again.unchanged == len(report.added)


NOBODY = 65534


def _index_unprivileged(folder: str):
    """Index `folder` (audio/ into index/) as the current user, or, as root (who reads any file
    whatever its permissions), in a forked child that first drops to uid/gid 65534; returns
    (added, errors) as strings."""

    def run():
        report = Archive.open(os.path.join(folder, "index"), fake_bundle()).add([os.path.join(folder, "audio")])
        return sorted(report.added), [str(issue) for issue in report.errors]

    if os.geteuid() != 0:
        return run()
    # The unprivileged child may not reach the interpreter's own files (they can live under
    # /root), so everything indexing imports lazily is imported here first, by a run as root.
    warm_up = tempfile.mkdtemp()
    write_wav(os.path.join(warm_up, "a.wav"), tone_word("apple"))
    Archive.open(os.path.join(warm_up, "index"), fake_bundle()).add([warm_up])
    shutil.rmtree(warm_up)
    queue = multiprocessing.get_context("fork").SimpleQueue()

    def child():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
        try:
            queue.put(("ok", run()))
        except BaseException:
            queue.put(("crash", traceback.format_exc()))

    worker = multiprocessing.get_context("fork").Process(target=child)
    worker.start()
    worker.join()
    kind, result = queue.get()
    assert kind == "ok", result
    return result


def test_unreadable_file_and_folder_are_reported(tmp_path):
    # Not under tmp_path: pytest's base folder is private to its user, and as root the
    # indexing runs as an unprivileged user who must reach this folder.
    folder = tempfile.mkdtemp(prefix="archive-search-permissions-")
    try:
        audio = os.path.join(folder, "audio")
        os.makedirs(os.path.join(audio, "private"))
        write_wav(os.path.join(audio, "good.wav"), tone_word("apple"))
        write_wav(os.path.join(audio, "locked.wav"), tone_word("river"))
        write_wav(os.path.join(audio, "private", "hidden.wav"), tone_word("garden"))
        if os.geteuid() == 0:
            for path in (folder, audio, os.path.join(audio, "private"), *(os.path.join(audio, n) for n in ("good.wav", "locked.wav"))):
                os.chown(path, NOBODY, NOBODY)
        os.chmod(os.path.join(audio, "locked.wav"), 0)
        os.chmod(os.path.join(audio, "private"), 0)
        added, errors = _index_unprivileged(folder)
        assert added == [os.path.join(audio, "good.wav")]  # the rest is indexed
        assert sorted(errors) == [
            f"{os.path.join(audio, 'locked.wav')}: cannot be read: Permission denied",
            f"{os.path.join(audio, 'private')}: cannot be read: Permission denied",
        ]
        store = Store.open(os.path.join(folder, "index"))
        assert set(store.stored_files()) == {os.path.join(audio, "good.wav")} and store.check().ok
        store.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_long_file_is_streamed_in_chunks(tmp_path, monkeypatch):
    samples, _ = episode(["apple", "river"] * 20)  # about 34 s
    write_wav(tmp_path / "long.wav", samples)
    bundle = fake_bundle(lexicon())
    import archive_search.indexer.core as core

    monkeypatch.setattr(core, "STREAM_CHUNK_S", 5.0)
    archive = Archive.open(tmp_path / "index", bundle)
    seen = []
    report = archive.add([tmp_path / "long.wav"], progress=seen.append)
    assert bundle.audio.calls >= 7  # one embedding call per 5 s chunk, not one for the file
    assert report.windows_added == len(window_spans(len(samples) / SAMPLE_RATE))
    assert seen[-1].files_done == 1 and seen[-1].audio_s == pytest.approx(len(samples) / SAMPLE_RATE)
    assert [p.audio_s for p in seen] == sorted(p.audio_s for p in seen)


def test_second_indexer_is_refused_and_other_model_is_refused(tmp_path):
    write_wav(tmp_path / "a.wav", tone_word("apple"))
    archive = Archive.open(tmp_path / "index", fake_bundle())
    archive.add([tmp_path / "a.wav"])
    holder = Store.open_for_writing(tmp_path / "index", Store.open(tmp_path / "index").settings)
    with pytest.raises(IndexLockedError):
        archive.add([tmp_path / "a.wav"])
    holder.close()
    with pytest.raises(IndexMismatchError, match="fake-v1"):
        Archive.open(tmp_path / "index", fake_bundle(name="other-model")).add([tmp_path / "a.wav"])
    with pytest.raises(IndexMismatchError):
        Archive.open(tmp_path / "index", fake_bundle(name="other-model")).search("apple")


def test_folder_given_twice_and_missing_folder(tmp_path):
    write_episodes(tmp_path / "audio", count=2)
    report = Archive.open(tmp_path / "index", fake_bundle()).add([tmp_path / "audio", tmp_path / "audio" / "sub", tmp_path / "nope"])
    assert len(report.added) == 2
    assert [os.path.basename(i.path) for i in report.errors] == ["nope"] and "does not exist" in report.errors[0].reason
    shutil.rmtree(tmp_path / "audio")
    report = Archive.open(tmp_path / "index", fake_bundle()).add([tmp_path])
    assert len(report.removed) == 2 and contents(tmp_path / "index") == {}


def test_audio_without_extension_is_indexed_when_named(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    write_wav(audio / "recording.wav", tone_word("apple"))
    os.rename(audio / "recording.wav", audio / "recording")  # wav bytes, no extension
    (audio / "README").write_text("not audio\n")
    archive = Archive.open(tmp_path / "index", fake_bundle())
    walked = archive.add([audio])
    assert walked.ok and walked.files_seen == 0  # a folder walk takes audio names only
    named = archive.add([audio / "recording", audio / "README"])
    assert named.added == [str(audio / "recording")]
    assert [issue.path for issue in named.errors] == [str(audio / "README")]
    assert "\n" not in named.errors[0].reason
