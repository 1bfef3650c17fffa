"""Two candidate fusion columns, probed on the labelled development regions of `archive-eval
fusion` (OUT/regions.pickle) with the fusion refitted with and without them, cross-validated by
query (two folds, seed 0). Neither is shipped; docs/experiments.md, "Fusion probes", has the
figures.

    python scripts/evaluation/fusion_probes.py forced-decode work/fusion/run3/regions.pickle work/verify/forced-k3.jsonl --top 3
    python scripts/evaluation/fusion_probes.py forced-ablation work/fusion/run3/regions.pickle work/verify/forced-k3.jsonl
    python scripts/evaluation/fusion_probes.py heard work/fusion/run3/regions.pickle

* forced-decode: whisper forced decoding of the query over each of a text query's `--top`
  regions (best by the shipped fusion): the region +-0.25 s through the engine's verifier
  columns (`WhisperTranscriber.query_likelihood`). One JSON line per region; re-running resumes.
* forced-ablation: the shipped fusion's columns with and without four forced-decoding columns
  (mean and minimum log-probability of the query tokens, mean minus the free decoding's,
  first token) on those regions only, and each column's AUC alone.
* heard: a region column "how well whisper heard this place" (mean word probability of the
  transcript within 2 s of the region), over every region of every text query.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
from pathlib import Path
from typing import Callable

import numpy as np

from archive_search.evaluation.fusion import _detections
from archive_search.evaluation.metrics import align_term, mean_average_precision, twv_curve
from archive_search.search.fusion import FEATURES, Fusion, load_fusions

REGION_PAD_S = 0.25
HEARD_CONTEXT_S = 2.0
DEFAULT_SCORER = "jmcl-whisper-47a9ce9640+parallelkws-gse-6032ee701e+qbe-whisper"


def shipped_fusion() -> Fusion:
    return load_fusions(Path("archive_search/checkpoints/fusion.json"))[DEFAULT_SCORER]["text"]


def forced_decode(rows: list, out: Path, top: int) -> None:
    from archive_search.audio import load_segment
    from archive_search.embedders.transcriber import WhisperTranscriber

    done = {(r["q"], r["r"]) for r in map(json.loads, out.read_text().splitlines())} if out.exists() else set()
    whisper, fusion = WhisperTranscriber(threads=1, workers=1), shipped_fusion()
    with out.open("a") as sink:
        for q, row in enumerate(rows):
            if row.query.kind != "text":
                continue
            scores = fusion(row.evidence.features())
            for r in np.argsort(-scores)[:top].tolist():
                if (q, r) in done:
                    continue
                region = row.evidence.regions[r]
                clip = load_segment(region.file, max(0.0, region.start - REGION_PAD_S), region.end + REGION_PAD_S)
                mean, minimum, first, over_free = whisper.query_likelihood([clip], row.query.text)[0]
                sink.write(json.dumps({"q": q, "r": r, "label": bool(row.labels[r]), "fused": float(scores[r]),
                                       "forced_mean": mean, "forced_min": minimum, "forced_first": first,
                                       "free": mean - over_free}) + "\n")  # fmt: skip
                sink.flush()


def cross_validated(rows: list, regions: dict[int, np.ndarray], columns: Callable[[int], np.ndarray]) -> dict[int, np.ndarray]:
    """Each query's regions (indexes into its evidence) scored by a logistic fusion of
    `columns(q)` fitted on the other fold, its bias moved to the fitting fold's MTWV point."""
    from sklearn.linear_model import LogisticRegression

    queries = sorted(regions)
    fold = dict(zip(queries, np.random.default_rng(0).integers(2, size=len(queries)).tolist()))
    scores = {}
    for k in range(2):
        train = [q for q in queries if fold[q] != k]
        model = LogisticRegression(C=1.0, max_iter=5000).fit(np.concatenate([columns(q) for q in train]),
                                                             np.concatenate([rows[q].labels[regions[q]] for q in train]))  # fmt: skip
        raw = {q: 1 / (1 + np.exp(-model.decision_function(columns(q)))) for q in train}
        curve = twv_curve([a for a in alignments(rows, regions, raw, train) if a.n_true], np.mean([rows[q].speech_seconds for q in train]))
        threshold = min(max(curve.mtwv_threshold if np.isfinite(curve.mtwv_threshold) else 0.999, 1e-6), 1 - 1e-6)
        shift = math.log(threshold / (1 - threshold))
        for q in queries:
            if fold[q] == k:
                scores[q] = 1 / (1 + np.exp(-(model.decision_function(columns(q)) - shift)))
    return scores


