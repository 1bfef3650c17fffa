"""Does score normalisation help JMCL's cross view? Development sets only (docs/experiments.md,
"Score normalisation for the cross view, no gain").

The word-discrimination cross view (`archive-train jmcl-eval`) pools every (segment, word) pair,
so a word whose similarities all run high or low costs pooled AP. This probe rescores the same
pairs with normalisations a search engine could use, with statistics from fixed cohorts that
never see the evaluated set:

- `raw`: the cosine (the protocol's score);
- `audio-norm`: each segment's score minus its mean over a cohort of text embeddings (words of
  the training vocabulary), over their standard deviation; linear in the embeddings, so an index
  could store it;
- `text-norm`: each word's score standardised over a cohort of training word segments;
- `both`: the sum of the two (symmetric s-norm);
- `adaptive-*`: the same with the evaluated set's own segments or words as the cohort, an upper
  bound that an engine cannot have for the audio side (it does not know the coming queries).

Prints one JSON line per evaluated manifest: pooled AP (the protocol) and mean per-word AP.

    python scripts/evaluation/score_norm_probe.py --checkpoint archive_search/checkpoints/jmcl.pt \
        --data work/s9/dev-real-other.jsonl --data work/calib/dev.jsonl:train,test \
        --cohort-vocab work/data/w025-train-vocab.txt \
        --cohort-audio work/data/libri-5652.jsonl --cohort-audio work/data-helper/pseudo-train-clean-100.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from archive_search.embedders.g2p import word_phonemes
from archive_search.embedders.jmcl import load_jmcl
from archive_search.embedders.rerank import unit_rows
from archive_search.evaluation.metrics import average_precision
from archive_search.evaluation.word_discrimination import word_segments
from archive_search.training.jmcl import load_manifests


def segments_of(spec: str, max_segments: int, seed: int):
    path, _, splits = spec.partition(":")
    pairs = load_manifests([path], splits.split(",") if splits else None)
    return word_segments((u for u, _ in pairs), root=Path(path).parent, max_per_word=20,
                         max_segments=max_segments, seed=seed)  # fmt: skip


def standardise(scores: np.ndarray, cohort_scores: np.ndarray, axis: int) -> np.ndarray:
    """Scores minus the cohort's mean over `axis`, over its standard deviation."""
    mean = cohort_scores.mean(axis=axis, keepdims=True)
    std = np.maximum(cohort_scores.std(axis=axis, keepdims=True), 1e-6)
    return (scores - mean) / std


def mean_word_ap(scores: np.ndarray, same: np.ndarray) -> float:
    return float(np.mean([average_precision(same[:, j], scores[:, j]) for j in range(scores.shape[1]) if same[:, j].any()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="archive_search/checkpoints/jmcl.pt")
    parser.add_argument("--data", action="append", required=True, help="MANIFEST[:split,split]; repeat")
    parser.add_argument("--cohort-vocab", required=True, help="Training vocabulary, one word per line")
    parser.add_argument("--cohort-audio", action="append", required=True, help="Training manifest; repeat")
    parser.add_argument("--cohort-words", type=int, default=2000)
    parser.add_argument("--cohort-segments", type=int, default=600, help="Per cohort manifest")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    audio, text = load_jmcl(args.checkpoint)
    rng = np.random.default_rng(0)
    vocabulary = [w.strip() for w in Path(args.cohort_vocab).read_text().splitlines() if w.strip()]
    cohort_words = [vocabulary[i] for i in rng.choice(len(vocabulary), min(args.cohort_words, len(vocabulary)), replace=False)]
    text_cohort = unit_rows(text.embed_phonemes([list(word_phonemes(w)) for w in cohort_words]))
    audio_cohort = unit_rows(audio.embed_clips(
        [s.audio for spec in args.cohort_audio for s in segments_of(spec, args.cohort_segments, seed=1)]))

    for spec in args.data:
        segments = segments_of(spec, 3000, seed=0)
        words = sorted({s.word for s in segments})
        phonemes = {s.word: s.phonemes or tuple(word_phonemes(s.word)) for s in segments}
        audio_vectors = unit_rows(audio.embed_clips([s.audio for s in segments]))
        text_vectors = unit_rows(text.embed_phonemes([list(phonemes[w]) for w in words]))
        column = {w: i for i, w in enumerate(words)}
        same = np.array([column[s.word] for s in segments])[:, None] == np.arange(len(words))[None]
        raw = audio_vectors @ text_vectors.T  # (segments, words)
        audio_norm = standardise(raw, audio_vectors @ text_cohort.T, axis=1)
        text_norm = standardise(raw, audio_cohort @ text_vectors.T, axis=0)
        scorings = {
            "raw": raw,
            "audio-norm": audio_norm,
            "text-norm": text_norm,
            "both": audio_norm + text_norm,
            "adaptive-audio-norm": standardise(raw, raw, axis=1),
            "adaptive-text-norm": standardise(raw, raw, axis=0),
            "adaptive-both": standardise(raw, raw, axis=1) + standardise(raw, raw, axis=0),
        }
        report = {"data": spec, "segments": len(segments), "words": len(words)}
        for name, scores in scorings.items():
            report[name] = {"pooled_ap": round(average_precision(same.ravel(), scores.ravel()), 4),
                            "mean_word_ap": round(mean_word_ap(scores, same), 4)}  # fmt: skip
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
