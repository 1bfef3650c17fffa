import os

import numpy as np
import pytest

from archive_search import Archive, Hit
from archive_search.errors import AudioDecodeError, IndexNotFoundError, QueryError
from tests.fakes import fake_bundle, lexicon, tone_word, write_episodes, write_wav


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    truth = write_episodes(root / "audio", count=6)
    bundle = fake_bundle(lexicon())
    archive = Archive.open(root / "index", bundle)
    assert archive.add([root / "audio"]).ok
    return root, truth, bundle


def occurrences(truth, word):
    return {(path, start) for path, times in truth.items() for w, start, _ in times if w == word}


@pytest.mark.parametrize("word", ["apple", "market", "coffee"])
def test_text_search_ranks_every_occurrence_first(built, word):
    root, truth, bundle = built
    expected = occurrences(truth, word)
    hits = Archive.open(root / "index", bundle).search(word, top=len(expected))
    assert len(hits) == len(expected)
    for hit in hits:
        assert isinstance(hit, Hit) and 0.0 <= hit.score <= 1.0 and os.path.isabs(hit.file)
        assert any(hit.file == path and abs(hit.start - start) <= 0.5 for path, start in expected), hit
        assert hit.end - hit.start <= 1.0  # tight, not the whole padded region
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_query_by_example_finds_a_copied_clip(built, tmp_path):
    root, truth, bundle = built
    path = sorted(truth)[2]
    word, start, end = truth[path][1]
    import soundfile as sf

    samples, rate = sf.read(path, dtype="float32")
    clip = np.concatenate([np.zeros(3000, np.float32), samples[int(start * rate) : int(end * rate)], np.zeros(3000, np.float32)])
    write_wav(tmp_path / "clip.wav", clip)
    archive = Archive.open(root / "index", bundle)
    for query in (tmp_path / "clip.wav", clip):
        hits = archive.search_audio(query, top=3)
        assert hits[0].file == path and abs(hits[0].start - start) <= 0.5
        expected = occurrences(truth, word)
        assert all(any(h.file == p and abs(h.start - s) <= 0.5 for p, s in expected) for h in hits)
    assert hits[0].query == "<audio>"
    assert archive.search_audio(tmp_path / "clip.wav", top=1)[0].query == str(tmp_path / "clip.wav")


def test_top_threshold_and_no_reranker(built):
    root, truth, bundle = built
    archive = Archive.open(root / "index", bundle)
    assert len(archive.search("river", top=2)) == 2
    strong = archive.search("river", top=50, threshold=0.8)
    assert strong and all(h.score >= 0.8 for h in strong)
    assert len(strong) == len(occurrences(truth, "river"))
    plain = Archive.open(root / "index", fake_bundle(lexicon(), reranker=False))
    hits = plain.search("river", top=3)
    assert {(h.file, h.start) for h in hits} == {(h.file, h.start) for h in archive.search("river", top=3)}
    assert all(0 <= h.score <= 1 for h in hits)


def test_unusable_queries(built, tmp_path):
    root, _, bundle = built
    archive = Archive.open(root / "index", bundle)
    for text in ("", "   ", "!!! ???", "🎉🎉"):
        with pytest.raises(QueryError):
            archive.search(text)
    with pytest.raises(QueryError, match="at most"):
        archive.search("word " * 40)
    assert archive.search("42", top=1)  # numbers become words
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(AudioDecodeError, match="notes.wav"):
        archive.search_audio(tmp_path / "notes.wav")
    with pytest.raises(QueryError, match="silent"):
        archive.search_audio(np.zeros(16000, np.float32))
    with pytest.raises(QueryError, match="too short"):
        archive.search_audio(tone_word("apple")[:500])
    with pytest.raises(QueryError, match="top"):
        archive.search("apple", top=0)


def test_missing_index_fails_before_loading_models(tmp_path, monkeypatch):
    import archive_search.api as api

    def no_models():
        raise AssertionError("models must not be loaded for a missing index")

    monkeypatch.setattr(api, "load_models", no_models)
    with pytest.raises(IndexNotFoundError, match="archive-index"):
        Archive.open(tmp_path / "none").search("apple")


def test_vanished_file_is_skipped_at_search_time(tmp_path):
    truth = write_episodes(tmp_path / "audio", count=2)
    archive = Archive.open(tmp_path / "index", fake_bundle(lexicon()))
    archive.add([tmp_path / "audio"])
    gone = sorted(truth)[0]
    os.remove(gone)
    hits = archive.search("market", top=5)  # not re-indexed yet: its regions cannot be reranked
    assert hits and all(h.file != gone for h in hits)
