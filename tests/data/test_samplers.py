"""Samplers over aligned utterances built in code: word instances, N x M batches, LibriPhrase-style
pairs, word-discrimination trials."""

from __future__ import annotations

import random

import pytest

from archive_search.data import samplers
from archive_search.data.manifest import AlignedUnit, Utterance
from archive_search.embedders.g2p import word_phonemes
from archive_search.errors import DataError

WORDS = ["cat", "hat", "dog", "table", "water", "garden", "yellow", "morning", "window", "paper"]


def _utterance(uid: str, words: list[str], speaker: str, word_s: float = 0.6, gap_s: float = 0.1, split="train"):
    units, t = [], 0.2
    for word in words:
        units.append(AlignedUnit(word, round(t, 3), round(t + word_s, 3)))
        t += word_s + gap_s
    return Utterance(uid, f"audio/{uid}.wav", t + 0.2, " ".join(words), units, [], speaker, "test", split)


def _corpus(seed: int = 0, utterances: int = 40) -> list[Utterance]:
    rng = random.Random(seed)
    return [
        _utterance(f"u{k}", rng.sample(WORDS, 4), f"spk{k % 6}")
        for k in range(utterances)
    ]


def test_word_instances_filters_and_takes_aligned_phones():
    aligned = Utterance(
        "a", "/data/a.wav", 2.0, "the cat <unk> sat",
        [AlignedUnit("the", 0.1, 0.2), AlignedUnit("cat", 0.2, 0.6), AlignedUnit("<unk>", 0.6, 0.9), AlignedUnit("sat", 0.9, 3.5)],
        [AlignedUnit("DH", 0.1, 0.15), AlignedUnit("AH", 0.15, 0.2), AlignedUnit("K", 0.2, 0.3), AlignedUnit("EH", 0.3, 0.5),
         AlignedUnit("T", 0.5, 0.6)],
        "spk", "x",
    )  # fmt: skip
    instances = samplers.word_instances([aligned], min_s=0.05, max_s=2.0)
    assert [(i.word, i.start, i.end) for i in instances] == [("the", 0.1, 0.2), ("cat", 0.2, 0.6)]  # <unk>, long dropped
    assert instances[1].phones == ("K", "EH", "T")  # what was said, not the dictionary's AE
    assert instances[1].audio == "/data/a.wav" and instances[1].speaker == "spk"
    plain = samplers.word_instances([_utterance("b", ["yellow"], "s")], root="/root")
    assert plain[0].phones == tuple(word_phonemes("yellow")) and plain[0].audio == "/root/audio/b.wav"


def test_word_batches_are_n_by_m_distinct_words_and_speakers():
    instances = samplers.word_instances(_corpus())
    sampler = samplers.WordBatchSampler(instances, words_per_batch=4, instances_per_word=3, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(WORDS) // 4
    for batch in batches:
        assert len(batch) == 12
        words = sampler.words(batch)
        assert len(set(words)) == 4
        for j, word in enumerate(words):
            group = [instances[i] for i in batch[j * 3 : (j + 1) * 3]]
            assert all(i.word == word for i in group)
            assert len({i.speaker for i in group}) == 3  # six speakers available: all different
    assert list(samplers.WordBatchSampler(instances, 4, 3, seed=1)) == batches
    sampler.set_epoch(1)
    assert list(sampler) != batches
    with pytest.raises(DataError, match="words"):
        samplers.WordBatchSampler(instances, words_per_batch=50, instances_per_word=3)


def test_phrase_segments_are_continuous_and_disjoint():
    utterance = _utterance("p", WORDS, "s")
    # a long pause after the fifth word: no phrase may span it
    shifted = [w if k < 5 else AlignedUnit(w.label, w.start + 1.0, w.end + 1.0) for k, w in enumerate(utterance.words)]
    utterance.words = shifted
    segments = samplers.phrase_segments([utterance], max_words=4, seed=3)
    assert " ".join(s.word for s in segments) == " ".join(WORDS)
    assert all(1 <= len(s.word.split()) <= 4 for s in segments)
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))
    assert not any(s.start < shifted[4].end < s.end and s.end > shifted[5].start for s in segments)
    assert any(len(s.word.split()) > 1 for s in segments)


def test_phrase_pairs_hard_negatives_are_nearer_than_easy_ones():
    segments = samplers.phrase_segments(_corpus(utterances=30), max_words=2, seed=0)
    pairs = samplers.phrase_pairs(segments, seed=0)
    by_anchor: dict[int, dict[str, samplers.PhrasePair]] = {}
    for pair in pairs:
        by_anchor.setdefault(id(pair.anchor), {})[pair.kind] = pair
    assert len(by_anchor) == len(segments)
    for kinds in by_anchor.values():
        positive = kinds["positive"]
        assert positive.target and positive.text == positive.anchor.word
        hard, easy = kinds["hard"], kinds["easy"]
        assert not hard.target and not easy.target and hard.text != positive.text
        assert 0 < hard.distance <= easy.distance
        assert len(hard.text.split()) == len(positive.text.split()) == len(easy.text.split())
    cat = next(k for k in by_anchor.values() if k["positive"].text == "cat")
    assert cat["hard"].text == "hat"  # one phone apart
    sets = samplers.libriphrase_test_sets(pairs)
    assert {p.kind for p in sets["easy"]} == {"positive", "easy"} and {p.kind for p in sets["hard"]} == {"positive", "hard"}


def test_word_discrimination_trials_split_iv_and_oov():
    corpus = _corpus(utterances=20) + [_utterance("short", ["cat"], "s", word_s=0.3), _utterance("solo", ["zebra"], "s")]
    split = samplers.word_discrimination_segments(corpus, training_vocabulary=["cat", "hat", "dog", "table", "water"])
    assert {i.word for i in split["iv"]} <= {"cat", "hat", "dog", "table", "water"}
    assert {i.word for i in split["oov"]} == {"garden", "yellow", "morning", "window", "paper"}  # zebra: one instance
    assert all(0.5 <= i.duration <= 2.0 for part in split.values() for i in part)
    first, second, same = samplers.trial_pairs(split["iv"])
    n = len(split["iv"])
    assert len(first) == n * (n - 1) // 2 and (first < second).all()
    words = [i.word for i in split["iv"]]
    expected = sum(words.count(w) * (words.count(w) - 1) // 2 for w in set(words))
    assert same.sum() == expected
