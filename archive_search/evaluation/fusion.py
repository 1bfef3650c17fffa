"""Fitting the score fusion on development archives, and the channel ablation.

Each development archive is indexed with transcripts; every drawn query (words, phrases, absent
terms, spoken probes) goes through the engine's own stages (`Searcher.gather`) with every
channel on, and each candidate region is labelled a hit when its midpoint lies within 0.5 s of
a true occurrence (the NIST STD rule `align_term` uses). A fusion is a logistic regression of
the label on a subset of `search.fusion.FEATURES`; its bias is then shifted so that 0.5 falls
on the pooled development MTWV threshold.

The ablation scores channel subsets on the same regions: a subset keeps only the regions its
channels found and only the feature columns they give, with or without the query-level
columns (the per-query normalisation). Figures are cross-validated by query (fit on one half of
the queries, score the other half, and the reverse), so no query is scored by a fusion that
saw it. `engine_acoustic` (today's acoustic engine and its calibration, not refitted) and
`whisper_exact` (every exact transcript match accepted, scored by its word probability) are
the two references.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from archive_search.audio import load_segment
from archive_search.embedders.g2p import pronounce
from archive_search.errors import EvaluationError
from archive_search.evaluation.harness import Corpus, Query
from archive_search.evaluation.metrics import (
    TOLERANCE_S,
    Detection,
    TermAlignment,
    align_term,
    mean_average_precision,
    twv_curve,
)
from archive_search.search.engine import VERIFIED_KIND, QueryEvidence, Searcher, hits_of
from archive_search.search.fusion import ENGINE_FEATURES, FEATURES, QUERY_FEATURES, VERIFY_FEATURES, Evidence, Fusion, feature_matrix

QUERY_KIND = {"text": "text", "spoken": "audio"}

FIT_C = 1.0
"""Inverse L2 strength of the logistic fit (scikit-learn's default): development labels are few
(a few hundred hits), so the weights are kept small."""

MIN_FIT_REGIONS = 20
"""A fusion needs at least this many labelled regions with both labels to be fitted."""


@dataclass
class QueryRegions:
    """One development query, its candidate regions (probe excluded), and their labels."""

    query: Query
    corpus: str
    speech_seconds: float
    evidence: QueryEvidence
    labels: np.ndarray
    truth: list
    acoustic: QueryEvidence | None = None
    """The same query through today's acoustic engine (vectors channel, calibrated scores)."""


def collect(searcher: Searcher, acoustic: Searcher, corpus: Corpus, queries: Sequence[Query], name: str, top: int = 50,
            tolerance: float = TOLERANCE_S) -> list[QueryRegions]:  # fmt: skip
    """Run each query through the engine's stages with every channel, and through the acoustic
    engine alone; label the regions against the truth."""
    rows = []
    for query in queries:
        if query.kind == "spoken":
            clip = load_segment(query.probe.file, query.probe.start, query.probe.end)
            evidence, plain = searcher.gather_audio(clip, top, fuse_transcript=True), acoustic.gather_audio(clip, top)
        else:
            evidence, plain = searcher.gather(query.text, top, fuse_transcript=True), acoustic.gather(query.text, top)
        for item in (evidence, plain):
            item.regions = [r for r in item.regions if not _is_probe(r, query, tolerance)]
        truth = [o for o in corpus.occurrences(query.words) if o != query.probe] if not query.absent else []
        labels = np.array([_near(r, truth, tolerance) for r in evidence.regions], dtype=bool)
        rows.append(QueryRegions(query, name, corpus.speech_seconds, evidence, labels, truth, plain))
    return rows


def _is_probe(region: Evidence, query: Query, tolerance: float) -> bool:
    probe = query.probe
    if probe is None:
        return False
    middle = (region.start + region.end) / 2
    return os.path.realpath(region.file) == os.path.realpath(probe.file) and probe.start - tolerance <= middle <= probe.end + tolerance


def _near(region: Evidence, truth: Sequence, tolerance: float) -> bool:
    middle = (region.start + region.end) / 2
    file = os.path.realpath(region.file)
    return any(os.path.realpath(o.file) == file and o.start - tolerance <= middle <= o.end + tolerance for o in truth)


# --------------------------------------------------------------------------- channel subsets


@dataclass(frozen=True)
class Variant:
    """A channel subset: which regions it keeps and which feature columns it reads."""

    name: str
    keeps: Callable[[Evidence], bool]
    region_features: tuple[str, ...]


VARIANTS = (
    Variant("transcript exact", lambda r: r.exact is not None, ("exact_probability",)),
    Variant("transcript phonetic", lambda r: r.exact is not None or r.phonetic is not None, ("phonetic", "phonetic_probability")),
    Variant("acoustic", lambda r: "vectors" in r.sources, ("similarity", "rerank")),
    Variant("fused", lambda r: True, ("exact", "exact_probability", "phonetic", "phonetic_probability", "similarity", "rerank")),
)


def variant_features(variant: Variant, normalised: bool) -> tuple[str, ...]:
    """The columns a variant's fusion reads: its region columns, plus the query columns when normalised."""
    query_columns = tuple(c for c in QUERY_FEATURES if c not in ("rerank_share", "rerank_mass") or "rerank" in variant.region_features)
    return variant.region_features + (query_columns if normalised else ())


def searched_transcripts(row: QueryRegions) -> bool:
    """True when the engine searched the transcripts for this query, so the fusion scores it: every
    text query, and a spoken query only when whisper heard the clip's words clearly (otherwise
    the engine keeps the acoustic path and its calibrated score)."""
    return row.evidence.fused and row.evidence.context.n_phonemes > 0


def _subset(row: QueryRegions, keeps: Callable[[Evidence], bool], whole: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept region indexes, their feature rows, their labels) of one query. The query columns
    are recomputed over the kept regions only (a channel sees only its own), unless `whole`:
    then they are the query's over all its regions, as the engine computes them for the
    regions it verifies."""
    keep = np.array([i for i, r in enumerate(row.evidence.regions) if keeps(r)], dtype=int)
    regions = [row.evidence.regions[i] for i in keep]
    if whole:
        matrix = row.evidence.features()[keep] if len(keep) else np.zeros((0, len(FEATURES)))
    else:
        matrix = feature_matrix(regions, row.evidence.context) if regions else np.zeros((0, len(FEATURES)))
    return keep, matrix, row.labels[keep]


def verified(region: Evidence) -> bool:
    return region.forced is not None


def fit_fusion(rows: Sequence[QueryRegions], kind: str, features: tuple[str, ...], keeps: Callable[[Evidence], bool] = lambda r: True,
               data: str = "", whole: bool = False) -> Fusion:  # fmt: skip
    """Logistic regression of hit on `features` over the regions of `rows` of one query kind,
    its bias shifted so that 0.5 is the pooled development MTWV point (`whole`: see `_subset`)."""
    from sklearn.linear_model import LogisticRegression

    chosen = [row for row in rows if QUERY_KIND[row.query.kind] == kind and searched_transcripts(row)]
    parts = [_subset(row, keeps, whole) for row in chosen]
    columns = [FEATURES.index(f) for f in features]
    x = np.concatenate([m[:, columns] for _, m, _ in parts]) if parts else np.zeros((0, len(columns)))
    y = np.concatenate([labels for _, _, labels in parts]) if parts else np.zeros(0, bool)
    if len(y) < MIN_FIT_REGIONS:
        raise EvaluationError(f"fusion ({kind}): {len(y)} regions, {int(y.sum())} hits; too few to fit")
    if y.all() or not y.any():
        # one label only (a channel that never finds a false place, or never a true one): every
        # region scores the smoothed hit rate (Laplace), whatever its columns say
        rate = (y.sum() + 1) / (len(y) + 2)
        return Fusion(features, (0.0,) * len(features), float(math.log(rate / (1 - rate))), data)
    model = LogisticRegression(C=FIT_C, max_iter=2000).fit(x, y)
    raw = Fusion(features, tuple(float(w) for w in model.coef_[0]), float(model.intercept_[0]), data)
    alignments = [align_term(row.query.text, _detections(row.evidence, keep, raw(m)), row.truth)
                  for row, (keep, m, _) in zip(chosen, parts)]  # fmt: skip
    curve = twv_curve([a for a in alignments if a.n_true], float(np.mean([row.speech_seconds for row in chosen])))
    threshold = float(curve.mtwv_threshold) if np.isfinite(curve.mtwv_threshold) else 0.999
    threshold = min(max(threshold, 1e-6), 1 - 1e-6)
    shift = math.log(threshold / (1 - threshold))
    return Fusion(features, raw.weights, raw.bias - shift, data, round(float(curve.mtwv), 4))


def _detections(evidence: QueryEvidence, keep: np.ndarray, score: np.ndarray, top: int = 50) -> list[Detection]:
    """The hits the engine would return for these regions and scores, as detections."""
    regions = [evidence.regions[i] for i in keep]
    return [Detection(os.path.realpath(h.file), h.start, h.end, h.score) for h in hits_of(evidence.label, regions, score, top)]


# --------------------------------------------------------------------------- the ablation


@dataclass
class AblationRow:
    system: str
    normalised: bool | None
    corpus: str
    group: str
    n: int
    atwv: float
    mtwv: float
    map: float
    absent_false_alarms: int
    """Detections scoring >= 0.5 on absent terms."""


@dataclass
class Ablation:
    rows: list[AblationRow] = field(default_factory=list)

    def table(self) -> str:
        lines = ["| system | normalised | archive | queries | n | ATWV@0.5 | MTWV | MAP | FA on absent @0.5 |", "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            norm = "-" if r.normalised is None else ("yes" if r.normalised else "no")
            lines.append(f"| {r.system} | {norm} | {r.corpus} | {r.group} | {r.n} | {r.atwv:.3f} | {r.mtwv:.3f} | {r.map:.3f} | {r.absent_false_alarms} |")
        return "\n".join(lines)


def _summarise(system: str, normalised: bool | None, corpus: str, group: str, rows: Sequence[QueryRegions],
               alignments: Sequence[TermAlignment], threshold: float = 0.5) -> AblationRow:  # fmt: skip
    present = [a for a, r in zip(alignments, rows) if not r.query.absent]
    absent = [a for a, r in zip(alignments, rows) if r.query.absent]
    seconds = rows[0].speech_seconds if rows else 1.0
    curve = twv_curve(present, seconds) if present else None
    atwv = curve.twv_at(threshold) if curve is not None else float("nan")
    return AblationRow(system, normalised, corpus, group, len(present), atwv, float(curve.mtwv) if curve else float("nan"),
                       mean_average_precision(present) if present else float("nan"),
                       int(sum(int((a.scores >= threshold).sum()) for a in absent)))  # fmt: skip


def ablation(rows: Sequence[QueryRegions], groups: dict[str, Callable[[Query], bool]], acoustic: Searcher, folds: int = 2,
             seed: int = 0) -> Ablation:  # fmt: skip
    """Every variant, with and without normalisation, cross-validated by query; plus the two
    references (`acoustic` scores today's engine). Rows per development archive and query group."""
    result = Ablation()
    corpora = sorted({row.corpus for row in rows})
    rng = np.random.default_rng(seed)
    fold_of = {id(row): int(f) for row, f in zip(rows, rng.integers(folds, size=len(rows)))}
    scored: dict[tuple[str, bool | None], dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for variant in VARIANTS:
        for normalised in (False, True):
            features = variant_features(variant, normalised)
            out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            for kind in ("text", "audio"):
                for fold in range(folds):
                    train = [r for r in rows if fold_of[id(r)] != fold]
                    test = [r for r in rows if fold_of[id(r)] == fold and QUERY_KIND[r.query.kind] == kind and searched_transcripts(r)]
                    if not test:
                        continue
                    try:
                        fusion = fit_fusion(train, kind, features, variant.keeps)
                    except EvaluationError:
                        continue
                    for row in test:
                        keep, matrix, _ = _subset(row, variant.keeps)
                        out[id(row)] = (keep, fusion(matrix))
            scored[(variant.name, normalised)] = out
    if any(verified(r) for row in rows for r in row.evidence.regions):
        scored[(f"fused + whisper verifier (top {_verified_count(rows)})", True)] = _verified_scores(rows, fold_of, folds)
    for corpus in corpora:
        for group, member in groups.items():
            chosen = [r for r in rows if r.corpus == corpus and (member(r.query) or r.query.absent)]
            if not any(not r.query.absent for r in chosen):
                continue
            references = _references(chosen, acoustic)
            for name, alignments in references.items():
                result.rows.append(_summarise(name, None, corpus, group, chosen, alignments))
            engine = dict(zip(map(id, chosen), references["engine (acoustic, before)"]))
            for (name, normalised), out in scored.items():
                # Queries the engine does not fuse (unclear clips) keep the acoustic engine's hits,
                # unless a fold's fit failed (too few regions): then the row is the scored queries only.
                complete = all(id(r) in out for r in chosen if searched_transcripts(r))
                kept = [r for r in chosen if id(r) in out or (complete and not searched_transcripts(r))]
                if not any(id(r) in out for r in kept):
                    continue
                alignments = [align_term(r.query.text, _detections(r.evidence, *out[id(r)]), r.truth) if id(r) in out
                              else engine[id(r)] for r in kept]  # fmt: skip
                result.rows.append(_summarise(name, normalised, corpus, group, kept, alignments))
    return result


def _verified_count(rows: Sequence[QueryRegions]) -> int:
    return max(sum(verified(r) for r in row.evidence.regions) for row in rows)


def _verified_scores(rows: Sequence[QueryRegions], fold_of: dict[int, int], folds: int) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Text queries scored as the engine scores them with the verifier on: every region by the
    fused (normalised) fusion, the verified ones by the verified fusion; both fitted on the
    other folds."""
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for fold in range(folds):
        train = [r for r in rows if fold_of[id(r)] != fold]
        try:
            base = fit_fusion(train, "text", ENGINE_FEATURES)
            checked = fit_fusion(train, "text", ENGINE_FEATURES + VERIFY_FEATURES, verified, whole=True)
        except EvaluationError:
            continue
        for row in rows:
            if fold_of[id(row)] == fold and row.query.kind == "text" and searched_transcripts(row):
                features = row.evidence.features()
                scores = base(features)
                done = [i for i, r in enumerate(row.evidence.regions) if verified(r)]
                if done:
                    scores[done] = checked(features[done])
                out[id(row)] = (np.arange(len(row.evidence.regions)), scores)
    return out


def verify_regions(rows: Sequence[QueryRegions], searcher: Searcher, count: int) -> int:
    """Whisper's forced decoding over the `count` best regions of every text query that has
    none yet (`Searcher.verify`, the engine's own step); returns the queries verified."""
    done = 0
    for row in rows:
        if row.query.kind == "text" and searched_transcripts(row) and not any(verified(r) for r in row.evidence.regions):
            searcher.verify(row.evidence, " ".join(pronounce(row.query.text).words), count)
            done += 1
    return done


def _references(rows: Sequence[QueryRegions], acoustic: Searcher) -> dict[str, list[TermAlignment]]:
    """Today's acoustic engine (its own calibrated scores) and whisper-exact (every exact match
    accepted: score 0.5 + half its word probability, so each is a decision at 0.5)."""
    engine, exact = [], []
    for row in rows:
        plain = row.acoustic
        detections = []
        if plain is not None and plain.regions:
            detections = _detections(plain, np.arange(len(plain.regions)), acoustic.score(plain))
        engine.append(align_term(row.query.text, detections, row.truth))
        matches = [(i, r) for i, r in enumerate(row.evidence.regions) if r.exact is not None]
        keep = np.array([i for i, _ in matches], dtype=int)
        scores = np.array([0.5 + 0.5 * r.exact.probability for _, r in matches])
        exact.append(align_term(row.query.text, _detections(row.evidence, keep, scores), row.truth))
    return {"engine (acoustic, before)": engine, "whisper-exact": exact}


# --------------------------------------------------------------------------- the whole run


def query_groups(rare: Callable[[str], bool] | None = None) -> dict[str, Callable[[Query], bool]]:
    """Report rows: text, spoken, and text queries holding a rare word (`rare(word)`)."""
    groups: dict[str, Callable[[Query], bool]] = {
        "text": lambda q: q.kind == "text",
        "spoken": lambda q: q.kind == "spoken",
    }
    if rare is not None:
        groups["text/rare"] = lambda q: q.kind == "text" and any(rare(w) for w in q.words)
    return groups


def rare_word(zipf_below: float = 3.0) -> Callable[[str], bool] | None:
    """A word rarer than `zipf_below` on wordfreq's Zipf scale (3: once per million words);
    None when wordfreq is not installed (it comes with the `train` extra)."""
    try:
        from wordfreq import zipf_frequency
    except ImportError:
        return None
    return lambda word: zipf_frequency(word, "en") < zipf_below


def fit_engine_fusions(rows: Sequence[QueryRegions], data: str, kinds: Sequence[str] = ("text", "audio")) -> dict[str, Fusion]:
    """The shipped fusions: every engine column, fitted on all development queries the engine
    fuses, per query kind (spoken queries: those whose clip whisper heard clearly); and, when
    the text queries' best regions were verified (`verify_regions`), the fusion for those."""
    fusions = {}
    for kind in kinds:
        try:
            fusions[kind] = fit_fusion(rows, kind, ENGINE_FEATURES, data=data)
        except EvaluationError:
            continue
    if "text" in kinds and any(verified(r) for row in rows for r in row.evidence.regions):
        fusions[VERIFIED_KIND] = fit_fusion(rows, "text", ENGINE_FEATURES + VERIFY_FEATURES, verified, data, whole=True)
    return fusions
