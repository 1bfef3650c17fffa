"""Rerank cost: KWSReranker.score_text and score_audio on N regions cut from aligned speech, CPU time.

    .venv/bin/python benchmarks/bench_rerank.py --kws archive_search/checkpoints/kws.pt \
        --data work/kws/gse/pseudo-dev.jsonl --regions 30 --threads 1

Regions are drawn as ParallelKWS training draws them (1-3 s around a keyword, seeded). Prints the
minimum CPU and wall time of three `score_text` calls and how much of it the frozen front-end
takes (with `--text-scoring tts`, also the CPU time of the TTS programs, which run as child
processes), and the same for `score_audio` with a 0.6 s query clip (query by example: the reranker's
default frames, whisper for the shipped model).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from archive_search.embedders.rerank import load_reranker
from archive_search.training.ctc import load_aligned, load_manifests
from archive_search.training.kws import RegionSampler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kws", required=True, help="ParallelKWS checkpoint (a gse model needs no --ctc)")
    parser.add_argument("--ctc", default=None, help="conformer checkpoint, for a conformer-path model")
    parser.add_argument("--data", required=True, action="append", help="aligned manifest(s) to cut regions from")
    parser.add_argument("--regions", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-scoring", choices=["parallelkws", "tts"], default="parallelkws")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    items = load_aligned(load_manifests(args.data, None))
    rng = np.random.default_rng(args.seed)
    sampler = RegionSampler(items)
    regions = [sampler.draw(rng)[0].samples for _ in range(args.regions)]
    reranker = load_reranker(args.ctc, args.kws, text_scoring=args.text_scoring)
    query = sampler.draw(rng)[0].samples
    query = query[len(query) // 2 - 4800 : len(query) // 2 + 4800]
    result = {"reranker": reranker.name, "regions": len(regions), "audio_s": round(sum(map(len, regions)) / 16000, 1),
              "threads": args.threads}  # fmt: skip
    for name, score in (("score_text", lambda: reranker.score_text(regions, [], "spoken archive")),
                        ("score_audio", lambda: reranker.score_audio(regions, query))):  # fmt: skip
        score()  # warm up: model loading, numba's first compile
        cpu, child_cpu, wall = [], [], []
        for _ in range(3):
            started, started_children, started_wall = time.process_time(), _children_cpu(), time.perf_counter()
            score()
            cpu.append(time.process_time() - started)
            child_cpu.append(_children_cpu() - started_children)
            wall.append(time.perf_counter() - started_wall)
        result[f"{name}_cpu_ms"] = round(1000 * min(cpu), 1)
        result[f"{name}_tts_cpu_ms"] = round(1000 * min(child_cpu), 1)  # the TTS programs' processes
        result[f"{name}_wall_ms"] = round(1000 * min(wall), 1)
    frontend = getattr(reranker, "frontend", None)
    if frontend is not None:
        started = time.process_time()
        frontend(regions)
        result["frontend_cpu_ms"] = round(1000 * (time.process_time() - started), 1)
    print(json.dumps(result))


def _children_cpu() -> float:
    """CPU seconds of finished child processes (espeak-ng, flite with --text-scoring tts)."""
    times = os.times()
    return times.children_user + times.children_system


if __name__ == "__main__":
    main()
