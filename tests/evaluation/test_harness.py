"""A tiny end-to-end search evaluation: generated audio, the real Archive API, fake models."""

import json

import numpy as np
import pytest

from archive_search.data.manifest import AlignedUnit, Utterance, write_manifest
from archive_search.errors import DataError, EvaluationError
from archive_search.evaluation.harness import (
    Detection,
    EngineSystem,
    Query,
    load_corpus,
    make_queries,
    read_queries,
    retrieval_only,
    evaluate,
    write_queries,
)
from archive_search.evaluation.report import write_search_report
from tests.fakes import WORD_BANDS, episode, fake_bundle, tone_word, write_wav

WORDS = sorted(WORD_BANDS)


class RandomSystem:
    """A system that ignores the audio: detections at random places with random scores."""

    name = "random"
    threshold = 0.5

    def __init__(self, files_and_durations):
        self.places = files_and_durations
        self.rng = np.random.default_rng(0)

    def index(self, files):
        return 0.0

    def search(self, text, top):
        out = []
        for _ in range(top):
            file, duration = self.places[self.rng.integers(len(self.places))]
            start = float(self.rng.uniform(0, duration - 0.5))
            out.append(Detection(file, start, start + 0.5, float(self.rng.random())))
        return out

    def search_audio(self, clip, top):
        raise NotImplementedError


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(7)
    utterances = []
    for i in range(3):
        words = [WORDS[j] for j in rng.permutation(len(WORDS))[:6]] + [WORDS[i], WORDS[i + 1]]
        samples, times = episode(words, seed=i)
        write_wav(folder / f"ep{i}.wav", samples)
        utterances.append(
            Utterance(f"ep{i}", f"ep{i}.wav", len(samples) / 16000, " ".join(words), [AlignedUnit(w, s, e) for w, s, e in times])
        )
    write_manifest(folder / "manifest.jsonl", utterances)
    return folder


def test_corpus_truth_and_query_list(corpus_dir, tmp_path):
    corpus = load_corpus(corpus_dir / "manifest.jsonl")
    counts = corpus.word_counts()
    assert sum(counts.values()) == 24
    occurrences = corpus.occurrences(["apple"])
    assert len(occurrences) == counts["apple"]
    assert all(o.file.endswith(".wav") and o.end > o.start for o in occurrences)
    # a phrase: two consecutive words, one span from the first start to the second end
    first = corpus._tokens[corpus.files[0]]
    phrase = corpus.occurrences([first[0][0], first[1][0]])
    assert any(o.start == first[0][1] and o.end == first[1][2] for o in phrase)

    vocabulary = set(WORDS[:4])
    queries = make_queries(
        corpus, vocabulary, n_words=6, n_phrases=2, n_absent=2, n_spoken=2, absent_pool=["banana", "rocket", "apple"], phrase_max_gap=0.5
    )
    kinds = [(q.kind, q.absent) for q in queries]
    assert kinds.count(("text", False)) == 8 and kinds.count(("text", True)) == 2 and kinds.count(("spoken", False)) == 2
    assert {q.text for q in queries if q.absent} == {"banana", "rocket"}  # "apple" is spoken there
    for query in queries:
        if query.kind == "spoken":
            assert query.probe in corpus.occurrences(query.words) and len(corpus.occurrences(query.words)) >= 2
        if not query.absent and query.length != "phrase":
            assert query.vocabulary == ("iv" if query.text in vocabulary else "oov")
    write_queries(tmp_path / "q.jsonl", queries)
    assert read_queries(tmp_path / "q.jsonl") == queries
    (tmp_path / "q.txt").write_text("apple\nBanana!\n")
    plain = read_queries(tmp_path / "q.txt", corpus, vocabulary)
    assert [(q.text, q.absent, q.vocabulary) for q in plain] == [("apple", False, "iv"), ("banana", True, "oov")]
    (tmp_path / "bad.txt").write_text("???\n")
    with pytest.raises(DataError):
        read_queries(tmp_path / "bad.txt")


def test_end_to_end_evaluation_of_engine_and_peers(corpus_dir, tmp_path):
    corpus = load_corpus(corpus_dir / "manifest.jsonl")
    lexicon = {w: tone_word(w) for w in WORDS}
    engine = EngineSystem(tmp_path / "index", fake_bundle(lexicon), threshold=0.9)
    queries = [Query(f"w{i}", w, "text", "long", "iv") for i, w in enumerate(WORDS)]
    queries += [Query("a0", "banana", "text", "long", "oov", absent=True)]
    spoken = corpus.occurrences(["river"])[0]
    queries += [Query("s0", "river", "spoken", "long", "iv", probe=spoken)]
    places = [(u_file, 10.0) for u_file in corpus.files]
    evaluation = evaluate(corpus, queries, [engine, retrieval_only(engine), RandomSystem(places)], top=10)

    names = [s.name for s in evaluation.systems]
    assert names == ["engine", "jmcl-only", "random"]
    engine_run = evaluation.systems[0]
    assert engine_run.index_seconds > 0 and engine_run.speed > 1
    assert evaluation.systems[1].index_seconds == 0  # shares the engine's index

    good = evaluation.summary("engine", "text")
    bad = evaluation.summary("random", "text")
    # the fake models rank tone words nearly perfectly; random detections do not. (MTWV stays
    # below 1 here: in 30 s of speech one false alarm costs 999.9/30, so any duplicate hit of
    # an occurrence above the last true hit pulls it down.)
    assert good.map > 0.8 and good.mtwv > 0.2
    assert bad.mtwv < 0.1 and bad.map < good.map - 0.5
    assert bad.atwv < 0  # false alarms cost more than the few lucky hits gain
    assert evaluation.summary("engine", "absent").n_queries == 1
    assert evaluation.summary("random", "absent").false_alarms > 0
    spoken_row = evaluation.summary("engine", "spoken")
    assert spoken_row.n_queries == 1 and spoken_row.n_occurrences == len(corpus.occurrences(["river"])) - 1
    # the probe's own place is neither hit nor false alarm
    spoken_run = next(r for r in engine_run.runs if r.query.id == "s0")
    assert spoken_run.alignment.n_true == spoken_row.n_occurrences
    assert evaluation.summary("random", "spoken") is None  # it has no spoken-query mode
    assert good.latency_p50_ms is not None and good.latency_p50_ms > 0

    report = write_search_report(evaluation, tmp_path / "out", command="archive-eval search ...")
    text = report.read_text()
    assert "| text | engine |" in text and "det.png" in text
    # the random peer beats the engine nowhere, and the report says where anyone does
    section = text.split("## Where a peer beats the engine")[1].split("##")[0]
    assert "random" not in section
    for png in ("det.png", "scores.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert {s["group"] for s in results["summaries"]} >= {"text", "text/long", "text/iv", "spoken", "absent"}


def test_corpus_without_word_times_is_refused(tmp_path):
    write_manifest(tmp_path / "m.jsonl", [Utterance("u", "u.wav", 1.0, "seven")])
    with pytest.raises(EvaluationError):
        load_corpus(tmp_path / "m.jsonl")
