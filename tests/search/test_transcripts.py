"""The transcript channels on hand-made transcripts: exact word sequences and phonetic near matches."""

import numpy as np
import pytest

from archive_search.embedders.g2p import word_phonemes
from archive_search.search.transcripts import TranscriptIndex, phoneme_string, similar_lengths
from archive_search.storage.store import FileWords


def file_words(file: str, tokens: list[str], probability: float = 0.9) -> FileWords:
    """One word per second: word i spans [i, i + 0.8)."""
    starts = np.arange(len(tokens), dtype=np.float64)
    return FileWords(file, starts, starts + 0.8, tokens, np.full(len(tokens), probability),
                     [" ".join(word_phonemes(t)) for t in tokens])  # fmt: skip


@pytest.fixture
def index():
    return TranscriptIndex([
        file_words("/a.wav", "we flew to wagah do goo in the spring".split()),
        file_words("/b.wav", "the market by the river opens at nine".split(), probability=0.6),
        file_words("/c.wav", "a river market and a river barge".split()),
    ])  # fmt: skip


def test_exact_finds_every_consecutive_occurrence_with_its_times(index):
    found = sorted((m.file, m.start, m.end) for m in index.exact(["river", "market"]))
    assert found == [("/c.wav", 1.0, 2.8)]
    singles = sorted((m.file, m.start) for m in index.exact(["river"]))
    assert singles == [("/b.wav", 4.0), ("/c.wav", 1.0), ("/c.wav", 5.0)]
    match = index.exact(["market"])[0]
    assert match.exact and match.similarity == 1.0 and match.words == "market"


def test_exact_needs_the_words_in_order(index):
    assert index.exact(["market", "river"]) == []
    assert index.exact(["ouagadougou"]) == []


def test_phonetic_finds_a_misspelled_name_split_over_three_words(index):
    query = word_phonemes("ouagadougou")
    matches = index.phonetic(query, n_words=1)
    assert matches, "the name must be found through its phonemes"
    best = matches[0]
    assert (best.file, best.words) == ("/a.wav", "wagah do goo")
    assert (best.start, best.end) == (3.0, 5.8)
    assert 0.6 <= best.similarity < 1.0


def test_phonetic_similarity_is_one_minus_normalised_edit_distance(index):
    # "rivers" = R IH V ER Z against "river" = R IH V ER: one insertion over 5 phonemes
    best = index.phonetic(word_phonemes("rivers"), n_words=1)[0]
    assert best.words == "river"
    assert best.similarity == pytest.approx(1 - 1 / 5)


def test_phonetic_keeps_one_span_per_place_and_skips_unrelated_words(index):
    matches = index.phonetic(word_phonemes("market"), n_words=1)
    places = [(m.file, m.start) for m in matches]
    assert len(places) == len(set(places))
    assert {(m.file, m.words) for m in matches if m.similarity == 1.0} == {("/b.wav", "market"), ("/c.wav", "market")}
    assert all(m.similarity >= 0.6 for m in matches)
    assert not any("spring" in m.words for m in matches)


def test_length_window_is_exactly_the_lengths_that_can_reach_the_similarity():
    from rapidfuzz.distance import Levenshtein

    for query_length in range(1, 15):
        for minimum in (0.5, 0.6, 0.75):
            shortest, longest = similar_lengths(query_length, minimum)
            # a string of length n is at best the query with |n - query_length| insertions or deletions
            reachable = [n for n in range(0, 40) if Levenshtein.normalized_similarity("a" * query_length, "a" * n) >= minimum]
            assert (shortest, longest) == (min(reachable), max(reachable))


def test_phonetic_matches_a_brute_force_scan_of_every_span():
    from rapidfuzz.distance import Levenshtein

    rng = np.random.default_rng(3)
    vocabulary = "a river market barge spring nine opens wagah do goo flew in the at by and we to".split()
    files = [file_words(f"/{n}.wav", list(rng.choice(vocabulary, size=int(rng.integers(3, 30))))) for n in range(20)]
    index = TranscriptIndex(files)
    for query in ("market", "rivers", "ouagadougou", "the river"):
        phonemes = [p for word in query.split() for p in word_phonemes(word)]
        found = {(m.file, m.start, m.end, round(m.similarity, 6)) for m in index.phonetic(phonemes, len(query.split()), limit=10_000)}
        code = phoneme_string(phonemes)
        brute = []
        for words in files:
            codes = [phoneme_string(p.split()) for p in words.phonemes]
            for k in range(1, len(query.split()) + 3):
                for first in range(len(codes) - k + 1):
                    similarity = Levenshtein.normalized_similarity(code, "".join(codes[first : first + k]))
                    if similarity >= 0.6:
                        brute.append((similarity, k, words.file, first, words.starts[first], words.ends[first + k - 1]))
        # the same overlap rule as the index: best first, shorter span on ties, one span per place
        brute.sort(key=lambda b: (-b[0], b[1], b[2], b[3]))
        kept, taken = set(), {}
        for similarity, k, file, first, start, end in brute:
            if any(first < e and s < first + k for s, e in taken.get(file, ())):
                continue
            taken.setdefault(file, []).append((first, first + k))
            kept.add((file, float(start), float(end), round(similarity, 6)))
        assert found == kept, query


def test_phoneme_string_ignores_stress():
    assert phoneme_string(["AH0", "B"]) == phoneme_string(["AH", "B"])
    assert len(phoneme_string(word_phonemes("market"))) == len(word_phonemes("market"))


def test_words_around_a_hit(index):
    assert index.words_around("/b.wav", 4.0, 4.8, context_s=1.0) == "the river opens"
    assert index.words_around("/missing.wav", 0, 1) is None
