"""Keyword-spotting protocols of the two papers, on any scorer of (audio, text) pairs.

* `phrase_detection`: LibriPhrase-style trials (anchor audio, candidate text, same or not),
  EER and AUC on the easy and hard negative subsets (parallelkws.md, Section III).
* `clip_kws`: text-enrolled KWS on labelled clips: every clip against every keyword; the
  clip's own keyword is the positive, all the others negatives (as the papers treat Speech
  Commands; here used on the spoken digits of fsdd).
* `windowed_detection`: JMCL Table II: utterances cut into fixed windows (0.2/0.3/0.4/0.6 s,
  half-window hop); an utterance's score for a query is its best window's cosine similarity;
  EER over (query, utterance) trials, positive when the query word is spoken in the
  utterance. KWS uses the text query, STD one spoken instance of the word (its utterance is
  left out). Optionally the best window's region is rescored by a `Reranker`.

A scorer is anything with `score(regions, text) -> (N,)`; `RerankerScorer` wraps the
ParallelKWS seam and `EmbeddingScorer` the JMCL cosine, so both are measured the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from archive_search.audio import REGION_CONTEXT_S, SAMPLE_RATE, load_audio
from archive_search.embedders.base import AudioEmbedder, Reranker, TextEmbedder
from archive_search.embedders.g2p import pronounce, word_phonemes
from archive_search.errors import DataError, EvaluationError
from archive_search.evaluation.metrics import Curve, equal_error_rate, roc_auc, roc_curve
from archive_search.evaluation.word_discrimination import as_vocabulary

WINDOW_SIZES_S = (0.2, 0.3, 0.4, 0.6)
"""Seconds. The window lengths of JMCL Table II."""

WINDOW_HOP_FRACTION = 0.5
"""JMCL's windowed setup: 0.3 s windows with 0.15 s hop."""

RERANK_REGION_MIN_S = 1.2
"""Seconds. A region given to the reranker is at least this long, centred on the best window,
so that a word only partly inside a short window is whole in the region."""


class TextScorer(Protocol):
    name: str

    def score(self, regions: Sequence[np.ndarray], text: str) -> np.ndarray:
        """Regions (each (S_i,) float32 16 kHz) against one text query -> (N,) scores."""
        ...


class RerankerScorer:
    """Text scores from the ParallelKWS reranker seam."""

    def __init__(self, reranker: Reranker):
        self.reranker = reranker
        self.name = reranker.name

    def encode_ahead(self, regions: Sequence[np.ndarray]) -> None:
        if hasattr(self.reranker, "encode_ahead"):
            self.reranker.encode_ahead(regions)

    def score(self, regions: Sequence[np.ndarray], text: str) -> np.ndarray:
        pronunciation = pronounce(text)
        return np.asarray(self.reranker.score_text(list(regions), pronunciation.phonemes, pronunciation.text), dtype=np.float64)


class EmbeddingScorer:
    """Cosine between the JMCL audio embedding of each whole region and the text embedding."""

    def __init__(self, audio: AudioEmbedder, text: TextEmbedder, batch_size: int = 256):
        self.audio, self.text, self.batch_size = audio, text, batch_size
        self.name = audio.name

    def score(self, regions: Sequence[np.ndarray], text: str) -> np.ndarray:
        query = _unit(self.text.embed_phonemes([pronounce(text).phonemes]))[0]
        vectors = np.concatenate(
            [_unit(self.audio.embed_clips(list(regions[i : i + self.batch_size]))) for i in range(0, len(regions), self.batch_size)]
        )
        return (vectors @ query).astype(np.float64)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@dataclass
class BinaryResult:
    """EER (rate and threshold), AUC and the DET operating points of one set of trials."""

    eer: float
    eer_threshold: float
    auc: float
    n_positive: int
    n_negative: int
    curve: Curve | None = field(default=None, repr=False)

    @classmethod
    def from_trials(cls, labels: np.ndarray, scores: np.ndarray) -> "BinaryResult":
        labels = np.asarray(labels, dtype=bool)
        eer = equal_error_rate(labels, scores)
        return cls(
            eer=eer.rate,
            eer_threshold=eer.threshold,
            auc=roc_auc(labels, scores),
            n_positive=int(labels.sum()),
            n_negative=int((~labels).sum()),
            curve=roc_curve(labels, scores),
        )

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "curve"}


# --------------------------------------------------------------------------- LibriPhrase-style


@dataclass
class PhraseTrial:
    """Anchor audio against a candidate text; `subset` names the negative type (easy/hard)."""

    audio: np.ndarray
    text: str
    label: bool
    subset: str = "all"