def alignments(rows: list, regions: dict[int, np.ndarray], scores: dict[int, np.ndarray], queries) -> list:
    return [align_term(rows[q].query.text, _detections(rows[q].evidence, regions[q], scores[q]), rows[q].truth) for q in queries]


def report(name: str, rows: list, regions: dict[int, np.ndarray], scores: dict[int, np.ndarray]) -> None:
    cells = []
    for corpus in sorted({rows[q].corpus for q in regions}):
        queries = [q for q in sorted(regions) if rows[q].corpus == corpus]
        aligned = alignments(rows, regions, scores, queries)
        present = [a for a, q in zip(aligned, queries) if not rows[q].query.absent]
        curve = twv_curve(present, rows[queries[0]].speech_seconds)
        absent = sum(int((a.scores >= 0.5).sum()) for a, q in zip(aligned, queries) if rows[q].query.absent)
        cells.append(f"{corpus}: {curve.twv_at(0.5):.3f} / {curve.mtwv:.3f} / {mean_average_precision(present):.3f} / {absent}")
    print(f"| {name} | " + " | ".join(cells) + " |")


def forced_ablation(rows: list, measured: Path) -> None:
    from sklearn.metrics import roc_auc_score

    lines = [json.loads(line) for line in measured.read_text().splitlines()]
    by_region = {(r["q"], r["r"]): r for r in lines}
    regions = {q: np.array(sorted(r for qq, r in by_region if qq == q)) for q in {r["q"] for r in lines}}
    shipped = [FEATURES.index(c) for c in shipped_fusion().features]

    def base(q):
        return rows[q].evidence.features()[regions[q]][:, shipped]

    def forced(q):
        extra = [[by_region[(q, r)][k] for k in ("forced_mean", "forced_min", "forced_first")] + [by_region[(q, r)]["forced_mean"] - by_region[(q, r)]["free"]]
                 for r in regions[q]]  # fmt: skip
        return np.hstack([base(q), np.array(extra)])

    labels = np.array([r["label"] for r in lines])
    for column in ("fused", "forced_mean", "forced_min", "forced_first"):
        print(f"AUC {column}: {roc_auc_score(labels, [r[column] for r in lines]):.3f}")
    print(f"AUC forced_mean - free: {roc_auc_score(labels, [r['forced_mean'] - r['free'] for r in lines]):.3f}")
    print(f"{len(lines)} regions, {int(labels.sum())} true; cells: ATWV@0.5 / MTWV / MAP / detections >= 0.5 on absent terms")
    report("shipped columns", rows, regions, cross_validated(rows, regions, base))
    report("+ forced decoding", rows, regions, cross_validated(rows, regions, forced))


def heard(rows: list) -> None:
    def around(transcripts, region) -> float:
        f = transcripts._by_file.get(region.file)
        if f is None:
            return 0.0
        words = transcripts.files[f]
        middle = (words.starts + words.ends) / 2
        near = (middle >= region.start - HEARD_CONTEXT_S) & (middle <= region.end + HEARD_CONTEXT_S)
        return float(words.probabilities[near].mean()) if near.any() else 0.0

    text = [q for q, row in enumerate(rows) if row.query.kind == "text"]
    regions = {q: np.arange(len(rows[q].evidence.regions)) for q in text}
    heard_column = {q: np.array([around(rows[q].evidence.transcripts, r) for r in rows[q].evidence.regions]).reshape(-1, 1) for q in text}
    print("cells: ATWV@0.5 / MTWV / MAP / detections >= 0.5 on absent terms")
    report("every column", rows, regions, cross_validated(rows, regions, lambda q: rows[q].evidence.features()))
    report("+ heard", rows, regions, cross_validated(rows, regions, lambda q: np.hstack([rows[q].evidence.features(), heard_column[q]])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=("forced-decode", "forced-ablation", "heard"))
    parser.add_argument("regions", type=Path, help="regions.pickle of an `archive-eval fusion` run")
    parser.add_argument("measured", type=Path, nargs="?", help="forced-decoding JSON lines (written, then read)")
    parser.add_argument("--top", type=int, default=3, help="regions per query to force-decode")
    args = parser.parse_args()
    rows = pickle.loads(args.regions.read_bytes())  # every query; the probes use the text ones
    if args.probe == "forced-decode":
        forced_decode(rows, args.measured, args.top)
    elif args.probe == "forced-ablation":
        forced_ablation(rows, args.measured)
    else:
        heard(rows)


if __name__ == "__main__":
    main()
