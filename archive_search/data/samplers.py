"""Training and evaluation samples cut from aligned utterances.

- `word_instances`: every spoken word as a typed `WordInstance` (file, word, start, end, phones).
- `WordBatchSampler`: N distinct words x M instances per batch (JMCL's DWD loss), seeded,
  preferring instances by different speakers; usable as a torch `batch_sampler`.
- `phrase_segments` + `phrase_pairs` / `libriphrase_test_sets`: LibriPhrase-style anchor
  audio (1-4 words cut from running speech) against positive, hard-negative (nearest by
  phoneme Levenshtein distance) and easy-negative (random) texts.
- `word_discrimination_segments` + `trial_pairs`: the JMCL word-discrimination trials, 0.5-2 s
  word segments split into in-vocabulary and out-of-vocabulary sets, all pairs labelled.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from archive_search.data.manifest import NON_WORD_LABELS, Utterance
from archive_search.embedders.g2p import word_phonemes
from archive_search.errors import DataError

IGNORED_WORDS = NON_WORD_LABELS
MAX_PHRASE_GAP_S = 0.3
"""A phrase is not cut across a pause longer than this: anchors are continuous speech."""


@dataclass(frozen=True)
class WordInstance:
    """One spoken word (or phrase): audio file, label, [start, end) seconds, phones, who said it."""

    audio: str
    word: str
    start: float
    end: float
    phones: tuple[str, ...]
    speaker: str = ""
    utterance: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start


def _utterance_phones(utterance: Utterance, start: float, end: float) -> tuple[str, ...]:
    """Aligned phones whose midpoint lies inside [start, end)."""
    return tuple(p.label for p in utterance.phones if start <= (p.start + p.end) / 2 < end)


_PRONUNCIATIONS: dict[str, tuple[str, ...]] = {}


def pronunciation(text: str) -> tuple[str, ...]:
    """Dictionary/G2P phones of words separated by spaces (cached)."""
    if text not in _PRONUNCIATIONS:
        _PRONUNCIATIONS[text] = tuple(p for word in text.split() for p in word_phonemes(word))
    return _PRONUNCIATIONS[text]


def word_instances(
    utterances: Iterable[Utterance],
    root: str | Path = ".",
    min_s: float = 0.1,
    max_s: float = 2.0,
    splits: Sequence[str] | None = None,
) -> list[WordInstance]:
    """Every aligned word of `min_s`..`max_s` seconds. Phones come from the utterance's phone
    alignment where it has one, else from the dictionary. `root` resolves relative audio paths."""
    instances = []
    for utterance in utterances:
        if splits is not None and utterance.split not in splits:
            continue
        audio = str(utterance.audio_path(root))
        for word in utterance.words:
            label = word.label.strip().lower()
            if label in IGNORED_WORDS or not (min_s <= word.duration <= max_s):
                continue
            phones = _utterance_phones(utterance, word.start, word.end) if utterance.phones else ()
            instances.append(
                WordInstance(audio, label, word.start, word.end, phones or pronunciation(label), utterance.speaker, utterance.id)
            )
    return instances


class WordBatchSampler:
    """Batches of `words_per_batch` distinct words x `instances_per_word` instances (JMCL).

    Iterating yields flat lists of indices into `instances`, word-major (the M instances of
    word 0, then of word 1, ...), so it works as a torch DataLoader `batch_sampler`. Only
    words with at least `instances_per_word` instances take part. Within a word, instances by
    speakers not yet picked come first. Each epoch uses each eligible word about once;
    `set_epoch` reshuffles deterministically.
    """

    def __init__(
        self,
        instances: Sequence[WordInstance],
        words_per_batch: int = 32,
        instances_per_word: int = 4,
        seed: int = 0,
        drop_last: bool = True,
    ):
        self.instances = instances
        self.n = words_per_batch
        self.m = instances_per_word
        self.seed = seed
        self.epoch = 0
        self.drop_last = drop_last
        groups: dict[str, list[int]] = defaultdict(list)
        for index, instance in enumerate(instances):
            groups[instance.word].append(index)
        self.groups = {word: rows for word, rows in sorted(groups.items()) if len(rows) >= instances_per_word}
        if len(self.groups) < words_per_batch:
            raise DataError(
                f"only {len(self.groups)} words have >= {instances_per_word} instances; "
                f"a batch needs {words_per_batch} (use fewer words per batch or more data)"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.groups), self.n)
        return full + (0 if self.drop_last or rest == 0 else 1)

    def _pick(self, rows: list[int], rng: random.Random) -> list[int]:
        shuffled = rows[:]
        rng.shuffle(shuffled)
        picked, speakers = [], set()
        for index in shuffled:  # first pass: one instance per speaker
            if self.instances[index].speaker not in speakers:
                picked.append(index)
                speakers.add(self.instances[index].speaker)
            if len(picked) == self.m:
                return picked
        for index in shuffled:
            if index not in picked:
                picked.append(index)
            if len(picked) == self.m:
                break
        return picked

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        words = list(self.groups)
        rng.shuffle(words)
        for first in range(0, len(words), self.n):
            chosen = words[first : first + self.n]
            if len(chosen) < self.n and self.drop_last:
                return
            yield [index for word in chosen for index in self._pick(self.groups[word], rng)]

    def words(self, batch: Sequence[int]) -> list[str]:
        """The N words of a batch, in order."""
        return [self.instances[i].word for i in batch[:: self.m]]


# ----------------------------------------------------------------------------- LibriPhrase-style


def phrase_segments(
    utterances: Iterable[Utterance],
    root: str | Path = ".",
    max_words: int = 4,
    seed: int = 0,
    max_s: float = 2.5,
    splits: Sequence[str] | None = None,
) -> list[WordInstance]:
    """Cut each aligned utterance into consecutive, non-overlapping phrases of 1-`max_words`
    words (lengths drawn at random, seeded), never across a pause > MAX_PHRASE_GAP_S."""
    rng = random.Random(seed)
    segments = []
    for utterance in utterances:
        if splits is not None and utterance.split not in splits:
            continue
        audio = str(utterance.audio_path(root))
        words = [w for w in utterance.words if w.label.strip().lower() not in IGNORED_WORDS]
        k = 0
        while k < len(words):
            count = rng.randint(1, max_words)
            span = [words[k]]
            while len(span) < count and k + len(span) < len(words):
                following = words[k + len(span)]
                if following.start - span[-1].end > MAX_PHRASE_GAP_S:
                    break
                span.append(following)
            while len(span) > 1 and span[-1].end - span[0].start > max_s:
                span.pop()  # too long: the dropped words start the next phrase
            k += len(span)
            start, end = span[0].start, span[-1].end
            if end - start > max_s or end <= start:
                continue
            text = " ".join(w.label.strip().lower() for w in span)
            phones = _utterance_phones(utterance, start, end) if utterance.phones else ()
            segments.append(WordInstance(audio, text, start, end, phones or pronunciation(text), utterance.speaker, utterance.id))
    return segments


@dataclass(frozen=True)
class PhrasePair:
    """Anchor audio against a text: `target` says whether the text is what the anchor says."""

    anchor: WordInstance
    text: str
    phones: tuple[str, ...]
    target: bool
    kind: str  # "positive" | "hard" | "easy"
    distance: int  # phoneme Levenshtein distance between the anchor's and the text's pronunciation


def _phoneme_distance(a: Sequence[str], b: Sequence[str]) -> int:
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b))


def phrase_pairs(
    segments: Sequence[WordInstance],
    seed: int = 0,
    candidates: int = 300,
    easy_min_distance: int | None = None,
) -> list[PhrasePair]:
    """For each anchor: one positive (its own text), one hard negative (the other phrase with the
    same word count and the smallest non-zero phoneme Levenshtein distance, searched among
    `candidates` random phrases), and one easy negative (a random phrase of the same word count
    at least `easy_min_distance` phones away, default half the anchor's phone count)."""
    from rapidfuzz import process
    from rapidfuzz.distance import Levenshtein

    rng = random.Random(seed)
    by_count: dict[int, list[str]] = defaultdict(list)
    for text in sorted({s.word for s in segments}):
        by_count[len(text.split())].append(text)
    pairs = []
    for anchor in segments:
        pool = [t for t in by_count[len(anchor.word.split())] if t != anchor.word]
        anchor_phones = pronunciation(anchor.word)
        pairs.append(PhrasePair(anchor, anchor.word, anchor_phones, True, "positive", 0))
        if not pool:
            continue
        sample = pool if len(pool) <= candidates else rng.sample(pool, candidates)
        choices = [pronunciation(t) for t in sample]
        ranked = process.extract(anchor_phones, choices, scorer=Levenshtein.distance, limit=len(choices))
        hard = next(((sample[i], int(d)) for _, d, i in ranked if d > 0), None)
        if hard is not None:
            pairs.append(PhrasePair(anchor, hard[0], pronunciation(hard[0]), False, "hard", hard[1]))
        floor = easy_min_distance if easy_min_distance is not None else max(2, len(anchor_phones) // 2)
        far = [(sample[i], int(d)) for _, d, i in ranked if d >= floor]
        if far:
            text, distance = far[rng.randrange(len(far))]
            pairs.append(PhrasePair(anchor, text, pronunciation(text), False, "easy", distance))
    return pairs


def libriphrase_test_sets(pairs: Sequence[PhrasePair]) -> dict[str, list[PhrasePair]]:
    """LibriPhrase's two test sets: 'easy' (positives + easy negatives) and 'hard' (positives +
    hard negatives), each anchor's positive in both."""
    return {
        "easy": [p for p in pairs if p.kind in ("positive", "easy")],
        "hard": [p for p in pairs if p.kind in ("positive", "hard")],
    }


# ----------------------------------------------------------------------------- word discrimination


def word_discrimination_segments(
    utterances: Iterable[Utterance],
    training_vocabulary: Iterable[str],
    root: str | Path = ".",
    min_s: float = 0.5,
    max_s: float = 2.0,
    min_instances: int = 2,
) -> dict[str, list[WordInstance]]:
    """Word segments of `min_s`-`max_s` seconds, split into 'iv' (word in the training
    vocabulary) and 'oov'; words with fewer than `min_instances` segments are dropped (they
    would make no positive pair)."""
    vocabulary = {w.lower() for w in training_vocabulary}
    instances = word_instances(utterances, root, min_s=min_s, max_s=max_s)
    counts: dict[str, int] = defaultdict(int)
    for instance in instances:
        counts[instance.word] += 1
    kept = [i for i in instances if counts[i.word] >= min_instances]
    return {
        "iv": [i for i in kept if i.word in vocabulary],
        "oov": [i for i in kept if i.word not in vocabulary],
    }


def trial_pairs(segments: Sequence[WordInstance]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All unordered pairs (i < j) of segments: (first (P,), second (P,), same word (P,) bool)."""
    n = len(segments)
    first, second = np.triu_indices(n, k=1)
    labels = np.array([s.word for s in segments])
    return first, second, labels[first] == labels[second]
