"""Latency of the opt-in whisper verifier (`archive-search --verify N`) against the default text
query, in one run over one index.

    .venv/bin/python benchmarks/bench_verify_latency.py --index work/eval/4088-fused/index --verify 3 --queries 30

Draws one-word queries (4 letters or more) from the index's own transcripts (seed 0), runs each
through the default searcher and through one with `verify_regions`, after one untimed warm-up
query each, and prints p50 / p95 of both and their ratio as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import torch

from archive_search.api import Archive
from archive_search.embedders.registry import load_models
from archive_search.search.engine import CHANNELS
from bench_fused_queries import time_queries  # benchmarks/ is on the path when a benchmark runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--verify", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = load_models(device="cpu")
    plain = Archive.open(args.index, models)
    vocabulary = sorted({t for w in plain._get_store().transcript_words() for t in w.tokens if len(t) >= 4})
    queries = random.Random(args.seed).sample(vocabulary, min(args.queries, len(vocabulary)))
    default = sorted(time_queries(plain, queries, CHANNELS))
    verified = sorted(time_queries(Archive.open(args.index, models, verify_regions=args.verify), queries, CHANNELS))

    def summary(times):
        return {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(times[int(0.95 * (len(times) - 1))], 1)}

    print(json.dumps({"index": str(args.index), "queries": len(queries), "verify": args.verify, "default": summary(default),
                      "verified": summary(verified), "p50_ratio": round(statistics.median(verified) / statistics.median(default), 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
