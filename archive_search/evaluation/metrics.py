"""Search and detection metrics, pure numpy.

Two families:

* **Binary trials** (a score and a 0/1 label per trial): average precision, precision@k,
  ROC/DET curves, AUC and EER. Used by the word-discrimination and clip KWS protocols.
* **Spoken term detection** (NIST STD 2006): per term, a list of scored detections
  (file, start, end, score) is aligned to the true occurrences, then the term-weighted value
  TWV(θ) = 1 - mean_terms[P_miss(t, θ) + β · P_FA(t, θ)] is computed with
  P_miss = 1 - N_correct / N_true, P_FA = N_FA / (T - N_true), T = seconds of speech,
  β = 999.9. Terms that never occur are left out of TWV (as NIST does) and reported as
  false alarms on absent terms instead.

A detection is correct when its midpoint lies within `tolerance` (0.5 s) of a true
occurrence's span; each occurrence is matched at most once, so a second detection of the
same occurrence is a false alarm. Detections are matched greedily in decreasing score order
(to the unmatched occurrence with the nearest midpoint). Greedy-by-score makes every
detection's label independent of the threshold, so the whole TWV curve comes from one sort.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

import numpy as np

from archive_search.errors import EvaluationError

BETA = 999.9
"""NIST STD 2006 cost of a false alarm relative to a miss (prior 1e-4, C/V = 0.1)."""

TOLERANCE_S = 0.5
"""Seconds. A detection counts as a hit when its midpoint is this close to a true occurrence."""


# --------------------------------------------------------------------------- binary trials


def _as_trials(labels: Sequence | np.ndarray, scores: Sequence | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise EvaluationError(f"{labels.size} labels but {scores.size} scores")
    if not np.all(np.isfinite(scores)):
        raise EvaluationError("scores must be finite numbers")
    return labels, scores


def _threshold_counts(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) accepted at each distinct score, descending.

    Trials tied at a score are accepted together, so ties never get an arbitrary order.
    """
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(labels)[last_of_group]
    fp = np.cumsum(~labels)[last_of_group]
    return tp, fp, scores[last_of_group]


def average_precision(labels, scores, n_positive: int | None = None) -> float:
    """Area under the step precision-recall curve: sum over thresholds of ΔRecall × Precision.

    `n_positive` is the number of relevant items in total when some were never scored (a
    search that missed occurrences): their recall is never reached. NaN if there are none.
    """
    labels, scores = _as_trials(labels, scores)
    total = int(labels.sum()) if n_positive is None else int(n_positive)
    if n_positive is not None and n_positive < labels.sum():
        raise EvaluationError(f"n_positive={n_positive} is below the {int(labels.sum())} positive labels")
    if total == 0:
        return float("nan")
    if labels.size == 0:
        return 0.0
    tp, fp, _ = _threshold_counts(labels, scores)
    precision = tp / (tp + fp)
    recall_step = np.diff(np.r_[0, tp]) / total
    return float(np.sum(recall_step * precision))


def precision_at_k(labels, scores, k: int) -> float:
    """Fraction of the k best-scored items that are relevant (divides by k even if fewer exist)."""
    if k < 1:
        raise EvaluationError(f"k must be at least 1, not {k}")
    labels, scores = _as_trials(labels, scores)
    top = np.argsort(-scores, kind="mergesort")[:k]
    return float(labels[top].sum() / k)


@dataclass
class Curve:
    """Operating points of a binary detector, one per distinct threshold (descending).

    The first point (threshold +inf) accepts nothing: fpr = 0, fnr = 1.
    """

    thresholds: np.ndarray
    fpr: np.ndarray
    fnr: np.ndarray

    @property
    def tpr(self) -> np.ndarray:
        return 1.0 - self.fnr


def roc_curve(labels, scores) -> Curve:
    """False positive and false negative rates at every distinct score; needs both classes."""
    labels, scores = _as_trials(labels, scores)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise EvaluationError(f"a ROC/DET curve needs positive and negative trials ({n_pos} positive, {n_neg} negative)")
    tp, fp, thresholds = _threshold_counts(labels, scores)
    return Curve(
        thresholds=np.r_[np.inf, thresholds],
        fpr=np.r_[0.0, fp / n_neg],
        fnr=np.r_[1.0, 1.0 - tp / n_pos],
    )


