"""CPU cost of drawing one JMCL training batch (cut, augment, featurise N x M clips) in one
process: what `archive-train --workers` spreads over loader processes (docs/performance.md).

    .venv/bin/python benchmarks/bench_jmcl_batches.py --data work/data/libri-5652.jsonl --config paper
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from archive_search.embedders.jmcl import build_model
from archive_search.training.jmcl import JMCLTrainConfig, WordBank, _augmenter, load_manifests, sample_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="training manifest (its train split)")
    parser.add_argument("--config", default="fast", help="model config whose features are computed")
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    defaults = JMCLTrainConfig()
    bank = WordBank.from_utterances(load_manifests([args.data]))
    model = build_model(args.config)
    augment, rng = _augmenter(), np.random.default_rng(0)
    sample_s, feature_s = [], []
    for _ in range(args.batches):
        started = time.process_time()
        batch = sample_batch(bank, defaults.batch_words, defaults.instances, rng, defaults.window_prob,
                             defaults.clip_prob, augment, defaults.augment_prob)  # fmt: skip
        middle = time.process_time()
        model.input_features(batch.clips)
        sample_s.append(middle - started)
        feature_s.append(time.process_time() - middle)
    total = np.add(sample_s, feature_s)
    print(json.dumps({"config": args.config, "batch": f"{defaults.batch_words} x {defaults.instances}",
                      "cut_and_augment_cpu_s": float(np.median(sample_s)), "features_cpu_s": float(np.median(feature_s)),
                      "batches_per_cpu_s": float(1.0 / np.median(total))}))  # fmt: skip


if __name__ == "__main__":
    main()
