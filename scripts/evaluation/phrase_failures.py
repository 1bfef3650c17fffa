"""Where a ParallelKWS fails the LibriPhrase-style trials of `archive-train kws-eval`:
the positives it scores lowest, the negatives it scores highest (with the phrase really spoken),
and the mean positive score by phrase length. The trials are kws-eval's (same seed, tight crops).

    python scripts/evaluation/phrase_failures.py --kws archive_search/checkpoints/kws-whisper.pt \
        --data work/kws/gse/pseudo-dev.jsonl [--unpacked]

--unpacked encodes each region alone and unpadded, as the whisper training cache encodes whole
utterances, instead of packing the regions into padded 30 s inputs as the engine does; with it
the script prints kws-eval's EER JSON instead of the failure lists.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from archive_search.audio import SAMPLE_RATE
from archive_search.embedders.rerank import load_reranker
from archive_search.embedders.whisper_encoder import WhisperKWSFrontend
from archive_search.evaluation.kws import RerankerScorer, score_trials
from archive_search.training.kws import evaluate_suite, load_aligned, load_manifests, phrase_trials


def failures(reranker, manifest: str, n_trials: int, seed: int, shown: int) -> dict:
    trials = phrase_trials(load_aligned(load_manifests([manifest], None)), n_trials, seed, tight=True)
    scores = score_trials(trials, RerankerScorer(reranker))
    positives, negatives, spoken = [], [], None
    for score, trial in zip(scores, trials):
        if trial.label:  # phrase_trials lists each anchor's positive before its negatives
            spoken = trial.text
            positives.append((float(score), trial.text, round(len(trial.audio) / SAMPLE_RATE, 2)))
        else:
            negatives.append((float(score), trial.subset, trial.text, spoken))
    by_words: dict[int, list[float]] = {}
    for score, text, _ in positives:
        by_words.setdefault(len(text.split()), []).append(score)
    return {
        "positives_below_0.1": sum(score < 0.1 for score, _, _ in positives),
        "positives": len(positives),
        "lowest_positives": sorted(positives)[:shown],
        "highest_negatives": sorted(negatives, reverse=True)[:shown],
        "mean_positive_by_words": {n: [round(float(np.mean(v)), 3), len(v)] for n, v in sorted(by_words.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kws", required=True, help="A gse- or whisper-front-end KWS checkpoint.")
    parser.add_argument("--data", action="append", required=True, help="Manifest with word times; repeat.")
    parser.add_argument("--trials", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shown", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--unpacked", action="store_true", help="Encode each region alone, unpadded (whisper models).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frontend = WhisperKWSFrontend(threads=args.threads, packed=False) if args.unpacked else None
    reranker = load_reranker(None, args.kws, frontend=frontend)
    if args.unpacked:
        result = evaluate_suite(reranker, args.data, None, args.trials, args.seed)
    else:
        result = {manifest: failures(reranker, manifest, args.trials, args.seed, args.shown) for manifest in args.data}
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
