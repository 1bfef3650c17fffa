"""Latency of the phonetic transcript channel as the archive grows: the transcript words of an
index copied `--copies` times in memory (10 copies of a 10-hour index: 100 hours).

    .venv/bin/python benchmarks/bench_phonetic_channel.py --index work/serve-load/index --copies 1 10

Times one-word queries drawn from the index's own words (seed 0) through
`TranscriptIndex.phonetic`, after one untimed query that builds the span tables, and prints one
JSON line per size. Any index built with transcripts will do (bench_fused_queries.py and
bench_serve_load.py --keep build a 10-hour one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import time
from pathlib import Path

from archive_search.embedders.g2p import word_phonemes
from archive_search.search.transcripts import TranscriptIndex
from archive_search.storage.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    store = Store.open(args.index)
    files = store.transcript_words()
    hours = sum(f.duration for f in store.stored_files().values()) / 3600
    store.close()
    vocabulary = sorted({t for f in files for t in f.tokens if len(t) >= 4})
    queries = random.Random(args.seed).sample(vocabulary, min(args.queries, len(vocabulary)))
    for copies in args.copies:
        index = TranscriptIndex([dataclasses.replace(f, file=f"{f.file}#{c}") for c in range(copies) for f in files])
        started = time.perf_counter()
        index.phonetic(word_phonemes(queries[0]), 1)
        build_s = time.perf_counter() - started
        times = []
        for query in queries:
            phonemes = word_phonemes(query)
            started = time.perf_counter()
            index.phonetic(phonemes, 1)
            times.append(1000 * (time.perf_counter() - started))
        ordered = sorted(times)
        print(json.dumps({"hours": round(hours * copies, 1), "words": index.n_words, "first_query_s": round(build_s, 2),
                          "p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
