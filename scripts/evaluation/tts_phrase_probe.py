"""LibriPhrase-style trials scored by the `--tts` DTW and by ParallelKWS, and ways to combine them
(docs/experiments.md, "Three voices for --tts and LibriPhrase-style trials"): per trial, the
cosine similarities along each TTS voice's best DTW path and the ParallelKWS probability; then
EER all / easy / hard % for the path mean (the engine's score), local minima and percentiles of
the path, and mixes with the probability.

    .venv/bin/python scripts/evaluation/tts_phrase_probe.py work/calib/dev-real.jsonl --anchors 150
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from archive_search.embedders.registry import CHECKPOINT_DIR, KWS_FILE
from archive_search.embedders.rerank import TTS_VOICES, load_reranker, subsequence_dtw_path
from archive_search.embedders.speech_synthesis import speak_as
from archive_search.evaluation.kws import BinaryResult
from archive_search.training.ctc import load_aligned, load_manifests
from archive_search.training.kws import phrase_trials


def moving_minimum(values: np.ndarray, width: int) -> float:
    if len(values) <= width:
        return float(values.mean())
    return float(np.convolve(values, np.ones(width) / width, mode="valid").min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--anchors", type=int, default=150)
    parser.add_argument("--crop", choices=["region", "tight"], default="region")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(1)
    reranker = load_reranker(None, CHECKPOINT_DIR / KWS_FILE)
    trials = phrase_trials(load_aligned(load_manifests([args.manifest], None)), args.anchors, args.seed, tight=args.crop == "tight")
    by_text: dict[str, list[int]] = {}
    for index, trial in enumerate(trials):
        by_text.setdefault(trial.text, []).append(index)
    probability = np.zeros(len(trials))
    paths: list[list[np.ndarray]] = [[] for _ in trials]
    for text, indices in by_text.items():
        regions = [trials[i].audio for i in indices]
        probability[indices] = reranker.score_text(regions, [], text)
        clips = [speak_as(text, voice) for voice in TTS_VOICES]
        states = reranker.frame_states([*clips, *regions])
        for k, index in enumerate(indices):
            paths[index] = [subsequence_dtw_path(q, states[len(clips) + k]) for q in states[: len(clips)]]

    labels = np.array([t.label for t in trials])
    subsets = np.array([t.subset for t in trials])

    def report(name: str, scores: np.ndarray) -> None:
        eers = [BinaryResult.from_trials(labels, scores).eer]
        for subset in ("easy", "hard"):
            mask = (subsets == subset) | labels
            eers.append(BinaryResult.from_trials(labels[mask], scores[mask]).eer)
        print(f"{name:40s} EER all / easy / hard % {' / '.join(f'{100 * e:.1f}' for e in eers)}")

    def over_voices(pool, voices: int) -> np.ndarray:
        return np.array([np.mean([pool(p) for p in trial[:voices]]) for trial in paths])

    report("ParallelKWS probability", probability)
    for voices in range(1, len(TTS_VOICES) + 1):
        mean = over_voices(np.mean, voices)
        report(f"{voices} voice(s): path mean", mean)
        for width in (3, 5, 8, 12):
            report(f"{voices} voice(s): moving minimum {width}", over_voices(lambda p, w=width: moving_minimum(p, w), voices))
        for q in (10, 25):
            report(f"{voices} voice(s): {q}th percentile", over_voices(lambda p, q=q: np.percentile(p, q), voices))
        for weight in (0.25, 0.5):
            report(f"{voices} voice(s): mean mixed {weight} x probability", (1 - weight) * mean + weight * probability)


if __name__ == "__main__":
    main()
