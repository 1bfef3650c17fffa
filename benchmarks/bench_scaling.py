"""Scaling figures: indexing on 1 and 2 Ray workers, and index size, query latency and IVF recall
at 10 h and 100 h.

    .venv/bin/python benchmarks/bench_scaling.py ray --folder /work/shared/data/librispeech-mini/audio/4088
    .venv/bin/python benchmarks/bench_scaling.py hours --folder /work/shared/data/librispeech-mini/audio --hours 10 100

`ray` indexes the folder with --no-transcript (with transcripts: --transcript) into a fresh
index on a local Ray cluster of 1, then 2 CPUs (the pool is sized from the cluster, so one and
two workers), and locally without Ray, and prints the speeds (times real time) and their ratios. `pool_s` is the part spent
starting the workers and loading the models in them; `speed_after_pool` leaves it out.

`hours` indexes the folder (transcripts and vectors), copies its rows under symlinked names up
to the first figure of --hours (bench_fused_queries.replicate: repeated real audio, fine for size
and speed), then adds copies of the same windows with jittered vectors (each vector plus
Gaussian noise, renormalised: cosine `--jitter-cos` to its original on average) up to each later
figure, written through the Store like any file, so the open shard is migrated, trained and
sealed as in a real run. At each size it times text queries (fused and acoustic, as
bench_fused_queries), the FAISS search alone (k = 100), and at the largest the recall@100 of the
sharded IVF search against exact search over the same float vectors (tie-aware: a returned
window counts when its exact score reaches the exact 100th best score).
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
from archive_search.embedders.g2p import pronounce
from archive_search.embedders.registry import load_models
from archive_search.indexer import distributed
from archive_search.indexer.core import index_settings
from archive_search.storage.store import Store, StoredWord, Transcript

from bench_fused_queries import replicate, time_queries  # noqa: E402  (benchmarks/ is the script's folder)


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def ray_speeds(folder: Path, workers: list[int], threads: int, transcribe: bool) -> dict:
    import ray

    results: dict = {"folder": str(folder), "transcribe": transcribe, "load_before": load_average()}
    for count in workers:
        ray.init(num_cpus=count, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024 * 1024)
        pool_started: list[float] = []
        original = distributed.RayIndexer._start_pool

        def timed_start(self, ray_module, original=original, pool_started=pool_started):
            began = time.monotonic()
            original(self, ray_module)
            pool_started.append(time.monotonic() - began)

        distributed.RayIndexer._start_pool = timed_start
        try:
            with tempfile.TemporaryDirectory() as work:
                report = Archive.open(Path(work) / "index").add(folder, transcribe=transcribe, ray="auto")
        finally:
            distributed.RayIndexer._start_pool = original
            ray.shutdown()
        assert report.ok, report.errors
        pool_s = pool_started[0]
        results[f"workers_{count}"] = {
            "audio_h": round(report.audio_s / 3600, 3), "elapsed_s": round(report.elapsed_s, 1), "pool_s": round(pool_s, 1),
            "speed": round(report.speed, 1), "speed_after_pool": round(report.audio_s / (report.elapsed_s - pool_s), 1),
        }  # fmt: skip
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work:
        archive = Archive.open(Path(work) / "index", load_models(device="cpu"))
        report = archive.add(folder, transcribe=transcribe)
    results["local"] = {"threads": threads, "elapsed_s": round(report.elapsed_s, 1), "speed": round(report.speed, 1)}
    if len(workers) >= 2:
        a, b = (results[f"workers_{n}"] for n in workers[:2])
        results["ratio"] = round(b["speed"] / a["speed"], 2)
        results["ratio_after_pool"] = round(b["speed_after_pool"] / a["speed_after_pool"], 2)
    results["load_after"] = load_average()
    return results


def jitter(base: np.ndarray, copy: int, cos: float) -> np.ndarray:
    """Copy `copy` of (N, D) unit vectors: each plus Gaussian noise, renormalised, cosine about `cos` to its original."""
    noise = np.random.default_rng(copy).standard_normal(base.shape).astype(np.float32)
    sigma = np.sqrt(1.0 / cos**2 - 1.0) / np.sqrt(base.shape[1])  # E|noise|^2 = tan^2(angle)
    out = base + sigma * noise
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def extend(path: Path, models, base_files: list, base_rows: dict, base: np.ndarray, words: dict, copies_dir: Path,
           hours: float, total: float, cos: float, first_copy: int, timing: dict) -> tuple[float, int]:  # fmt: skip
    """Add jittered copies of the base files until `hours` are indexed; returns (audio s, next copy).
    `timing` gains the seconds spent in put_file (one writer's commits) and in save_vectors."""
    store = Store.open_for_writing(path, index_settings(models.name, models.audio.dim))
    copy = first_copy
    added, commit_s, save_s = 0.0, 0.0, 0.0
    try:
        while total < hours * 3600:
            vectors = jitter(base, copy, cos)
            for original in base_files:
                if total >= hours * 3600:
                    break
                link = copies_dir / f"jit{copy:04d}-{Path(original.path).name}"
                os.symlink(original.path, link)
                rows, spans = base_rows[original.id]
                began = time.perf_counter()
                store.put_file(str(link), original.content_hash, original.size, original.mtime, original.duration, 16000,
                               spans, vectors[rows], None, Transcript("copy", words.get(original.path, [])))  # fmt: skip
                commit_s += time.perf_counter() - began
                total += original.duration
                added += original.duration
            began = time.perf_counter()
            store.save_vectors()  # every copy, as a long run saves every 30 s: migrates, trains, seals
            save_s += time.perf_counter() - began
            copy += 1
    finally:
        store.close()
    timing.update({"added_h": round(added / 3600, 2), "put_file_s": round(commit_s, 1), "save_vectors_s": round(save_s, 1),
                   "commit_x_realtime": round(added / commit_s, 1) if commit_s else None})  # fmt: skip
    return total, copy


def vector_latency(store: Store, queries: np.ndarray, k: int = 100) -> dict:
    store.vectors.search(queries[:1], k)  # warm-up
    times = []
    for query in queries:
        began = time.perf_counter()
        store.vectors.search(query, k)
        times.append(1000 * (time.perf_counter() - began))
    return summary(times)


def recall_at(store: Store, queries: np.ndarray, base: np.ndarray, owner: tuple[np.ndarray, np.ndarray, np.ndarray],
              cos: float, k: int = 100) -> float:  # fmt: skip
    """Tie-aware recall@k of the index's search against exact search over the float vectors."""
    ids, copy_of, row_of = owner
    best = np.full((len(queries), k), -np.inf, np.float32)
    for copy in np.unique(copy_of).tolist():
        vectors = base if copy < 0 else jitter(base, copy, cos)
        scores = queries @ vectors[row_of[copy_of == copy]].T
        merged = np.concatenate([best, scores], axis=1)
        best = -np.partition(-merged, k - 1, axis=1)[:, :k]
    threshold = best.min(axis=1)
    found = store.vectors.search(queries, k)
    query_of = np.concatenate([np.full(len(r.ids), q) for q, r in enumerate(found)])
    where = np.searchsorted(ids, np.concatenate([r.ids for r in found]))
    hits = 0
    for copy in np.unique(copy_of[where]).tolist():
        vectors = base if copy < 0 else jitter(base, copy, cos)
        mine = copy_of[where] == copy
        exact = np.einsum("ij,ij->i", queries[query_of[mine]], vectors[row_of[where[mine]]])
        hits += int(np.sum(exact >= threshold[query_of[mine]] - 1e-5))
    return hits / (k * len(queries))


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2)}


