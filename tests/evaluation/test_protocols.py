"""Word discrimination, LibriPhrase-style, clip KWS and windowed STD/KWS on tone "speech"."""

import numpy as np
import pytest

from archive_search.errors import EvaluationError
from archive_search.evaluation.kws import (
    EmbeddingScorer,
    PhraseTrial,
    RerankerScorer,
    WindowedUtterance,
    clip_kws,
    mixed_clip_kws,
    load_labelled_clips,
    phrase_detection,
    window_spans,
    windowed_detection,
    windowed_queries,
)
from archive_search.evaluation.word_discrimination import WordSegment, word_discrimination, word_segments

from .tones import WORDS, ToneAudioEmbedder, ToneReranker, ToneTextEmbedder, tone, write_corpus


class TableEmbedder:
    """Returns a fixed vector per clip; the clip's first sample is its row in the table."""

    name = "table"

    def __init__(self, table):
        self.table = np.asarray(table, np.float32)
        self.dim = self.table.shape[1]

    def embed_clips(self, clips):
        return self.table[[int(c[0]) for c in clips]]


def clip(i):
    return np.full(10, i, np.float32)


def test_word_discrimination_ap_by_hand():
    # segments a0 a1 b2 b3; vectors chosen so the pair (a0, a1) ranks below the negative (a1, b2)
    angle = np.deg2rad([0, 60, 50, 115])
    table = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    segments = [WordSegment(clip(i), w, ("AH",)) for i, w in enumerate(["a", "a", "b", "b"])]
    result = word_discrimination(segments, TableEmbedder(table))
    # pair angles: a0a1 60 (+), a0b2 50, a0b3 115, a1b2 10, a1b3 55, b2b3 65 (+)
    # ranking by cosine: a1b2, a0b2, a1b3 (all -), a0a1 (+, rank 4), b2b3 (+, rank 5), a0b3
    view = result.acoustic["all"]
    assert view.n_positive == 2 and view.n_negative == 4
    assert view.ap == pytest.approx((1 / 4 + 2 / 5) / 2)
    assert view.mean_positive == pytest.approx(np.mean(np.cos(np.deg2rad([60, 65]))))
    assert result.cross == {}


def test_word_discrimination_perfect_and_split_by_vocabulary():
    rng = np.random.default_rng(1)
    segments = [WordSegment(tone(w, 0.6, rng), w, ()) for w in WORDS for _ in range(3)]
    result = word_discrimination(segments, ToneAudioEmbedder(), ToneTextEmbedder(), training_vocabulary=WORDS[:4])
    assert result.acoustic["all"].ap == pytest.approx(1.0)
    assert result.cross["all"].ap == pytest.approx(1.0)
    assert result.split_sizes == {"all": (18, 6), "iv": (12, 4), "oov": (6, 2)}
    # OOV pairs: 2 words x 3 instances -> 15 pairs, 6 positive; cross: 6 segments x 2 words
    assert result.acoustic["oov"].n_positive == 6 and result.acoustic["oov"].n_negative == 9
    assert result.cross["oov"].n_positive == 6 and result.cross["oov"].n_negative == 6
    # a text encoder that gives every word the same vector cannot discriminate in the cross view
    deaf = word_discrimination(segments, ToneAudioEmbedder(), ToneTextEmbedder(deaf=True))
    assert deaf.cross["all"].ap < 0.5


def test_word_segments_cut_from_manifest(tmp_path):
    utterances = write_corpus(tmp_path, [["alpha", "bravo"], ["alpha", "charlie"]])
    segments = word_segments(utterances, tmp_path, min_s=0.5, max_s=2.0)
    assert sorted(s.word for s in segments) == ["alpha", "alpha", "bravo", "charlie"]
    for segment in segments:
        assert segment.audio.size == pytest.approx((segment.end - segment.start) * 16000, abs=2)
        assert segment.phonemes  # dictionary pronunciation
        assert np.argmax(ToneAudioEmbedder().embed_clips([segment.audio])[0]) == WORDS.index(segment.word)
    assert len(word_segments(utterances, tmp_path, max_per_word=1)) == 3
    assert word_segments(utterances, tmp_path, min_s=5.0) == []


