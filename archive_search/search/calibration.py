"""Score calibration: raw search scores -> [0, 1] with 0.5 at a decision point fitted on dev data.

Raw scores are JMCL cosine similarities (retrieval alone) or reranker probabilities; neither is
a probability of a true hit, and the right cut-off differs between text and spoken queries
(spoken queries compare audio with audio and score higher). A calibration holds, for each query
kind, the raw threshold at which a development archive reached its maximum term-weighted value
(NIST STD: it trades misses against false alarms at beta = 999.9), and the slope of a logistic
fit of hit against raw score there. The calibrated score is sigmoid(slope * (raw - threshold)),
so `score >= 0.5` is the engine's own yes/no decision (`search.engine.DEFAULT_THRESHOLD`) and the
order of hits never changes.

Calibrations live in `calibration.json` beside the checkpoints, keyed by the scorer's name
(the JMCL model, plus the reranker when there is one): a calibration fitted for other models is
never applied.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from archive_search.errors import CheckpointError, EvaluationError

CALIBRATION_FILE = "calibration.json"
QUERY_KINDS = ("text", "audio")
MIN_SLOPE = 1.0
"""A logistic slope below this (too few or inseparable dev hits) is raised to it, so that the
score still spreads around the decision point."""


@dataclass(frozen=True)
class ScoreCalibration:
    """One query kind's map from raw score to [0, 1]."""

    threshold: float
    """Raw score that maps to 0.5: the development archive's MTWV decision point."""
    slope: float
    """Logistic slope per unit of raw score."""
    dev_mtwv: float | None = None
    """MTWV the development archive reached at `threshold` (for the record)."""
    n_detections: int = 0

    def __call__(self, raw: float) -> float:
        z = self.slope * (float(raw) - self.threshold)
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


@dataclass(frozen=True)
class Calibration:
    """The calibrations of one scorer, per query kind ("text", "audio"), and what they came from."""

    scorer: str
    kinds: dict[str, ScoreCalibration]
    data: str = ""

    def apply(self, kind: str, raw: float) -> float:
        """Calibrated score of a raw one; raw scores of an uncalibrated kind pass through, clipped."""
        calibration = self.kinds.get(kind)
        if calibration is None:
            return float(min(1.0, max(0.0, raw)))
        return calibration(raw)


def scorer_name(model_name: str, reranker_name: str | None) -> str:
    """The key a calibration is stored under: what produced the raw scores."""
    return model_name if reranker_name is None else f"{model_name}+{reranker_name}"


def fit_kind(scores: Sequence[np.ndarray], correct: Sequence[np.ndarray], n_true: Sequence[int], speech_seconds: float) -> ScoreCalibration:
    """Fit one kind from per-term detections (raw scores and hit labels) on a development archive.

    Terms with no true occurrence are left out of the threshold (as TWV leaves them out) but
    their detections, all false alarms, count in the slope.
    """
    from sklearn.linear_model import LogisticRegression

    from archive_search.evaluation.metrics import TermAlignment, twv_curve

    present = [
        TermAlignment("", int(n), np.asarray(s, dtype=np.float64), np.asarray(c, dtype=bool))
        for s, c, n in zip(scores, correct, n_true)
        if n > 0
    ]
    if not present:
        raise EvaluationError("calibration: no development term has a true occurrence")
    curve = twv_curve(present, speech_seconds)
    threshold = curve.mtwv_threshold
    if not np.isfinite(threshold):  # no threshold beat accepting nothing: cut above every hit
        threshold = float(max(float(np.max(s)) for s in scores if len(s)))
    raw = np.concatenate([np.asarray(s, dtype=np.float64) for s in scores])
    labels = np.concatenate([np.asarray(c, dtype=bool) for c in correct])
    slope = MIN_SLOPE
    if labels.any() and (~labels).any():
        model = LogisticRegression(C=100.0).fit(raw.reshape(-1, 1), labels)
        slope = max(MIN_SLOPE, float(model.coef_[0, 0]))
    return ScoreCalibration(float(threshold), slope, round(curve.mtwv, 4), int(raw.size))


def save_calibration(path: str | Path, calibration: Calibration) -> Path:
    """Add or replace this scorer's entry in a calibration file (other scorers' entries stay)."""
    entry = {"data": calibration.data, "kinds": {k: asdict(v) for k, v in calibration.kinds.items()}}
    return write_scorer_entry(path, calibration.scorer, entry)


def write_scorer_entry(path: str | Path, scorer: str, entry: dict) -> Path:
    """Add or replace one scorer's entry in a JSON file keyed by scorer name (calibration.json,
    fusion.json), written to a temporary file and renamed into place."""
    path = Path(path)
    entries = read_scorer_file(path) if path.is_file() else {}
    entries[scorer] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def load_calibrations(path: str | Path) -> dict[str, Calibration]:
    """Every scorer's calibration in a calibration file, by scorer name (empty when absent).

    A bundle keeps them all: searching it without its reranker (an evaluation's JMCL-only
    system) then finds the calibration of JMCL alone."""
    path = Path(path)
    if not path.is_file():
        return {}
    calibrations = {}
    for scorer, entry in read_scorer_file(path).items():
        try:
            kinds = {kind: ScoreCalibration(**values) for kind, values in entry["kinds"].items() if kind in QUERY_KINDS}
        except (KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: calibration of {scorer!r} is malformed ({exc})") from exc
        calibrations[scorer] = Calibration(scorer, kinds, entry.get("data", ""))
    return calibrations


def load_calibration(path: str | Path, scorer: str) -> Calibration | None:
    """The scorer's calibration from a calibration file; None when the file or entry is absent."""
    return load_calibrations(path).get(scorer)


def read_scorer_file(path: Path) -> dict:
    """A JSON file keyed by scorer name; CheckpointError naming the file when it is not one."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from exc
    if not isinstance(entries, dict):
        raise CheckpointError(f"{path}: must hold one object keyed by scorer name")
    return entries