def hours_figures(folder: Path, hours: list[float], queries_n: int, threads: int, cos: float, seed: int) -> list[dict]:
    torch.set_num_threads(threads)
    models = load_models(device="cpu")
    out = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as work:
        path = Path(work) / "index"
        archive = Archive.open(path, models)
        archive.add(folder)
        store = archive._get_store()
        base_files = list(store.stored_files().values())
        words = {
            w.file: [StoredWord(t, float(s), float(e), float(p), ph)
                     for t, s, e, p, ph in zip(w.tokens, w.starts, w.ends, w.probabilities, w.phonemes)]
            for w in store.transcript_words()
        }  # fmt: skip
        with store.engine.connect() as connection:
            rows = connection.exec_driver_sql('SELECT id, file_id, start, "end", scale FROM windows ORDER BY id').all()
        ids = np.array([r[0] for r in rows], np.int64)
        base = store.vectors.vectors(ids)  # the base windows' float vectors as stored
        base_rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for row, r in enumerate(rows):
            base_rows.setdefault(r[1], ([], []))
            base_rows[r[1]][0].append(row)
            base_rows[r[1]][1].append((r[2], r[3], r[4]))
        base_rows = {f: (np.array(a), np.array(b, np.float64).reshape(-1, 3)) for f, (a, b) in base_rows.items()}
        vocabulary = sorted({t for w in store.transcript_words() for t in w.tokens if len(t) >= 4})
        archive.close()
        rng = random.Random(seed)
        queries = rng.sample(vocabulary, min(queries_n, len(vocabulary)))
        query_vectors = models.text.embed_phonemes([pronounce(q).phonemes for q in queries])
        copies = Path(work) / "copies"
        copies.mkdir()
        total = replicate(archive, copies, hours[0])
        next_copy = 1
        for target in hours:
            timing: dict = {}
            if total < target * 3600:
                total, next_copy = extend(path, models, base_files, base_rows, base, words, copies, target, total, cos, next_copy,
                                          timing)  # fmt: skip
            archive = Archive.open(path, models)
            fused = time_queries(archive, queries, ("vectors", "exact", "phonetic"))
            acoustic = time_queries(archive, queries, ("vectors",))
            stats = archive.stats()
            store = archive._get_store()
            figures = {
                "hours": round(total / 3600, 2), "files": stats["files"], "vectors": stats["vectors"], "words": stats["words"],
                "shards": len(store.vectors.sealed) + 1, "open_kind": store.vectors.kind, "bytes": stats["bytes"],
                "mb_per_hour": round(stats["bytes"] / 1e6 / (total / 3600), 2),
                "fused": summary(fused), "acoustic": summary(acoustic), "faiss_k100": vector_latency(store, query_vectors),
                "load": load_average(), "build": timing,
            }  # fmt: skip
            if target == hours[-1]:
                figures["recall_at_100"] = round(recall_at(store, query_vectors, base, owners(store, ids), cos), 4)
            archive.close()
            print(json.dumps(figures), flush=True)
            out.append(figures)
    return out