det_curve = roc_curve
"""A DET curve is the same operating points, plotted as miss (fnr) against false alarm (fpr)."""


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve = P(score of a positive > score of a negative), ties count 1/2."""
    curve = roc_curve(labels, scores)
    return float(np.trapezoid(curve.tpr, curve.fpr))


@dataclass(frozen=True)
class EER:
    """Equal error rate and the threshold where false positive and miss rates cross."""

    rate: float
    threshold: float


def equal_error_rate(labels, scores) -> EER:
    """Rate where the miss and false positive rates are equal, linearly interpolated.

    Between the two operating points where fnr - fpr changes sign the curve is taken as a
    straight line (the ROC convex segment), the usual convention of speaker and KWS papers.
    """
    curve = roc_curve(labels, scores)
    diff = curve.fnr - curve.fpr  # starts at 1, ends <= 0, never increases
    i = int(np.flatnonzero(diff <= 0)[0])
    if diff[i] == 0 or i == 0:
        return EER(float(curve.fpr[i]), float(curve.thresholds[i]))
    # diff[i-1] > 0 >= diff[i]: intersect the segment between the two points.
    w = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = curve.fpr[i - 1] + w * (curve.fpr[i] - curve.fpr[i - 1])
    low, high = curve.thresholds[i], curve.thresholds[i - 1]
    threshold = low if not np.isfinite(high) else high + w * (low - high)
    return EER(float(rate), float(threshold))


# --------------------------------------------------------------------------- term detection


class Span(Protocol):
    file: str
    start: float
    end: float


@dataclass(frozen=True)
class Occurrence:
    """A true occurrence of a term (word or phrase): the file and the span it is spoken in."""

    file: str
    start: float
    end: float


@dataclass(frozen=True)
class Detection:
    """A system's putative occurrence of a term. The engine's `Hit` has the same fields."""

    file: str
    start: float
    end: float
    score: float


@dataclass
class TermAlignment:
    """One term's detections, best first, each labelled correct or false alarm."""

    term: str
    n_true: int
    scores: np.ndarray
    correct: np.ndarray
    extra: dict = field(default_factory=dict)

    @property
    def n_detections(self) -> int:
        return int(self.scores.size)

    def n_correct(self, threshold: float = -np.inf) -> int:
        return int(self.correct[self.scores >= threshold].sum())

    def n_false_alarms(self, threshold: float = -np.inf) -> int:
        return int((~self.correct[self.scores >= threshold]).sum())

    def average_precision(self) -> float:
        """AP over the ranked detections with N_true as the recall base (NaN for absent terms)."""
        if self.n_true == 0:
            return float("nan")
        return average_precision(self.correct, self.scores, n_positive=self.n_true)

    def precision_at(self, k: int = 5) -> float:
        if self.scores.size == 0:
            return 0.0
        return precision_at_k(self.correct, self.scores, k)


def _midpoint(span) -> float:
    return 0.5 * (float(span.start) + float(span.end))


def align_term(
    term: str,
    detections: Iterable,
    occurrences: Iterable,
    tolerance: float = TOLERANCE_S,
) -> TermAlignment:
    """Label each detection of one term correct or false alarm against its true occurrences.

    `detections`: objects with file, start, end, score (e.g. `Detection`, the engine's `Hit`).
    `occurrences`: objects with file, start, end. A phrase occurrence spans from its first
    word's start to its last word's end. Files are compared as given (use absolute paths or
    ids consistently).
    """
    detections = sorted(detections, key=lambda d: -float(d.score))
    by_file: dict[str, list[tuple[float, float, float]]] = {}
    for occurrence in occurrences:
        by_file.setdefault(str(occurrence.file), []).append(
            (float(occurrence.start), float(occurrence.end), _midpoint(occurrence))
        )
    n_true = sum(len(spans) for spans in by_file.values())
    used: dict[str, np.ndarray] = {name: np.zeros(len(spans), dtype=bool) for name, spans in by_file.items()}
    correct = np.zeros(len(detections), dtype=bool)
    for index, detection in enumerate(detections):
        spans = by_file.get(str(detection.file))
        if not spans:
            continue
        middle = _midpoint(detection)
        best, best_distance = -1, np.inf
        for j, (start, end, centre) in enumerate(spans):
            if used[str(detection.file)][j]:
                continue
            if start - tolerance <= middle <= end + tolerance and abs(middle - centre) < best_distance:
                best, best_distance = j, abs(middle - centre)
        if best >= 0:
            used[str(detection.file)][best] = True
            correct[index] = True
    scores = np.array([float(d.score) for d in detections], dtype=np.float64)
    return TermAlignment(term=term, n_true=n_true, scores=scores, correct=correct)


