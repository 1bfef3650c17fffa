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


def phoneme_string(phonemes: Sequence[str]) -> str:
    """Stress-free ARPAbet -> one character per phoneme (unknown symbols share one code)."""
    return "".join(_CODES.get(p.rstrip("012"), "?") for p in phonemes)


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
        self._spans: dict[int, tuple[list[str], np.ndarray]] = {}  # k -> (strings, (N, 2) file, first word)
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
        found = []  # (similarity, file index, first word, k)
        for k in range(1, n_words + EXTRA_SPAN_WORDS + 1):
            strings, where = self._span_strings(k)
            if not strings:
                continue
            for _, similarity, row in process.extract(query, strings, scorer=Levenshtein.normalized_similarity,
                                                      score_cutoff=min_similarity, limit=limit):  # fmt: skip
                found.append((float(similarity), int(where[row, 0]), int(where[row, 1]), k))
        found.sort(key=lambda item: (-item[0], item[3]))  # ties: the shorter span
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

    def _span_strings(self, k: int) -> tuple[list[str], np.ndarray]:
        if k not in self._spans:
            strings, where = [], []
            for f, codes in enumerate(self._word_codes):
                for first in range(len(codes) - k + 1):
                    strings.append("".join(codes[first : first + k]))
                    where.append((f, first))
            self._spans[k] = (strings, np.array(where, dtype=np.int64).reshape(-1, 2))
        return self._spans[k]

    def _match(self, f: int, first: int, k: int, similarity: float, exact: bool) -> TranscriptMatch:
        words = self.files[f]
        last = first + k - 1
        return TranscriptMatch(
            words.file, float(words.starts[first]), float(words.ends[last]),
            float(np.mean(words.probabilities[first : last + 1])), similarity, exact, " ".join(words.tokens[first : last + 1]),
        )  # fmt: skip