def owners(store: Store, base_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(window ids sorted, copy of each, row of the base vectors of each): copy -1 for the base
    windows and their exact copies (replicate's copyNNN-), the jitter seed for jittered copies
    (jitNNNN-). A copy's windows were written in its original's order, so ids in order match rows."""
    position = {int(i): row for row, i in enumerate(base_ids.tolist())}
    with store.engine.connect() as connection:
        names = {fid: Path(os.fsdecode(p)).name for fid, p in connection.exec_driver_sql("SELECT id, path FROM files").all()}
        windows = np.array(connection.exec_driver_sql("SELECT id, file_id FROM windows ORDER BY file_id, id").all(), np.int64)
    starts = np.flatnonzero(np.r_[True, windows[1:, 1] != windows[:-1, 1]])
    ends = np.r_[starts[1:], len(windows)]
    originals = {names[int(windows[a, 1])]: np.array([position[int(w)] for w in windows[a:b, 0]])
                 for a, b in zip(starts, ends) if int(windows[a, 0]) in position}  # fmt: skip
    copy_of = np.full(len(windows), -1, np.int64)
    row_of = np.zeros(len(windows), np.int64)
    for a, b in zip(starts, ends):
        name = names[int(windows[a, 1])]
        if int(windows[a, 0]) not in position:
            if name.startswith("jit"):
                copy_of[a:b], name = int(name[3:7]), name[8:]
            else:
                name = name.split("-", 1)[1]
        row_of[a:b] = originals[name]
    order = np.argsort(windows[:, 0])
    return windows[order, 0], copy_of[order], row_of[order]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["ray", "hours"])
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hours", type=float, nargs="+", default=[10.0, 100.0])
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--transcript", action="store_true", help="ray: index with transcripts (default: --no-transcript)")
    parser.add_argument("--jitter-cos", type=float, default=0.9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.what == "ray":
        print(json.dumps(ray_speeds(args.folder, args.workers, args.threads, args.transcript)))
    else:
        hours_figures(args.folder, args.hours, args.queries, args.threads, args.jitter_cos, args.seed)


if __name__ == "__main__":
    main()
