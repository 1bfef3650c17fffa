"""What the catalogue costs, SQLite in the folder against PostgreSQL, at a given archive size.

    .venv/bin/python benchmarks/bench_catalogue.py --hours 10                       # index.sqlite
    .venv/bin/python benchmarks/bench_catalogue.py --hours 10 --db postgresql://postgres@127.0.0.1:5433/bench

Fills a fresh index with synthetic one-hour files (the shipped windowing's 39,150 windows and
9,000 transcript words per hour; random 64-dimension vectors, since FAISS costs the same with
either catalogue) through `Store.put_file`, one transaction per file, then times what search and
indexing ask of the catalogue: the join of 100 FAISS hits with their window rows (every query),
loading every transcript word (once per searcher, and after each indexing run), the file list
(change detection) and `check`. Prints one JSON line. The --db database must be empty.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from archive_search.indexer.core import index_settings
from archive_search.storage.store import Store, StoredWord, Transcript
from archive_search.storage.vectors import windows_per_hour

WORDS_PER_HOUR = 9_000
"""150 words a minute."""
DIM = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=int, default=10)
    parser.add_argument("--db", default=None, help="SQLAlchemy URL of an empty database (default: index.sqlite)")
    parser.add_argument("--queries", type=int, default=50)
    args = parser.parse_args()
    settings = index_settings("bench", DIM)
    per_hour = int(windows_per_hour(settings.window_scales_s, settings.window_hop_fraction))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bench-catalogue-") as folder:
        store = Store.open_for_writing(folder, settings, db=args.db)
        starts = np.sort(rng.uniform(0, 3600, per_hour))
        windows = np.stack([starts, starts + 1.0, rng.integers(0, 3, per_hour)], axis=1)
        vectors = rng.standard_normal((per_hour, DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        words = [StoredWord(f"word{k % 5000}", k * 0.4, k * 0.4 + 0.3, 0.9, "W ER D") for k in range(WORDS_PER_HOUR)]
        put_s = []
        for hour in range(args.hours):
            started = time.perf_counter()
            store.put_file(f"/archive/episode{hour}.flac", "h", 1, 1.0, 3600.0, 16000, windows, vectors,
                           transcript=Transcript("bench-asr", words))  # fmt: skip
            put_s.append(time.perf_counter() - started)
        store.save_vectors()
        store.close()

        reader = Store.open(folder, db=args.db)
        ids = reader.vectors.ids()
        joins = []
        for _ in range(args.queries):
            chosen = rng.choice(ids, 100, replace=False)
            started = time.perf_counter()
            found = reader.windows(chosen.tolist())
            joins.append(time.perf_counter() - started)
            assert len(found) == 100
        started = time.perf_counter()
        file_words = reader.transcript_words()
        words_s = time.perf_counter() - started
        started = time.perf_counter()
        reader.stored_files()
        files_s = time.perf_counter() - started
        started = time.perf_counter()
        report = reader.check()
        check_s = time.perf_counter() - started
        assert report.ok and sum(len(f.tokens) for f in file_words) == WORDS_PER_HOUR * args.hours
        print(json.dumps({
            "catalogue": "postgresql" if reader.postgres else "sqlite",
            "hours": args.hours,
            "windows": int(len(ids)),
            "words": WORDS_PER_HOUR * args.hours,
            "put_file_s_per_hour_median": round(float(np.median(put_s)), 3),
            "join_100_hits_ms_p50": round(1000 * float(np.median(joins)), 2),
            "join_100_hits_ms_p95": round(1000 * float(np.percentile(joins, 95)), 2),
            "load_all_words_s": round(words_s, 3),
            "stored_files_ms": round(1000 * files_s, 2),
            "check_s": round(check_s, 3),
            "catalogue_bytes_per_hour": int((reader.size_bytes() - reader.vectors_path.stat().st_size) / args.hours),
        }))  # fmt: skip
        reader.close()


if __name__ == "__main__":
    main()
