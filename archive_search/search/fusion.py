"""The one score fusion: a region's evidence from every channel -> one calibrated score in [0, 1].

A region of audio is a candidate place of the query. Its evidence, one column each
(`FEATURES`), is what the channels and verifiers found there; the query-level columns put a
term's scores on one scale (a term with many strong candidates needs more evidence per
candidate than a term with one, as in keyword-specific thresholding). The fused score is a
logistic function of the columns, sigmoid(w . x + b), fitted on development archives
(`evaluation/fusion.py`) with the bias shifted so that 0.5 is the development archive's
maximum term-weighted-value point: the engine's threshold means the same for every query.
Weights live in `fusion.json` beside the checkpoints, per scorer and query kind.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from archive_search.errors import CheckpointError
from archive_search.search.calibration import read_scorer_file, write_scorer_entry
from archive_search.search.transcripts import TranscriptMatch

FUSION_FILE = "fusion.json"

REGION_FEATURES = (
    "exact",  # 1 when the query's words are transcribed in the region
    "exact_probability",  # whisper's mean probability of those words (0 without them)
    "phonetic",  # best phonetic similarity of a transcript span in the region (1 for exact, 0 for none)
    "phonetic_probability",  # whisper's mean word probability over that span
    "similarity",  # JMCL cosine of the region's best window (the retrieval floor when none was retrieved)
    "rerank",  # the reranker's probability (ParallelKWS, or DTW for spoken queries; 0 when none)
)
QUERY_FEATURES = (
    "rerank_share",  # rerank / sum of rerank over the query's regions: Kaldi KWS sum-to-one normalisation
    "rerank_mass",  # log(1 + sum of rerank over the query's regions): how many places look like it
    "exact_count",  # log(1 + exact transcript matches of the query in the archive)
    "in_vocabulary",  # 1 when every query word occurs somewhere in the archive's transcripts
    "query_phonemes",  # query length in phonemes / 10 (short queries are confused more often)
)
VERIFY_FEATURES = (
    "forced_mean",  # whisper forced to say the query over the region: mean log-probability of its tokens
    "forced_min",  # the least likely token's log-probability
    "forced_first",  # the first token's
    "forced_over_free",  # forced_mean minus the mean of whisper's own (greedy) decoding of the region
)
"""Columns of the opt-in verifier (`Searcher(verify_regions=N)`): 0 for regions it did not
verify; only the "text-verified" fusion reads them."""
FEATURES = REGION_FEATURES + QUERY_FEATURES + VERIFY_FEATURES
ENGINE_FEATURES = REGION_FEATURES + QUERY_FEATURES
"""What every region has: the columns of the engine's fusions."""


@dataclass
class Evidence:
    """One candidate region of one query and what each channel says about it."""

    file: str
    start: float
    end: float
    similarity: float | None = None
    exact: TranscriptMatch | None = None
    phonetic: TranscriptMatch | None = None
    rerank: float | None = None
    forced: tuple[float, ...] | None = None
    """The verifier's `VERIFY_FEATURES` (None: not verified)."""
    sources: set[str] = field(default_factory=set)

    def add_match(self, match: TranscriptMatch) -> None:
        if match.exact:
            if self.exact is None or match.probability > self.exact.probability:
                self.exact = match
        elif self.phonetic is None or match.similarity > self.phonetic.similarity:
            self.phonetic = match
        self.sources.add("exact" if match.exact else "phonetic")

    @property
    def transcript_span(self) -> tuple[float, float] | None:
        """The matched words' times: tighter than any window."""
        match = self.exact or self.phonetic
        return (match.start, match.end) if match is not None else None


@dataclass(frozen=True)
class QueryContext:
    """Query-level facts for the query columns."""

    n_phonemes: int
    exact_count: int
    in_vocabulary: bool
    similarity_floor: float
    """The lowest similarity FAISS returned: a region it did not return scores at most this."""


def feature_matrix(evidence: Sequence[Evidence], context: QueryContext) -> np.ndarray:
    """(N, len(FEATURES)) float64, one row per region, columns in `FEATURES` order."""
    rows = np.zeros((len(evidence), len(FEATURES)), dtype=np.float64)
    for i, item in enumerate(evidence):
        exact, phonetic = item.exact, item.phonetic
        best_phonetic = exact if exact is not None else phonetic
        rows[i, :6] = (
            1.0 if exact is not None else 0.0,
            exact.probability if exact is not None else 0.0,
            best_phonetic.similarity if best_phonetic is not None else 0.0,
            best_phonetic.probability if best_phonetic is not None else 0.0,
            item.similarity if item.similarity is not None else context.similarity_floor,
            item.rerank if item.rerank is not None else 0.0,
        )
    mass = float(rows[:, 5].sum())
    rows[:, 6] = rows[:, 5] / mass if mass > 0 else 0.0
    rows[:, 7] = math.log1p(mass)
    rows[:, 8] = math.log1p(context.exact_count)
    rows[:, 9] = 1.0 if context.in_vocabulary else 0.0
    rows[:, 10] = context.n_phonemes / 10.0
    for i, item in enumerate(evidence):
        if item.forced is not None:
            rows[i, len(ENGINE_FEATURES) :] = item.forced
    return rows


@dataclass(frozen=True)
class Fusion:
    """sigmoid(weights . x + bias) over the named feature columns (others are ignored)."""

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    data: str = ""
    """What it was fitted on (for the record)."""
    dev_mtwv: float | None = None

    def __post_init__(self) -> None:
        unknown = set(self.features) - set(FEATURES)
        if unknown or len(self.features) != len(self.weights):
            raise CheckpointError(f"fusion: unknown features {sorted(unknown)} or {len(self.weights)} weights for {len(self.features)}")

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        """(N, len(FEATURES)) -> (N,) scores in [0, 1]."""
        return fuse(matrix, self)


def fuse(matrix: np.ndarray, fusion: Fusion) -> np.ndarray:
    """The fused score of each row of a `feature_matrix`: (N, F) -> (N,) float64 in [0, 1]."""
    columns = [FEATURES.index(name) for name in fusion.features]
    z = np.asarray(matrix, dtype=np.float64)[:, columns] @ np.asarray(fusion.weights, dtype=np.float64) + fusion.bias
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


PRIOR_FUSION = Fusion(
    features=("exact", "exact_probability", "phonetic", "similarity", "rerank"),
    weights=(3.0, 2.0, 2.0, 4.0, 3.0),
    bias=-5.0,
    data="prior for models without a fitted fusion: an exact transcript match alone passes 0.5, "
    "acoustic evidence must be strong on its own",
)


def save_fusions(path: str | Path, scorer: str, fusions: dict[str, Fusion]) -> Path:
    """Add or replace this scorer's fusions (by query kind) in a fusion file."""
    return write_scorer_entry(path, scorer, {kind: asdict(fusion) for kind, fusion in fusions.items()})


def load_fusions(path: str | Path) -> dict[str, dict[str, Fusion]]:
    """{scorer: {query kind: Fusion}} from a fusion file (empty when absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    result = {}
    for scorer, kinds in read_scorer_file(path).items():
        try:
            result[scorer] = {
                kind: Fusion(tuple(v["features"]), tuple(float(w) for w in v["weights"]), float(v["bias"]), v.get("data", ""), v.get("dev_mtwv"))
                for kind, v in kinds.items()
            }  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{path}: fusion of {scorer!r} is malformed ({exc})") from exc
    return result