def test_phrase_detection_easy_and_hard():
    rng = np.random.default_rng(2)
    trials = []
    for word in WORDS:
        audio = tone(word, 0.6, rng)
        trials.append(PhraseTrial(audio, word, True, "easy"))
        other = WORDS[(WORDS.index(word) + 1) % len(WORDS)]
        third = WORDS[(WORDS.index(word) + 2) % len(WORDS)]
        trials.append(PhraseTrial(audio, other, False, "easy"))
        # "hard": positives spoken over another word, negatives that hold some of the wrong word
        trials.append(PhraseTrial(audio + tone(third, 0.6), word, True, "hard"))
        level = 0.8 if WORDS.index(word) % 2 else 1.2  # half of them louder than the target
        trials.append(PhraseTrial(audio + level * tone(other, 0.6), other, False, "hard"))
    results = phrase_detection(trials, RerankerScorer(ToneReranker()))
    assert results["easy"].eer == 0.0 and results["easy"].auc == 1.0
    # hard positives score 1/sqrt(2); half the hard negatives score above, half below
    assert results["hard"].eer == pytest.approx(0.5) and results["hard"].auc == pytest.approx(0.5)
    assert results["all"].n_positive == 12 and results["all"].n_negative == 12
    embedding = phrase_detection(trials, EmbeddingScorer(ToneAudioEmbedder(), ToneTextEmbedder()))
    assert embedding["easy"].eer == 0.0


