"""The transcript channels: exact word-sequence matches and phonetic near matches.

Both search the index's stored transcript words, loaded once into memory per searcher
(`TranscriptIndex.from_store`; about 10,000 words per audio hour).

* exact: the query's normalised words, in order, as consecutive transcript words;
* phonetic: transcript spans whose G2P phonemes lie within a normalised edit distance of the
  query's phonemes. Spans of 1 to n + 2 words are compared for an n-word query, so a name
  that whisper split into several words ("Ouagadougou" -> "wagah do goo") or spelled as
  another word still matches. rapidfuzz computes the distances (C++, ~10 ns a pair).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from archive_search.embedders.phonemes import ARPABET
from archive_search.storage.store import FileWords, Store

PHONETIC_MIN_SIMILARITY = 0.6
"""Spans less similar than this (1 - edit distance / longer length) are not candidates: below it
a 5-phoneme query matches unrelated words with 2 phonemes changed."""

PHONETIC_LIMIT = 50
"""Phonetic candidates kept per query, best first (the fusion sees them all)."""

EXTRA_SPAN_WORDS = 2
"""A query of n words is compared with spans of 1 .. n + EXTRA_SPAN_WORDS transcript words."""

CONTEXT_WORDS_S = 2.0
"""Seconds of transcript on each side of a hit shown as its `text`."""

_CODES = {phoneme: chr(0x100 + index) for index, phoneme in enumerate(ARPABET)}
"""One character per phoneme, so edit distances run on plain strings."""
_CODE_INDEX = {code: index for index, code in enumerate(_CODES.values())}


def phoneme_string(phonemes: Sequence[str]) -> str:
    """Stress-free ARPAbet -> one character per phoneme (unknown symbols share one code)."""
    return "".join(_CODES.get(p.rstrip("012"), "?") for p in phonemes)


def similar_lengths(query_length: int, min_similarity: float) -> tuple[int, int]:
    """The shortest and longest strings whose normalised Levenshtein similarity to a string of
    query_length can reach min_similarity: the distance is at least the length difference, so
    1 - |a - b| / max(a, b) >= m gives m * a <= b <= a / m."""
    shortest = int(np.ceil(min_similarity * query_length - 1e-9))
    longest = int(np.floor(query_length / min_similarity + 1e-9)) if min_similarity > 0 else 10**9
    return max(shortest, 0), longest


def phoneme_counts(strings: Sequence[str]) -> np.ndarray:
    """Phoneme strings -> (len(strings), len(ARPABET) + 1) uint8 count of each phoneme in each
    (the last column: unknown symbols)."""
    lengths = [len(s) for s in strings]
    counts = np.zeros((len(strings), len(_CODES) + 1), dtype=np.uint8)
    columns = [_CODE_INDEX.get(c, len(_CODES)) for s in strings for c in s]
    np.add.at(counts, (np.repeat(np.arange(len(strings)), lengths), columns), 1)
    return counts


@dataclass(frozen=True)
class _Spans:
    """Every k-word transcript span, sorted by phoneme length (ties in archive order).

    strings: N phoneme strings; where (N, 2): file index and first word; lengths (N,);
    length_starts: entry n is the first span of length >= n, the last entry is N;
    counts (N, len(ARPABET) + 1) uint8 per-phoneme counts, column-major for per-phoneme slices."""

    strings: list[str]
    where: np.ndarray
    lengths: np.ndarray
    length_starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def sorted_by_length(cls, strings: list[str], where: np.ndarray, counts: np.ndarray) -> "_Spans":
        lengths = np.array([len(s) for s in strings], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")
        length_starts = np.searchsorted(lengths[order], np.arange(int(lengths.max(initial=0)) + 2))
        return cls([strings[i] for i in order], where[order], lengths[order], length_starts, np.asfortranarray(counts[order]))


@dataclass(frozen=True)
class TranscriptMatch:
    """A transcript span matching a query: file, [start, end) seconds, mean word probability,
    phonetic similarity in [0, 1] (1 for an exact match), and the span's words."""

    file: str
    start: float
    end: float
    probability: float
    similarity: float
    exact: bool
    words: str