def score_trials(trials: Sequence[PhraseTrial], scorer: TextScorer) -> np.ndarray:
    """Scores of every trial, one scorer call per distinct text."""
    scores = np.zeros(len(trials), dtype=np.float64)
    by_text: dict[str, list[int]] = {}
    if hasattr(scorer, "encode_ahead"):  # a region is scored against several texts, one call each
        scorer.encode_ahead([trial.audio for trial in trials])
    for index, trial in enumerate(trials):
        by_text.setdefault(trial.text, []).append(index)
    for text, indices in by_text.items():
        scores[indices] = scorer.score([trials[i].audio for i in indices], text)
    return scores


def phrase_detection(trials: Sequence[PhraseTrial], scorer: TextScorer) -> dict[str, BinaryResult]:
    """EER/AUC over all trials and per subset. A subset of negatives only is scored together
    with the positives that share its anchors' subset label or, when it has none, all positives."""
    if not trials:
        raise EvaluationError("no phrase trials to score")
    scores = score_trials(trials, scorer)
    labels = np.array([t.label for t in trials], dtype=bool)
    subsets = np.array([t.subset for t in trials])
    results = {"all": BinaryResult.from_trials(labels, scores)}
    for subset in sorted(set(subsets.tolist()) - {"all"}):
        mask = subsets == subset
        if not labels[mask].any():  # negatives-only subset: compare with every positive
            mask = mask | labels
        if labels[mask].any() and (~labels[mask]).any():
            results[subset] = BinaryResult.from_trials(labels[mask], scores[mask])
    return results


# --------------------------------------------------------------------------- labelled clips


_LABEL = re.compile(r"^([^_]+)_")


def load_labelled_clips(
    folder: str | Path, max_per_label: int | None = None, seed: int = 0
) -> tuple[list[np.ndarray], list[str], list[Path]]:
    """Read a folder of `<label>_*.wav` clips (as fsdd is laid out), resampled to 16 kHz."""
    folder = Path(folder)
    paths = sorted(p for p in folder.glob("*.wav") if _LABEL.match(p.name))
    if not paths:
        raise DataError(f"{folder}: no <label>_*.wav clips here")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[Path]] = {}
    for path in paths:
        by_label.setdefault(_LABEL.match(path.name).group(1), []).append(path)
    chosen: list[tuple[str, Path]] = []
    for label, items in sorted(by_label.items()):
        if max_per_label is not None and len(items) > max_per_label:
            items = [items[i] for i in sorted(rng.choice(len(items), max_per_label, replace=False))]
        chosen.extend((label, p) for p in items)
    return [load_audio(p) for _, p in chosen], [label for label, _ in chosen], [p for _, p in chosen]


@dataclass
class ClipKWSResult:
    """Pooled EER/AUC over every (clip, keyword) trial, per-keyword EERs, and the score matrix."""

    pooled: BinaryResult
    per_keyword: dict[str, BinaryResult]
    keywords: list[str]
    scores: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)

    @property
    def mean_keyword_eer(self) -> float:
        return float(np.mean([r.eer for r in self.per_keyword.values()]))

    def to_dict(self) -> dict:
        return {
            "pooled": self.pooled.to_dict(),
            "mean_keyword_eer": self.mean_keyword_eer,
            "per_keyword": {k: v.to_dict() for k, v in self.per_keyword.items()},
        }


def clip_kws(
    clips: Sequence[np.ndarray], labels: Sequence[str], scorer: TextScorer, keywords: Sequence[str] | None = None
) -> ClipKWSResult:
    """Score every clip against every keyword's text (labels such as "7" are read as "seven")."""
    if len(clips) != len(labels):
        raise EvaluationError(f"{len(clips)} clips but {len(labels)} labels")
    keywords = sorted(set(labels)) if keywords is None else list(keywords)
    if len(keywords) < 2:
        raise EvaluationError("clip KWS needs at least two keywords (the others are the negatives)")
    scores = np.stack([scorer.score(list(clips), keyword) for keyword in keywords], axis=1)  # (clips, keywords)
    truth = np.array(labels)[:, None] == np.array(keywords)[None, :]
    return _clip_result(scores, truth, keywords)


def mixed_clip_kws(retrieval: ClipKWSResult, rerank: ClipKWSResult, weight: float) -> ClipKWSResult:
    """The engine's text score on the same trials: weight x reranker + (1 - weight) x JMCL cosine
    (`KWSReranker.text_weight`), from two finished clip_kws runs over the same clips."""
    if retrieval.keywords != rerank.keywords or retrieval.scores.shape != rerank.scores.shape:
        raise EvaluationError("mixed clip KWS needs two runs over the same clips and keywords")
    return _clip_result(weight * rerank.scores + (1.0 - weight) * retrieval.scores, retrieval.labels, retrieval.keywords)


