"""JMCL word discrimination (jmcl.md, Section IV-E): AP over all pairs of word segments.

Every word segment of 0.5-2 s is embedded. Acoustic view: every pair of segments, positive
when both are the same word, scored by cosine similarity. Cross view: every segment against
every distinct word's text embedding, positive when the segment is that word. AP summarises
the precision-recall curve over all pairs. IV/OOV: the words of the test set that the model
saw in training are IV, the rest OOV; each split is scored on the pairs inside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from archive_search.data.manifest import NON_WORD_LABELS
from archive_search.audio import SAMPLE_RATE, load_audio
from archive_search.embedders.base import AudioEmbedder, TextEmbedder
from archive_search.embedders.g2p import word_phonemes
from archive_search.errors import AudioDecodeError, EvaluationError
from archive_search.evaluation.metrics import average_precision

MIN_WORD_S = 0.5
MAX_WORD_S = 2.0
"""Seconds. The paper keeps word instances of 0.5-2 s: shorter words carry too little to embed."""

IGNORED_WORDS = NON_WORD_LABELS
"""Aligner labels that are not words."""


class OOVList:
    """IV/OOV by a list of out-of-vocabulary words: every other word counts as in-vocabulary.

    For corpora whose training vocabulary is "everything except a fixed OOV list"
    (archive_search/data/resources/oov_words.txt). Supports `word in vocabulary` like a set.
    """

    def __init__(self, oov: Iterable[str]):
        self.oov = {w.strip().lower() for w in oov if w.strip()}

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.strip().lower() not in self.oov


def as_vocabulary(vocabulary: Iterable[str] | OOVList | None):
    """A membership test for IV words: an OOVList as is, any other iterable as a lower-cased set."""
    if vocabulary is None or isinstance(vocabulary, OOVList):
        return vocabulary
    return {w.strip().lower() for w in vocabulary}


@dataclass
class WordSegment:
    """One spoken word: its 16 kHz audio and what it is."""

    audio: np.ndarray
    word: str
    phonemes: tuple[str, ...] = ()
    source: str = ""
    start: float = 0.0
    end: float = 0.0


def word_segments(
    utterances: Iterable,
    root: str | Path = ".",
    min_s: float = MIN_WORD_S,
    max_s: float = MAX_WORD_S,
    max_per_word: int | None = None,
    max_segments: int | None = None,
    seed: int = 0,
) -> list[WordSegment]:
    """Cut the aligned words of `min_s`-`max_s` seconds out of manifest utterances.

    Phonemes come from the dictionary (as a text query's would), not from the alignment.
    `max_per_word` / `max_segments` subsample at random (seeded) to bound the pair count.
    """
    candidates: list[tuple[object, object]] = []
    for utterance in utterances:
        for unit in utterance.words:
            word = unit.label.strip().lower()
            if word in IGNORED_WORDS or not (min_s <= unit.duration <= max_s):
                continue
            candidates.append((utterance, unit))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    chosen, per_word = [], {}
    for index in order:
        utterance, unit = candidates[index]
        word = unit.label.strip().lower()
        if max_per_word is not None and per_word.get(word, 0) >= max_per_word:
            continue
        per_word[word] = per_word.get(word, 0) + 1
        chosen.append((utterance, unit))
        if max_segments is not None and len(chosen) >= max_segments:
            break
    # Decode each file once, in manifest order.
    chosen.sort(key=lambda pair: (pair[0].id, pair[1].start))
    segments: list[WordSegment] = []
    cache_id, cache_audio = None, None
    for utterance, unit in chosen:
        if utterance.id != cache_id:
            cache_id, cache_audio = utterance.id, load_audio(utterance.audio_path(root))
        first, last = int(round(unit.start * SAMPLE_RATE)), int(round(unit.end * SAMPLE_RATE))
        clip = cache_audio[first:last]
        if clip.size == 0:
            raise AudioDecodeError(utterance.audio_path(root), f"word {unit.label!r} at {unit.start:.2f}-{unit.end:.2f} s lies outside the audio")
        word = unit.label.strip().lower()
        segments.append(WordSegment(clip, word, tuple(word_phonemes(word)), utterance.id, unit.start, unit.end))
    return segments


@dataclass
class ViewResult:
    """AP of one view on one split, with the pair counts and mean cosine of each class."""

    ap: float
    n_positive: int
    n_negative: int
    mean_positive: float
    mean_negative: float


@dataclass
class WordDiscriminationResult:
    """Acoustic and cross view on all / IV / OOV segments (a view is None when it cannot be scored)."""

    n_segments: int
    n_words: int
    acoustic: dict[str, ViewResult | None] = field(default_factory=dict)
    cross: dict[str, ViewResult | None] = field(default_factory=dict)
    split_sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _view(similarity: np.ndarray, same: np.ndarray) -> ViewResult | None:
    n_pos, n_neg = int(same.sum()), int((~same).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    return ViewResult(
        ap=average_precision(same, similarity),
        n_positive=n_pos,
        n_negative=n_neg,
        mean_positive=float(similarity[same].mean()),
        mean_negative=float(similarity[~same].mean()),
    )


def _embed_clips(embedder: AudioEmbedder, clips: Sequence[np.ndarray], batch_size: int) -> np.ndarray:
    parts = [embedder.embed_clips(list(clips[i : i + batch_size])) for i in range(0, len(clips), batch_size)]
    return _unit(np.concatenate(parts, axis=0))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def word_discrimination(
    segments: Sequence[WordSegment],
    audio: AudioEmbedder,
    text: TextEmbedder | None = None,
    training_vocabulary: Iterable[str] | None = None,
    batch_size: int = 256,
) -> WordDiscriminationResult:
    """Score the acoustic (and, given a text encoder, cross) view by AP over all pairs.

    Cost: N segments give N(N-1)/2 acoustic and N·W cross pairs; a few thousand segments
    take seconds (one matrix product and one sort per view).
    """
    if len(segments) < 2:
        raise EvaluationError(f"word discrimination needs at least 2 segments, got {len(segments)}")
    words = np.array([s.word for s in segments])
    audio_vectors = _embed_clips(audio, [s.audio for s in segments], batch_size)
    vocabulary = sorted(set(words.tolist()))
    phonemes = {s.word: s.phonemes or tuple(word_phonemes(s.word)) for s in segments}
    text_vectors = _unit(text.embed_phonemes([list(phonemes[w]) for w in vocabulary])) if text is not None else None
    word_index = {w: i for i, w in enumerate(vocabulary)}
    segment_word = np.array([word_index[w] for w in words])

    splits: dict[str, np.ndarray] = {"all": np.ones(len(segments), dtype=bool)}
    if training_vocabulary is not None:
        known = as_vocabulary(training_vocabulary)
        in_vocabulary = np.array([w in known for w in words])
        splits["iv"], splits["oov"] = in_vocabulary, ~in_vocabulary

    result = WordDiscriminationResult(n_segments=len(segments), n_words=len(vocabulary))
    for name, mask in splits.items():
        index = np.flatnonzero(mask)
        split_words = np.unique(segment_word[index])
        result.split_sizes[name] = (int(index.size), int(split_words.size))
        if index.size < 2:
            result.acoustic[name] = None
            result.cross[name] = None
            continue
        vectors = audio_vectors[index]
        upper = np.triu_indices(index.size, k=1)
        similarity = (vectors @ vectors.T)[upper]
        same = (segment_word[index][:, None] == segment_word[index][None, :])[upper]
        result.acoustic[name] = _view(similarity, same)
        if text_vectors is None:
            continue
        cross = vectors @ text_vectors[split_words].T  # (n, W_split)
        cross_same = segment_word[index][:, None] == split_words[None, :]
        result.cross[name] = _view(cross.ravel(), cross_same.ravel())
    return result
