"""Fit the engine's score calibration on a development archive (never on evaluation data).

The engine indexes the archive and answers drawn word, phrase, absent-term and spoken queries
with calibration switched off; each query kind's raw scores and hit labels (NIST rule: midpoint
within 0.5 s of a true occurrence) then give its decision threshold and slope
(`search.calibration.fit_kind`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

from archive_search.evaluation.harness import Corpus, EngineSystem, Query, run_system
from archive_search.search.calibration import Calibration, fit_kind, scorer_name

QUERY_KIND_OF = {"text": "text", "spoken": "audio"}
"""Evaluation query kind -> the engine's calibration kind."""


def calibrate_engine(corpus: Corpus, queries: Sequence[Query], models, index_dir: str | Path, top: int = 50, data: str = "") -> Calibration:
    """Index `corpus` with `models` (raw scores) and fit one calibration per query kind."""
    raw_models = replace(models, calibrations={})
    system = EngineSystem(index_dir, raw_models, name="engine-raw")
    run = run_system(system, corpus, queries, top=top)
    kinds = {}
    for query_kind, kind in QUERY_KIND_OF.items():
        runs = [r for r in run.runs if r.query.kind == query_kind]
        if not runs:
            continue
        kinds[kind] = fit_kind(
            [r.alignment.scores for r in runs],
            [r.alignment.correct for r in runs],
            [r.alignment.n_true for r in runs],
            corpus.speech_seconds,
        )
    reranker = raw_models.reranker
    return Calibration(scorer_name(raw_models.name, reranker.name if reranker else None), kinds, data)
