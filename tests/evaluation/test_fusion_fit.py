"""Fitting the fusion and the channel ablation on hand-made development regions."""

import numpy as np
import pytest

from archive_search.evaluation.fusion import VARIANTS, QueryRegions, ablation, fit_fusion, query_groups, variant_features
from archive_search.evaluation.harness import Query
from archive_search.evaluation.metrics import Occurrence
from archive_search.search.engine import QueryEvidence
from archive_search.search.fusion import FEATURES, Evidence, QueryContext
from archive_search.search.transcripts import TranscriptMatch


class ScoreOfSimilarity:
    """Stands in for today's engine in the references: its score is the JMCL similarity."""

    def score(self, evidence):
        return np.array([r.similarity or 0.0 for r in evidence.regions])


def make_rows(n_queries: int = 40, seed: int = 0) -> list[QueryRegions]:
    """Each query has one true place, heard by whisper 70% of the time (an exact match) and
    scored high by the acoustic channel, and four false places scored lower."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n_queries):
        file = f"/dev/{q}.wav"
        truth = [Occurrence(file, 10.0, 10.5)]
        heard = rng.random() < 0.7
        exact = TranscriptMatch(file, 10.0, 10.5, 0.9, 1.0, True, "word") if heard else None
        regions = [Evidence(file, 10.0, 10.5, similarity=0.6 + 0.2 * rng.random(), rerank=0.7 + 0.3 * rng.random(),
                            exact=exact, sources={"vectors"} | ({"exact"} if heard else set()))]  # fmt: skip
        for k in range(4):
            regions.append(Evidence(file, 20.0 + 5 * k, 20.5 + 5 * k, similarity=0.3 + 0.3 * rng.random(), rerank=0.5 * rng.random(),
                                    sources={"vectors"}))  # fmt: skip
        evidence = QueryEvidence(f"w{q}", "text", regions, QueryContext(5, int(heard), heard, 0.2), fused=True)
        labels = np.array([True, False, False, False, False])
        query = Query(f"q{q}", f"w{q}", "text", "long")
        rows.append(QueryRegions(query, "dev", 3600.0, evidence, labels, truth, acoustic=evidence))
    return rows


def test_fitted_fusion_puts_the_decision_point_at_half():
    rows = make_rows()
    fusion = fit_fusion(rows, "text", FEATURES)
    scores = [fusion(row.evidence.features()) for row in rows]
    true_scores = np.array([s[0] for s in scores])
    false_scores = np.concatenate([s[1:] for s in scores])
    assert (true_scores >= 0.5).mean() > 0.9
    assert (false_scores < 0.5).mean() > 0.9
    assert fusion.dev_mtwv is not None and fusion.dev_mtwv > 0.8
    assert fusion.weights[FEATURES.index("similarity")] > 0


def test_the_ablation_scores_every_variant_and_both_references():
    rows = make_rows(60)
    result = ablation(rows, query_groups(), ScoreOfSimilarity())
    systems = {(r.system, r.normalised) for r in result.rows if r.group == "text"}
    expected = {(v.name, n) for v in VARIANTS for n in (False, True)} | {("engine (acoustic, before)", None), ("whisper-exact", None)}
    assert systems == expected
    by_system = {(r.system, r.normalised): r for r in result.rows if r.group == "text"}
    # whisper-exact hears 70% of the places and never a false one
    assert by_system[("whisper-exact", None)].mtwv == pytest.approx(np.mean([r.evidence.regions[0].exact is not None for r in rows]), abs=1e-3)
    # the fused variants see both channels and find the unheard places too
    assert by_system[("fused", True)].map > by_system[("transcript exact", True)].map
    assert "| fused | yes | dev | text |" in result.table()


def spoken_rows(rows: list[QueryRegions], heard: bool) -> list[QueryRegions]:
    """The rows as spoken queries; a clip whisper did not hear clearly has no words (0 phonemes)."""
    from dataclasses import replace

    out = []
    for row in rows:
        context = row.evidence.context if heard else replace(row.evidence.context, n_phonemes=0)
        evidence = replace(row.evidence, kind="audio", context=context)
        out.append(replace(row, query=replace(row.query, kind="spoken"), evidence=evidence, acoustic=evidence))
    return out


def test_spoken_queries_without_clear_words_keep_the_acoustic_engine():
    from archive_search.errors import EvaluationError

    text = make_rows(40)
    unheard = spoken_rows(make_rows(40, seed=1), heard=False)
    with pytest.raises(EvaluationError):
        fit_fusion(text + unheard, "audio", FEATURES)  # the engine fuses none of them
    result = ablation(text + unheard, query_groups(), ScoreOfSimilarity())
    spoken = {(r.system, r.normalised): r for r in result.rows if r.group == "spoken"}
    engine = spoken[("engine (acoustic, before)", None)]
    assert ("fused", True) not in spoken  # nothing was fused, so no fused row
    heard = spoken_rows(make_rows(40, seed=1), heard=True)
    mixed = {(r.system, r.normalised): r for r in ablation(text + heard[:20] + unheard[20:], query_groups(), ScoreOfSimilarity()).rows
             if r.group == "spoken"}  # fmt: skip
    # every spoken query is scored: the unheard half by the acoustic engine, the heard half by the fusion
    assert mixed[("fused", True)].n == engine.n == 40


def test_variant_features_add_the_query_columns_only_when_normalised():
    fused = VARIANTS[-1]
    assert "rerank_share" not in variant_features(fused, False)
    assert {"rerank_share", "exact_count", "in_vocabulary"} <= set(variant_features(fused, True))
    exact = VARIANTS[0]
    assert "rerank_share" not in variant_features(exact, True)  # an exact-only channel has no rerank


def test_verified_regions_get_their_own_fusion_and_ablation_row():
    from archive_search.evaluation.fusion import fit_engine_fusions
    from archive_search.search.engine import VERIFIED_KIND

    rows = make_rows(60)
    for row in rows:  # the verifier checked the true place and the best false one; whisper hears only the true
        row.evidence.regions[0].forced = (0.0, 0.0, 0.0, 0.0)
        row.evidence.regions[1].forced = (-9.0, -12.0, -12.0, -8.0)
    fusions = fit_engine_fusions(rows, "hand-made")
    assert set(fusions) == {"text", VERIFIED_KIND}
    assert "forced_mean" not in fusions["text"].features
    checked = fusions[VERIFIED_KIND]
    assert checked.weights[checked.features.index("forced_mean")] > 0
    scores = [checked(row.evidence.features()[:2]) for row in rows]
    assert all(s[0] >= 0.5 > s[1] for s in scores)
    result = ablation(rows, query_groups(), ScoreOfSimilarity())
    row = next(r for r in result.rows if r.system.startswith("fused + whisper verifier") and r.group == "text")
    assert row.system == "fused + whisper verifier (top 2)" and row.n == 60 and row.map == pytest.approx(1.0)