def _clip_result(scores: np.ndarray, truth: np.ndarray, keywords: list[str]) -> ClipKWSResult:
    per_keyword = {}
    for j, keyword in enumerate(keywords):
        if truth[:, j].any() and (~truth[:, j]).any():
            per_keyword[keyword] = BinaryResult.from_trials(truth[:, j], scores[:, j])
    return ClipKWSResult(
        pooled=BinaryResult.from_trials(truth.ravel(), scores.ravel()),
        per_keyword=per_keyword,
        keywords=keywords,
        scores=scores,
        labels=truth,
    )


# --------------------------------------------------------------------------- windowed STD / KWS


@dataclass
class WindowedUtterance:
    """A continuous utterance: 16 kHz audio and its aligned words (AlignedUnit-like)."""

    id: str
    audio: np.ndarray
    words: Sequence

    def word_set(self) -> set[str]:
        return {w.label.strip().lower() for w in self.words}


@dataclass
class WindowedResult:
    """One cell of JMCL Table II: a task, a window size, a vocabulary split and a scoring:
    "jmcl" (the best window's cosine), "rerank" (the reranker alone on a region around that
    window) or "engine" (the engine's mix of the two: the reranker's `text_weight` or
    `audio_weight` times its score plus the rest times the cosine)."""

    task: str
    window_s: float
    split: str
    scoring: str
    eer: float
    auc: float
    n_queries: int
    n_positive: int
    n_negative: int


def window_spans(duration: float, window: float, hop: float) -> np.ndarray:
    """(N, 2) window spans covering [0, duration); a clip shorter than a window gets one window."""
    if duration <= window:
        return np.array([[0.0, duration]])
    starts = np.arange(0.0, duration - window + 1e-9, hop)
    if starts[-1] + window < duration - 1e-6:  # cover the tail too
        starts = np.r_[starts, duration - window]
    return np.stack([starts, starts + window], axis=1)


def windowed_queries(
    utterances: Sequence[WindowedUtterance], min_phonemes: int = 5, min_utterances: int = 2, max_queries: int = 100, seed: int = 0
) -> list[str]:
    """Query words of the windowed protocol: words of at least `min_phonemes` phonemes spoken
    in at least `min_utterances` utterances (so STD has an exemplar and a target), sampled."""
    count: dict[str, int] = {}
    for utterance in utterances:
        for word in utterance.word_set():
            if word and word.isalpha():
                count[word] = count.get(word, 0) + 1
    words = sorted(w for w, n in count.items() if n >= min_utterances and len(word_phonemes(w)) >= min_phonemes)
    rng = np.random.default_rng(seed)
    if len(words) > max_queries:
        words = sorted(rng.choice(words, max_queries, replace=False).tolist())
    return words


def _cut(audio: np.ndarray, start: float, end: float) -> np.ndarray:
    return audio[max(0, int(round(start * SAMPLE_RATE))) : max(0, int(round(end * SAMPLE_RATE)))]