class TranscriptIndex:
    """Every transcript word of an index, searchable by words and by phonemes."""

    def __init__(self, files: Sequence[FileWords]):
        self.files = list(files)
        self._positions: dict[str, list[tuple[int, int]]] = {}  # token -> (file index, word index)
        for f, words in enumerate(self.files):
            for i, token in enumerate(words.tokens):
                self._positions.setdefault(token, []).append((f, i))
        self._word_codes = [[phoneme_string(p.split()) for p in words.phonemes] for words in self.files]
        self._spans: dict[int, _Spans] = {}  # k words -> every k-word span
        self._word_counts: np.ndarray | None = None  # (words, phonemes) uint8, every word of the archive
        self._by_file = {words.file: f for f, words in enumerate(self.files)}

    @classmethod
    def from_store(cls, store: Store) -> "TranscriptIndex":
        return cls(store.transcript_words())

    @property
    def n_words(self) -> int:
        return sum(len(words.tokens) for words in self.files)

    def __contains__(self, token: str) -> bool:
        return token in self._positions

    def count(self, token: str) -> int:
        """How often a token occurs in the archive's transcripts."""
        return len(self._positions.get(token, ()))

    def exact(self, words: Sequence[str]) -> list[TranscriptMatch]:
        """Every place the words are transcribed consecutively, in archive order."""
        if not words:
            return []
        matches = []
        for f, first in self._positions.get(words[0], ()):
            tokens = self.files[f].tokens
            if tokens[first : first + len(words)] == list(words):
                matches.append(self._match(f, first, len(words), 1.0, exact=True))
        return matches

    def phonetic(self, phonemes: Sequence[str], n_words: int, min_similarity: float = PHONETIC_MIN_SIMILARITY,
                 limit: int = PHONETIC_LIMIT) -> list[TranscriptMatch]:  # fmt: skip
        """Spans of 1 .. n_words + EXTRA_SPAN_WORDS words whose phonemes are at least
        `min_similarity` similar to the query's, best first; overlapping spans keep the best."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        query = phoneme_string(phonemes)
        if not query:
            return []
        query_counts = phoneme_counts([query])[0]
        present = np.flatnonzero(query_counts)
        shortest, longest = similar_lengths(len(query), min_similarity)
        found = []  # (similarity, file index, first word, k)
        for k in range(1, n_words + EXTRA_SPAN_WORDS + 1):
            spans = self._span_strings(k)
            # Two cheap bounds pick the spans worth an edit distance. Spans are sorted by length,
            # so those of a length that can reach min_similarity are one slice. Then the phonemes
            # the span shares with the query (a multiset) bound the similarity from above: each
            # phoneme not shared costs at least one edit.
            lo = spans.length_starts[min(shortest, len(spans.length_starts) - 1)]
            hi = spans.length_starts[min(longest + 1, len(spans.length_starts) - 1)]
            if hi <= lo:
                continue
            shared = np.minimum(spans.counts[lo:hi, present], query_counts[present]).sum(axis=1)
            bound = shared / np.maximum(spans.lengths[lo:hi], len(query))
            rows = lo + np.flatnonzero(bound >= min_similarity - 1e-9)
            choices = [spans.strings[row] for row in rows]
            for _, similarity, i in process.extract(query, choices, scorer=Levenshtein.normalized_similarity,
                                                    score_cutoff=min_similarity, limit=limit):  # fmt: skip
                found.append((float(similarity), int(spans.where[rows[i], 0]), int(spans.where[rows[i], 1]), k))
        found.sort(key=lambda item: (-item[0], item[3], item[1], item[2]))  # ties: the shorter span, then archive order
        kept: list[TranscriptMatch] = []
        taken: dict[int, list[tuple[int, int]]] = {}
        for similarity, f, first, k in found:
            if any(first < end and start < first + k for start, end in taken.get(f, ())):
                continue
            taken.setdefault(f, []).append((first, first + k))
            kept.append(self._match(f, first, k, similarity, exact=False))
            if len(kept) == limit:
                break
        return kept

    def words_around(self, file: str, start: float, end: float, context_s: float = CONTEXT_WORDS_S) -> str | None:
        """The transcript from `context_s` before `start` to `context_s` after `end`; None when the
        file has no transcript words."""
        f = self._by_file.get(file)
        if f is None:
            return None
        words = self.files[f]
        middle = (words.starts + words.ends) / 2
        chosen = np.flatnonzero((middle >= start - context_s) & (middle <= end + context_s))
        return " ".join(words.tokens[i] for i in chosen)

    def _span_strings(self, k: int) -> "_Spans":
        if k not in self._spans:
            if self._word_counts is None:
                self._word_counts = phoneme_counts([code for codes in self._word_codes for code in codes])
            strings, where, first_words = [], [], []  # first_words: index into every word of the archive
            offset = 0
            for f, codes in enumerate(self._word_codes):
                for first in range(len(codes) - k + 1):
                    strings.append("".join(codes[first : first + k]))
                    where.append((f, first))
                    first_words.append(offset + first)
                offset += len(codes)
            first_words = np.array(first_words, dtype=np.int64)
            counts = sum((self._word_counts[first_words + j] for j in range(1, k)), self._word_counts[first_words])
            self._spans[k] = _Spans.sorted_by_length(strings, np.array(where, dtype=np.int64).reshape(-1, 2), counts)
        return self._spans[k]

    def _match(self, f: int, first: int, k: int, similarity: float, exact: bool) -> TranscriptMatch:
        words = self.files[f]
        last = first + k - 1
        return TranscriptMatch(
            words.file, float(words.starts[first]), float(words.ends[last]),
            float(np.mean(words.probabilities[first : last + 1])), similarity, exact, " ".join(words.tokens[first : last + 1]),
        )  # fmt: skip
