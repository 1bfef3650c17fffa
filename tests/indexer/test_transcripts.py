"""Transcripts at index time: stored with the windows, packed for short files, streamed for long
ones, added to older indexes on a re-run, and safe against SIGKILL."""

import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from archive_search import Archive
from archive_search.audio import SAMPLE_RATE, WINDOW_HOP_FRACTION, WINDOW_SCALES_S
from archive_search.embedders.transcriber import PIECE_S
from archive_search.indexer.core import Indexer, embed_file, index_settings
from archive_search.storage.store import Store
from tests.fakes import (
    WORD_BANDS,
    FakeAudioEmbedder,
    FakeTranscriber,
    FakeWhisperEmbedder,
    FakeWhisperTranscriber,
    episode,
    fake_bundle,
    write_episodes,
    write_wav,
)
from tests.indexer.test_indexer import contents

FORK = multiprocessing.get_context("fork")


def transcripts(index_dir) -> dict[str, list[tuple[str, float, float]]]:
    store = Store.open(index_dir)
    try:
        return {w.file: list(zip(w.tokens, np.round(w.starts, 2).tolist(), np.round(w.ends, 2).tolist())) for w in store.transcript_words()}
    finally:
        store.close()


def test_every_file_is_transcribed_in_shared_passes(tmp_path):
    truth = write_episodes(tmp_path / "audio", count=5)
    transcriber = FakeTranscriber()
    report = Archive.open(tmp_path / "index", fake_bundle(transcriber=transcriber)).add([tmp_path / "audio"])
    assert report.ok and report.transcribed == 5
    stored = transcripts(tmp_path / "index")
    assert set(stored) == set(truth)
    for path, times in truth.items():
        assert [w[0] for w in stored[path]] == [t[0] for t in times]
        assert [w[1] for w in stored[path]] == pytest.approx([t[1] for t in times], abs=0.02)
    assert report.words_added == sum(len(t) for t in truth.values())
    # five 3-4 s files fit in one 28 s pass
    assert transcriber.calls == 1


def test_a_long_file_is_transcribed_as_it_streams(tmp_path):
    words = [list(WORD_BANDS)[i % len(WORD_BANDS)] for i in range(40)]
    samples, times = episode(words, gap=0.2, seed=2)
    assert len(samples) / SAMPLE_RATE > 25  # longer than a pack
    (tmp_path / "audio").mkdir()
    write_wav(tmp_path / "audio" / "long.wav", samples)
    store = Store.open_for_writing(tmp_path / "index", index_settings("fake-v1", FakeAudioEmbedder().dim))
    try:
        report = Indexer(store, FakeAudioEmbedder(), transcriber=FakeTranscriber(), chunk_s=7.0).run([tmp_path / "audio"])
    finally:
        store.close()
    assert report.ok
    (stored,) = transcripts(tmp_path / "index").values()
    assert [w[0] for w in stored] == words
    assert [w[1] for w in stored] == pytest.approx([t[1] for t in times], abs=0.02)


@pytest.mark.parametrize("chunk_s", [7.0, 60.0])
def test_a_long_file_is_encoded_once_for_words_and_vectors(tmp_path, chunk_s):
    """Where transcriber and audio model read one encoder, the shared pass gives the same
    windows, vectors and words as embedding and transcribing separately, encoding each
    second of audio once."""
    words = [list(WORD_BANDS)[i % len(WORD_BANDS)] for i in range(75)]
    samples, times = episode(words, gap=0.5, seed=4)
    assert len(samples) / SAMPLE_RATE > 2 * PIECE_S
    path = tmp_path / "long.wav"
    write_wav(path, samples)
    transcriber = FakeWhisperTranscriber()
    shared = embed_file(str(path), FakeWhisperEmbedder(), WINDOW_SCALES_S, WINDOW_HOP_FRACTION, chunk_s, transcriber)
    apart = embed_file(str(path), FakeAudioEmbedder(), WINDOW_SCALES_S, WINDOW_HOP_FRACTION, chunk_s)
    order = lambda e: np.lexsort((e.windows[:, 2], e.windows[:, 1], e.windows[:, 0]))  # noqa: E731
    assert np.array_equal(shared.windows[order(shared)], apart.windows[order(apart)])
    assert np.allclose(shared.vectors[order(shared)], apart.vectors[order(apart)], atol=1e-5)
    assert [w.token for w in shared.words] == words
    assert [w.start for w in shared.words] == pytest.approx([t[1] for t in times], abs=0.02)
    assert transcriber.encoded_s == pytest.approx(len(samples) / SAMPLE_RATE, abs=0.01)


def test_short_files_are_embedded_from_their_packs_encoder_pass(tmp_path):
    """Short files wait for their pack: one encoder pass per pack gives their vectors and words,
    equal to embedding each file alone and transcribing the packs."""
    truth = write_episodes(tmp_path / "audio", count=6)

    def build(name, embedder, transcriber):
        store = Store.open_for_writing(tmp_path / name, index_settings("fake-v1", embedder.dim))
        try:
            report = Indexer(store, embedder, transcriber=transcriber).run([tmp_path / "audio"])
        finally:
            store.close()
        assert report.ok and report.transcribed == 6
        return contents(tmp_path / name), transcripts(tmp_path / name)

    embedder, transcriber = FakeWhisperEmbedder(), FakeWhisperTranscriber()
    shared_vectors, shared_words = build("shared", embedder, transcriber)
    apart_vectors, apart_words = build("apart", FakeAudioEmbedder(), FakeTranscriber())
    assert shared_vectors.keys() == apart_vectors.keys()
    assert all(np.allclose(shared_vectors[key], apart_vectors[key], atol=2e-4) for key in apart_vectors)
    assert shared_words == apart_words and set(shared_words) == set(truth)
    assert embedder.calls == 0  # no file was encoded on its own
    assert transcriber.batches == 1  # six 3-4 s files: two packs, encoded and decoded together