def windowed_detection(
    utterances: Sequence[WindowedUtterance],
    audio: AudioEmbedder,
    text: TextEmbedder,
    queries: Sequence[str],
    window_sizes: Sequence[float] = WINDOW_SIZES_S,
    hop_fraction: float = WINDOW_HOP_FRACTION,
    training_vocabulary: Iterable[str] | None = None,
    reranker: Reranker | None = None,
    tasks: Sequence[str] = ("kws", "std"),
    seed: int = 0,
    localize_s: float = 0.0,
) -> list[WindowedResult]:
    """JMCL Table II EERs for every task × window size × split (× rerank when given).

    `localize_s` > 0 centres a text query's (KWS) reranked region on the best stretch of that
    many seconds of consecutive windows (mean similarity) instead of the single best window: a
    short window holds only part of a word, and its best text match is often a stray one. (On
    the development archive this helped text queries and hurt spoken ones, whose audio-to-audio
    best window is already reliable, so STD keeps the best window.)"""
    if not utterances or not queries:
        raise EvaluationError("windowed detection needs utterances and queries")
    rng = np.random.default_rng(seed)
    queries = [q.strip().lower() for q in queries]
    contains = np.array([[q in u.word_set() for u in utterances] for q in queries])  # (Q, U)
    known = as_vocabulary(training_vocabulary)

    # STD exemplars: one spoken instance per query, its utterance left out of that query's trials.
    exemplars: list[np.ndarray | None] = []
    exemplar_utterance = np.full(len(queries), -1)
    for qi, query in enumerate(queries):
        places = [(ui, w) for ui, u in enumerate(utterances) for w in u.words if w.label.strip().lower() == query]
        if not places or "std" not in tasks:
            exemplars.append(None)
            continue
        ui, unit = places[int(rng.integers(len(places)))]
        exemplars.append(_cut(utterances[ui].audio, unit.start, unit.end))
        exemplar_utterance[qi] = ui

    text_vectors = _unit(text.embed_phonemes([pronounce(q).phonemes for q in queries])) if "kws" in tasks else None
    std_ok = [e is not None and e.size > 0 for e in exemplars]
    std_vectors = None
    if "std" in tasks and any(std_ok):
        embedded = _unit(audio.embed_clips([e for e, ok in zip(exemplars, std_ok) if ok]))
        std_vectors = np.zeros((len(queries), embedded.shape[1]), dtype=np.float32)
        std_vectors[np.flatnonzero(std_ok)] = embedded

    splits = {"all": np.ones(len(queries), dtype=bool)}
    if known is not None:
        iv = np.array([q in known for q in queries])
        splits.update(iv=iv, oov=~iv)

    results: list[WindowedResult] = []
    for window in window_sizes:
        hop = window * hop_fraction
        spans = [window_spans(len(u.audio) / SAMPLE_RATE, window, hop) for u in utterances]
        vectors = [_unit(audio.embed_spans(u.audio, s)) for u, s in zip(utterances, spans)]
        for task in tasks:
            query_vectors = text_vectors if task == "kws" else std_vectors
            if query_vectors is None:
                continue
            similarity = [v @ query_vectors.T for v in vectors]  # per utterance (n_windows, Q)
            scores = np.stack([s.max(axis=0) for s in similarity], axis=1)  # (Q, U)
            valid = np.ones_like(contains)
            if task == "std":
                valid[~np.array(std_ok)] = False
                for qi, ui in enumerate(exemplar_utterance):
                    if ui >= 0:
                        valid[qi, ui] = False
            variants = [("jmcl", scores)]
            if reranker is not None:
                stretch = max(1, round(localize_s / hop)) if task == "kws" else 1
                reranked = _rerank(utterances, spans, similarity, queries, exemplars, task, reranker, valid, stretch)
                weight = float(getattr(reranker, "text_weight" if task == "kws" else "audio_weight", 1.0))
                variants += [("rerank", reranked), ("engine", weight * reranked + (1.0 - weight) * scores)]
            for scoring, table in variants:
                for split, query_mask in splits.items():
                    mask = valid & query_mask[:, None]
                    labels, values = contains[mask], table[mask]
                    if not labels.any() or labels.all():
                        continue
                    outcome = BinaryResult.from_trials(labels, values)
                    results.append(
                        WindowedResult(
                            task=task,
                            window_s=float(window),
                            split=split,
                            scoring=scoring,
                            eer=outcome.eer,
                            auc=outcome.auc,
                            n_queries=int((mask.any(axis=1)).sum()),
                            n_positive=outcome.n_positive,
                            n_negative=outcome.n_negative,
                        )
                    )
    return results


def _rerank(utterances, spans, similarity, queries, exemplars, task, reranker: Reranker, valid, stretch: int = 1) -> np.ndarray:
    """Rescore each (query, utterance) by the reranker on a region around the best window (or
    the best run of `stretch` consecutive windows)."""
    table = np.zeros((len(queries), len(utterances)))
    for qi, query in enumerate(queries):
        indices = np.flatnonzero(valid[qi])
        if indices.size == 0:
            continue
        regions = []
        for ui in indices:
            column = similarity[ui][:, qi]
            if stretch > 1 and len(column) >= stretch:
                means = np.convolve(column, np.ones(stretch) / stretch, mode="valid")
                first = int(np.argmax(means))
                start, end = spans[ui][first][0], spans[ui][first + stretch - 1][1]
            else:
                start, end = spans[ui][int(np.argmax(column))]
            length = max(end - start + 2 * REGION_CONTEXT_S, RERANK_REGION_MIN_S)
            middle = 0.5 * (start + end)
            regions.append(_cut(utterances[ui].audio, middle - length / 2, middle + length / 2))
        if task == "kws":
            pronunciation = pronounce(query)
            table[qi, indices] = reranker.score_text(regions, pronunciation.phonemes, pronunciation.text)
        else:
            table[qi, indices] = reranker.score_audio(regions, exemplars[qi])
    return table