def test_clip_kws_on_labelled_folder(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(3)
    for word in WORDS[:3]:
        for take in range(4):
            sf.write(tmp_path / f"{word}_spk_{take}.wav", tone(word, 0.5, rng), 16000)
    (tmp_path / "README.txt").write_text("not a clip")
    clips, labels, paths = load_labelled_clips(tmp_path)
    assert len(clips) == 12 and labels.count("alpha") == 4
    result = clip_kws(clips, labels, RerankerScorer(ToneReranker()))
    assert result.scores.shape == (12, 3)
    assert result.pooled.eer == 0.0 and result.pooled.n_positive == 12 and result.pooled.n_negative == 24
    assert set(result.per_keyword) == {"alpha", "bravo", "charlie"}
    deaf = clip_kws(clips, labels, EmbeddingScorer(ToneAudioEmbedder(), ToneTextEmbedder(deaf=True)))
    assert deaf.pooled.eer > 0.3
    # The engine's mix: all reranker, all cosine, or in between on the very same trials.
    assert mixed_clip_kws(deaf, result, 1.0).pooled.eer == 0.0
    assert mixed_clip_kws(deaf, result, 0.0).pooled.eer == pytest.approx(deaf.pooled.eer)
    half = mixed_clip_kws(deaf, result, 0.5)
    np.testing.assert_allclose(half.scores, 0.5 * (deaf.scores + result.scores))
    assert half.pooled.n_positive == 12 and half.pooled.n_negative == 24
    with pytest.raises(EvaluationError):
        mixed_clip_kws(deaf, clip_kws(clips[:6], labels[:6], RerankerScorer(ToneReranker())), 0.5)
    assert len(load_labelled_clips(tmp_path, max_per_label=2)[0]) == 6
    with pytest.raises(EvaluationError):
        clip_kws(clips[:1], labels[:1], RerankerScorer(ToneReranker()))


def test_window_spans_cover_the_utterance():
    spans = window_spans(1.0, 0.3, 0.15)
    assert spans[0].tolist() == [0.0, 0.3]
    assert spans[-1][1] == pytest.approx(1.0)
    assert np.allclose(spans[:, 1] - spans[:, 0], 0.3)
    assert window_spans(0.2, 0.3, 0.15).tolist() == [[0.0, 0.2]]


def test_windowed_detection_table_ii(tmp_path):
    rng = np.random.default_rng(4)
    scripts = [list(rng.choice(WORDS, 3, replace=False)) for _ in range(8)]
    utterances = write_corpus(tmp_path, scripts)
    import soundfile as sf

    loaded = [WindowedUtterance(u.id, sf.read(tmp_path / u.audio, dtype="float32")[0], u.words) for u in utterances]
    queries = windowed_queries(loaded, min_phonemes=3, min_utterances=2)
    assert queries and set(queries) <= set(WORDS)
    results = windowed_detection(
        loaded,
        ToneAudioEmbedder(),
        ToneTextEmbedder(),
        queries,
        window_sizes=(0.3, 0.6),
        training_vocabulary=WORDS[:3],
        reranker=ToneReranker(),
    )
    cells = {(r.task, r.window_s, r.split, r.scoring): r for r in results}
    assert ("kws", 0.3, "all", "jmcl") in cells and ("std", 0.6, "oov", "rerank") in cells and ("kws", 0.6, "iv", "engine") in cells
    for result in results:
        assert result.eer == pytest.approx(0.0), result
    # STD leaves the exemplar's own utterance out: one trial fewer per query than KWS
    assert cells[("std", 0.3, "all", "jmcl")].n_positive + cells[("std", 0.3, "all", "jmcl")].n_negative == (
        cells[("kws", 0.3, "all", "jmcl")].n_positive + cells[("kws", 0.3, "all", "jmcl")].n_negative - len(queries)
    )
    deaf = windowed_detection(loaded, ToneAudioEmbedder(), ToneTextEmbedder(deaf=True), queries, window_sizes=(0.3,), tasks=("kws",))
    assert deaf[0].eer > 0.2

    # The engine row mixes by the reranker's own weight: all reranker, or all JMCL similarity.
    def engine_and_parts(weight):
        reranker = ToneReranker()
        reranker.text_weight = weight
        rows = windowed_detection(loaded, ToneAudioEmbedder(), ToneTextEmbedder(deaf=True), queries,
                                  window_sizes=(0.3,), tasks=("kws",), reranker=reranker)  # fmt: skip
        return {r.scoring: r.eer for r in rows if r.split == "all"}

    only_rerank, only_jmcl = engine_and_parts(1.0), engine_and_parts(0.0)
    assert only_rerank["engine"] == pytest.approx(only_rerank["rerank"])
    assert only_jmcl["engine"] == pytest.approx(only_jmcl["jmcl"])
    assert abs(only_rerank["rerank"] - only_jmcl["jmcl"]) > 0.05, (only_rerank, only_jmcl)


def test_rerank_region_follows_the_best_run_of_windows_when_asked():
    from archive_search.audio import SAMPLE_RATE
    from archive_search.evaluation.kws import _rerank

    class RegionRecorder:
        """Scores 1; records where each region starts (the audio's samples are their own times)."""

        def __init__(self):
            self.starts = []

        def score_text(self, regions, phonemes, text):
            self.starts += [float(region[0]) for region in regions]
            return np.ones(len(regions))

    audio = (np.arange(8 * SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    spans = window_spans(8.0, 0.2, 0.1)
    column = np.zeros(len(spans))
    column[5] = 0.9  # a stray best window at 0.5-0.7 s
    column[50:54] = 0.7  # the word: four windows in a row, 5.0-5.5 s
    utterances = [WindowedUtterance("u", audio, [])]
    starts = {}
    for stretch in (1, 4):
        recorder = RegionRecorder()
        _rerank(utterances, [spans], [column[:, None]], ["alpha"], [None], "kws", recorder, np.ones((1, 1), bool), stretch)
        starts[stretch] = recorder.starts[0]
    assert starts[1] < 1.0  # centred on 0.6 s, clipped at the start of the audio
    assert 4.0 < starts[4] < 5.0  # centred on the run at 5.25 s


def test_oov_list_splits_like_a_training_vocabulary():
    from archive_search.evaluation.word_discrimination import OOVList

    rng = np.random.default_rng(6)
    segments = [WordSegment(tone(w, 0.6, rng), w, ()) for w in WORDS for _ in range(2)]
    by_list = word_discrimination(segments, ToneAudioEmbedder(), training_vocabulary=OOVList(WORDS[4:]))
    by_vocab = word_discrimination(segments, ToneAudioEmbedder(), training_vocabulary=WORDS[:4])
    assert by_list.split_sizes == by_vocab.split_sizes == {"all": (12, 6), "iv": (8, 4), "oov": (4, 2)}
    assert "ALPHA" in OOVList(["bravo"]) and "bravo" not in OOVList(["Bravo "])
