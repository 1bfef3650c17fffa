"""Fused text-query latency and index size over a large archive made of repeated real audio.

    .venv/bin/python benchmarks/bench_fused_queries.py --folder /work/shared/data/librispeech-mini/audio \
        --hours 10 --threads 2

Indexes the folder once (transcripts and vectors), then copies every file's rows (windows,
vectors, transcript words) under new names until the index holds `--hours` of audio; the
copies are symlinks to the same files, so the reranker reads real audio. Repeated audio is fine
for size and speed (each copy costs what a new file would), not for quality. Then it times text
queries drawn from the transcripts (one untimed warm-up) with every channel, and with the
vectors channel alone (the acoustic engine), in the same run, and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from archive_search.api import Archive
from archive_search.embedders.registry import load_models
from archive_search.indexer.core import index_settings
from archive_search.storage.store import Store, StoredWord, Transcript


def replicate(archive: Archive, copies_dir: Path, hours: float) -> float:
    """Copy every indexed file's rows under symlinked names until `hours` of audio are indexed."""
    store = archive._get_store()
    originals = list(store.stored_files().values())
    words = {w.file: w for w in store.transcript_words()}
    with store.engine.connect() as connection:
        rows = connection.exec_driver_sql('SELECT id, file_id, start, "end", scale FROM windows ORDER BY id').all()
    by_file: dict[int, list] = {}
    for row in rows:
        by_file.setdefault(row[1], []).append(row)
    total = sum(f.duration for f in originals)
    archive.close()
    models = archive.models
    store = Store.open_for_writing(archive.path, index_settings(models.name, models.audio.dim))
    copy = 0
    try:
        while total < hours * 3600:
            copy += 1
            for original in originals:
                if total >= hours * 3600:
                    break
                link = copies_dir / f"copy{copy:03d}-{Path(original.path).name}"
                os.symlink(original.path, link)
                windows = by_file.get(original.id, [])
                ids = np.array([w[0] for w in windows], dtype=np.int64)
                spans = np.array([(w[2], w[3], w[4]) for w in windows], dtype=np.float64).reshape(-1, 3)
                vectors = store.vectors.vectors(ids) if len(ids) else np.zeros((0, models.audio.dim), np.float32)
                found = words.get(original.path)
                stored = [] if found is None else [
                    StoredWord(t, float(s), float(e), float(p), ph)
                    for t, s, e, p, ph in zip(found.tokens, found.starts, found.ends, found.probabilities, found.phonemes)
                ]  # fmt: skip
                store.put_file(str(link), original.content_hash, original.size, original.mtime, original.duration, 16000, spans,
                               vectors, None, Transcript("copy", stored))  # fmt: skip
                total += original.duration
        store.save_vectors()
    finally:
        store.close()
    return total


def time_queries(archive: Archive, queries: list[str], channels) -> list[float]:
    searcher = archive.searcher(channels=channels)
    searcher.search(queries[0], top=10)  # warm-up: models, index, transcript cache
    times = []
    for query in queries:
        started = time.perf_counter()
        searcher.search(query, top=10)
        times.append(1000 * (time.perf_counter() - started))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--hours", type=float, default=10.0)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = load_models(device="cpu")
    with tempfile.TemporaryDirectory() as work:
        archive = Archive.open(Path(work) / "index", models)
        archive.add(args.folder)
        vocabulary = sorted({t for w in archive._get_store().transcript_words() for t in w.tokens if len(t) >= 4})
        copies = Path(work) / "copies"
        copies.mkdir()
        hours = replicate(archive, copies, args.hours) / 3600
        archive = Archive.open(Path(work) / "index", models)
        rng = random.Random(args.seed)
        queries = rng.sample(vocabulary, min(args.queries, len(vocabulary)))
        fused = time_queries(archive, queries, ("vectors", "exact", "phonetic"))
        acoustic = time_queries(archive, queries, ("vectors",))
        stats = archive.stats()

    def summary(times):
        ordered = sorted(times)
        return {"p50_ms": round(statistics.median(ordered), 1), "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1)}

    print(json.dumps({"hours": round(hours, 2), "files": stats["files"], "words": stats["words"], "vectors": stats["vectors"],
                      "bytes": stats["bytes"], "mb_per_hour": round(stats["bytes"] / 1e6 / hours, 2),
                      "fused": summary(fused), "acoustic": summary(acoustic),
                      "fused_over_acoustic_p50": round(statistics.median(fused) / statistics.median(acoustic), 2)}))  # fmt: skip


if __name__ == "__main__":
    main()