def test_an_acoustic_only_index_gains_transcripts_without_being_re_embedded(tmp_path):
    truth = write_episodes(tmp_path / "audio", count=4)
    index = tmp_path / "index"
    first = Archive.open(index, fake_bundle(transcriber=FakeTranscriber())).add([tmp_path / "audio"], transcribe=False)
    assert first.transcribed == 0 and transcripts(index) == {}
    assert Archive.open(index, fake_bundle()).check().untranscribed == 0  # an acoustic-only index lacks nothing
    before = contents(index)
    bundle = fake_bundle(transcriber=FakeTranscriber())
    embedder_calls = bundle.audio.calls
    second = Archive.open(index, bundle).add([tmp_path / "audio"])
    assert second.ok and second.transcribed == 4 and second.unchanged == 4 and not second.added
    assert bundle.audio.calls == embedder_calls  # vectors kept, not recomputed
    assert contents(index) == before
    assert set(transcripts(index)) == set(truth)
    third = Archive.open(index, fake_bundle(transcriber=FakeTranscriber())).add([tmp_path / "audio"])
    assert third.transcribed == 0  # nothing left to add


def test_check_counts_files_without_a_transcript_and_the_next_run_adds_them(tmp_path):
    write_episodes(tmp_path / "audio", count=3)
    index = tmp_path / "index"
    Archive.open(index, fake_bundle(transcriber=FakeTranscriber())).add([tmp_path / "audio"])
    store = Store.open(index)
    victim = sorted(store.stored_files())[0]
    store.close()
    import sqlite3

    with sqlite3.connect(index / "index.sqlite") as db:  # as if the transcript were lost
        db.execute("DELETE FROM words WHERE file_id = (SELECT id FROM files WHERE path = ?)", (os.fsencode(victim),))
        db.execute("DELETE FROM transcripts WHERE file_id = (SELECT id FROM files WHERE path = ?)", (os.fsencode(victim),))
    assert Archive.open(index, fake_bundle()).check().untranscribed == 1
    report = Archive.open(index, fake_bundle(transcriber=FakeTranscriber())).add([tmp_path / "audio"])
    assert report.transcribed == 1
    assert Archive.open(index, fake_bundle()).check().untranscribed == 0


def test_a_changed_file_replaces_its_transcript(tmp_path):
    (tmp_path / "audio").mkdir()
    path = tmp_path / "audio" / "a.wav"
    write_wav(path, episode(["apple", "river"], seed=1)[0])
    index = tmp_path / "index"
    Archive.open(index, fake_bundle(transcriber=FakeTranscriber())).add([tmp_path / "audio"])
    write_wav(path, episode(["garden", "planet", "coffee"], seed=2)[0])
    os.utime(path, (time.time() + 5, time.time() + 5))
    Archive.open(index, fake_bundle(transcriber=FakeTranscriber())).add([tmp_path / "audio"])
    assert [w[0] for w in transcripts(index)[str(path)]] == ["garden", "planet", "coffee"]


class SlowTranscriber(FakeTranscriber):
    def transcribe(self, samples):
        time.sleep(0.05)
        return super().transcribe(samples)


def _index_slowly(audio: str, index: str) -> None:
    bundle = fake_bundle(transcriber=SlowTranscriber())
    store = Store.open_for_writing(index, index_settings(bundle.name, bundle.audio.dim))
    try:
        Indexer(store, bundle.audio, save_every_s=0.0, chunk_s=2.0, transcriber=bundle.transcriber).run([audio])
    finally:
        store.close()


@pytest.mark.slow
def test_sigkill_during_transcription_loses_and_duplicates_nothing(tmp_path):
    rng = np.random.default_rng(3)
    audio, index, clean = tmp_path / "audio", tmp_path / "index", tmp_path / "clean"
    audio.mkdir()
    words = list(WORD_BANDS)
    for i in range(12):  # short files (packed) and two long ones (streamed)
        count = 30 if i < 2 else 3
        write_wav(audio / f"ep{i:02d}.wav", episode(list(rng.choice(words, count)), gap=0.2, seed=i)[0])
    began = time.perf_counter()
    Archive.open(clean, fake_bundle(transcriber=SlowTranscriber())).add([audio])
    clean_seconds = time.perf_counter() - began
    killed = 0
    for _ in range(4):
        worker = FORK.Process(target=_index_slowly, args=(str(audio), str(index)))
        worker.start()
        time.sleep(float(rng.uniform(0.1, 0.6)) * clean_seconds)
        os.kill(worker.pid, signal.SIGKILL)
        worker.join()
        killed += worker.exitcode == -signal.SIGKILL
    assert killed >= 2
    rerun = Archive.open(index, fake_bundle(transcriber=SlowTranscriber())).add([audio])
    assert rerun.ok
    assert transcripts(index) == transcripts(clean)
    assert contents(index) == contents(clean)
    assert Archive.open(index, fake_bundle()).check().untranscribed == 0