@dataclass
class TWVCurve:
    """TWV and its parts at every distinct detection score (descending), terms with N_true > 0.

    Index 0 is threshold +inf (nothing accepted, TWV = 0). `p_miss` and `p_fa` are term
    averages; `miss_rate` is pooled over occurrences and `fa_per_hour` is false alarms per
    term per hour of speech, the usual axes of a KWS DET plot.
    """

    thresholds: np.ndarray
    twv: np.ndarray
    p_miss: np.ndarray
    p_fa: np.ndarray
    miss_rate: np.ndarray
    fa_per_hour: np.ndarray
    n_terms: int
    speech_seconds: float
    beta: float

    @property
    def mtwv(self) -> float:
        return float(self.twv.max()) if self.twv.size else 0.0

    @property
    def mtwv_threshold(self) -> float:
        return float(self.thresholds[int(np.argmax(self.twv))])

    def at(self, threshold: float) -> int:
        """Index of the operating point that accepts exactly the detections scoring >= threshold."""
        return int(np.searchsorted(-self.thresholds, -threshold, side="right") - 1)

    def twv_at(self, threshold: float) -> float:
        return float(self.twv[self.at(threshold)])

    def miss_rate_at_fa_per_hour(self, fa_per_hour: float = 1.0) -> float:
        """Pooled miss rate at the lowest threshold whose false alarm rate stays within the limit."""
        allowed = np.flatnonzero(self.fa_per_hour <= fa_per_hour + 1e-12)
        return float(self.miss_rate[allowed[-1]]) if allowed.size else 1.0


def twv_curve(alignments: Sequence[TermAlignment], speech_seconds: float, beta: float = BETA) -> TWVCurve:
    """Sweep the decision threshold over every detection score and compute TWV at each.

    TWV(θ) = Σ over detections scoring >= θ of a weight: +1/(K·N_t) for a hit of term t,
    -β/(K·(T - N_t)) for a false alarm, K = number of terms with N_t > 0. One sort does it.
    """
    if speech_seconds <= 0:
        raise EvaluationError(f"speech duration must be positive, not {speech_seconds}")
    present = [a for a in alignments if a.n_true > 0]
    for alignment in present:
        if alignment.n_true >= speech_seconds:
            raise EvaluationError(f"term {alignment.term!r} has {alignment.n_true} occurrences in {speech_seconds} s")
    k = len(present)
    if k == 0:
        empty = np.array([np.inf])
        return TWVCurve(empty, np.zeros(1), np.ones(1), np.zeros(1), np.ones(1), np.zeros(1), 0, speech_seconds, beta)
    scores = np.concatenate([a.scores for a in present])
    correct = np.concatenate([a.correct for a in present])
    n_true = np.concatenate([np.full(a.scores.size, a.n_true, dtype=np.float64) for a in present])
    hit_weight = np.where(correct, 1.0 / (k * n_true), 0.0)
    fa_weight = np.where(correct, 0.0, 1.0 / (k * (speech_seconds - n_true)))
    order = np.argsort(-scores, kind="mergesort")
    scores = scores[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1].astype(int)
    if scores.size == 0:
        last_of_group = np.zeros(0, dtype=int)
    hit_fraction = np.cumsum(hit_weight[order])[last_of_group]
    p_fa = np.cumsum(fa_weight[order])[last_of_group]
    hits = np.cumsum(correct[order])[last_of_group]
    false_alarms = np.cumsum(~correct[order])[last_of_group]
    total_true = sum(a.n_true for a in present)
    hours = speech_seconds / 3600.0
    p_miss = np.r_[1.0, 1.0 - hit_fraction]
    p_fa = np.r_[0.0, p_fa]
    return TWVCurve(
        thresholds=np.r_[np.inf, scores[last_of_group]],
        twv=1.0 - p_miss - beta * p_fa,
        p_miss=p_miss,
        p_fa=p_fa,
        miss_rate=np.r_[1.0, 1.0 - hits / total_true],
        fa_per_hour=np.r_[0.0, false_alarms / (k * hours)],
        n_terms=k,
        speech_seconds=float(speech_seconds),
        beta=beta,
    )


def term_weighted_value(
    alignments: Sequence[TermAlignment], speech_seconds: float, threshold: float = -np.inf, beta: float = BETA
) -> float:
    """TWV with every detection scoring >= threshold accepted (ATWV at the system's threshold)."""
    return twv_curve(alignments, speech_seconds, beta).twv_at(threshold)


def maximum_term_weighted_value(alignments: Sequence[TermAlignment], speech_seconds: float, beta: float = BETA) -> tuple[float, float]:
    """MTWV and the threshold that reaches it (+inf when no threshold beats accepting nothing)."""
    curve = twv_curve(alignments, speech_seconds, beta)
    return curve.mtwv, curve.mtwv_threshold


def absent_term_false_alarms(alignments: Sequence[TermAlignment], threshold: float = -np.inf) -> int:
    """Detections at or above the threshold for terms that are never spoken (all are false alarms)."""
    return sum(int((a.scores >= threshold).sum()) for a in alignments if a.n_true == 0)


def mean_average_precision(alignments: Sequence[TermAlignment]) -> float:
    values = [a.average_precision() for a in alignments if a.n_true > 0]
    return float(np.mean(values)) if values else float("nan")


def mean_precision_at(alignments: Sequence[TermAlignment], k: int = 5) -> float:
    values = [a.precision_at(k) for a in alignments if a.n_true > 0]
    return float(np.mean(values)) if values else float("nan")
