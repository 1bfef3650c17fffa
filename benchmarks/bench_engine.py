"""Engine benchmark (not a test): indexing speed, peak memory, index size, query latency.

    .venv/bin/python benchmarks/bench_engine.py                    # the shipped models (load_models())
    .venv/bin/python benchmarks/bench_engine.py --models fast      # untrained models of the default shapes
    .venv/bin/python benchmarks/bench_engine.py --models tiny --hours 1

Synthetic episodes are made cheaply: a pool of espeak-ng sentences (several voices) is
concatenated at random with gain, speed and noise variation, written as FLAC, then indexed
through the whole pipeline (decode, resample, window, embed, store). The archive is built
at the first size and grown to the next, so the second figure is an incremental run.
Results go to stdout and, with --json, to a file. Figures are wall-clock on this machine;
torch uses every core unless --threads says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archive_search.audio import SAMPLE_RATE, resample  # noqa: E402

SENTENCES = [
    "the committee will meet again on thursday to discuss the budget",
    "scientists found a new species of frog in the rainforest",
    "our guest today is a marine biologist who studies whales",
    "the recipe calls for two cups of flour and a pinch of salt",
    "traffic on the bridge was slow because of the storm",
    "the museum opened a new exhibition about ancient egypt",
    "she trained for months before running the marathon",
    "the orchestra performed a symphony by a young composer",
    "farmers are worried about the lack of rain this summer",
    "the company announced a partnership with a local university",
    "he repaired the old bicycle in his garage over the weekend",
    "the library will extend its opening hours in december",
    "astronomers observed a comet passing close to jupiter",
    "the volcano erupted twice during the night",
    "a lighthouse keeper told us stories about shipwrecks",
    "the festival brings together musicians from many countries",
    "prices at the market went up again this month",
    "the children planted tomatoes and sunflowers in the garden",
    "the detective found a clue hidden behind the painting",
    "engineers tested the new engine in the desert",
]
VOICES = [("en-us", 160), ("en-gb", 150), ("en-us+f3", 175), ("en-gb-scotland", 155), ("en-us+m3", 145), ("en-029", 165)]


def sentence_pool(cache: Path) -> tuple[list[np.ndarray], list[str]]:
    """Every sentence in every voice (cached as one npz) and the query vocabulary."""
    from archive_search.demo import speak

    path = cache / "pool.npz"
    if path.exists():
        data = np.load(path, allow_pickle=False)
        clips = [data[f"c{i}"] for i in range(len(data.files))]
    else:
        clips = [speak(s, v, r) for v, r in VOICES for s in SENTENCES]
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **{f"c{i}": c for i, c in enumerate(clips)})
    words = sorted({w for s in SENTENCES for w in s.split() if len(w) >= 5})
    phrases = [" ".join(s.split()[i : i + 2]) for s in SENTENCES for i in (1, 4)]
    return clips, words + phrases


def make_episode(path: Path, seconds: float, clips: list[np.ndarray], rng: np.random.Generator) -> float:
    """Write one FLAC episode of about `seconds` by concatenating varied sentences, in blocks."""
    total = 0
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as out:
        while total < seconds * SAMPLE_RATE:
            block = []
            for _ in range(50):
                clip = clips[rng.integers(len(clips))]
                speed = rng.uniform(0.9, 1.1)
                if abs(speed - 1) > 0.02:
                    clip = resample(clip, int(SAMPLE_RATE * speed), SAMPLE_RATE)
                block.append(clip * rng.uniform(0.3, 0.9))
                block.append(np.zeros(int(rng.uniform(0.2, 0.8) * SAMPLE_RATE), np.float32))
            audio = np.concatenate(block)
            audio += rng.normal(0, 0.002, len(audio)).astype(np.float32)
            out.write(np.clip(audio, -1, 1))
            total += len(audio)
    return total / SAMPLE_RATE


def build_archive(folder: Path, hours: float, clips, episode_minutes: float = 30.0) -> float:
    """Episodes of `episode_minutes` under `folder` until it holds `hours` of audio (kept across runs)."""
    folder.mkdir(parents=True, exist_ok=True)
    have = sorted(folder.glob("episode-*.flac"))
    total = sum(sf.info(str(p)).duration for p in have)
    number = len(have)
    while total < hours * 3600 - 1:
        rng = np.random.default_rng(number)
        seconds = min(episode_minutes * 60, hours * 3600 - total)
        total += make_episode(folder / f"episode-{number:04d}.flac", seconds, clips, rng)
        number += 1
    return total


def load_bundle(kind: str):
    if kind == "default":
        from archive_search.embedders.registry import load_models

        return load_models()
    import torch

    from archive_search.embedders.jmcl import JMCLAudioEmbedder, JMCLTextEmbedder, build_model, tiny_jmcl
    from archive_search.embedders.registry import ModelBundle
    from archive_search.embedders.rerank import tiny_reranker

    if kind == "tiny":
        audio, text = tiny_jmcl()
        return ModelBundle(audio.name, audio, text, tiny_reranker())
    from archive_search.embedders.ctc import CTCConformer, CTCDims
    from archive_search.embedders.parallelkws import KWSDims, ParallelKWS
    from archive_search.embedders.rerank import KWSReranker

    torch.manual_seed(0)
    model = build_model("fast")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = "jmcl-fast-untrained"
    kws = ParallelKWS(KWSDims.fast())
    return ModelBundle(name, JMCLAudioEmbedder(model, name, device), JMCLTextEmbedder(model, name, device),
                       KWSReranker(kws, name="parallelkws-fast-untrained", device=device))


class ProxyAudioEmbedder:
    """Stands in for the audio encoder when only the index's size matters (--proxy-index):
    same name and dim, vectors from a fixed random projection of each window's spectrum, so a
    10-hour index is built in minutes and query latency is measured against it."""

    def __init__(self, name: str, dim: int):
        self.name, self.dim = name, dim
        self.projection = np.random.default_rng(0).standard_normal((64, dim)).astype(np.float32)

    def embed_spans(self, samples, spans):
        out = np.zeros((len(spans), self.dim), np.float32)
        for row, (start, end) in enumerate(spans):
            segment = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
            spectrum = np.abs(np.fft.rfft(segment[:2048], n=2048))[:1024].reshape(64, 16).mean(axis=1)
            out[row] = np.log(spectrum + 1e-6) @ self.projection
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_clips(self, clips):
        return self.embed_spans(np.concatenate(clips), np.array([[0.0, len(clips[0]) / SAMPLE_RATE]]))[:1]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values, q):
    return round(float(np.percentile(np.asarray(values) * 1000.0, q)), 1)


def query_latency(archive, queries: list[str], audio_queries: list[np.ndarray]) -> dict:
    from archive_search import Archive
    from archive_search.embedders.registry import ModelBundle

    for q in queries[:2]:
        archive.search(q, top=10)  # warm up: G2P, model caches, FAISS load
    text_times, text_cpu = [], []
    for q in queries:
        started, cpu = time.perf_counter(), cpu_seconds()
        archive.search(q, top=10)
        text_times.append(time.perf_counter() - started)
        text_cpu.append(cpu_seconds() - cpu)
    models = archive.models
    plain = Archive.open(archive.path, ModelBundle(models.name, models.audio, models.text, None))
    plain.search(queries[0], top=10)
    retrieval_times, retrieval_cpu = [], []
    for q in queries:
        started, cpu = time.perf_counter(), cpu_seconds()
        plain.search(q, top=10)
        retrieval_times.append(time.perf_counter() - started)
        retrieval_cpu.append(cpu_seconds() - cpu)
    plain.close()
    audio_times, first_audio_ms = [], None
    if audio_queries:
        # The first query by example in a process compiles librosa's DTW kernel (numba): a
        # one-off cost, reported on its own so that the percentiles show steady state.
        started = time.perf_counter()
        archive.search_audio(audio_queries[0], top=10)
        first_audio_ms = round((time.perf_counter() - started) * 1000.0, 1)
    for clip in audio_queries:
        started = time.perf_counter()
        archive.search_audio(clip, top=10)
        audio_times.append(time.perf_counter() - started)
    result = {
        "text_queries": len(text_times),
        "text_p50_ms": percentile(text_times, 50),
        "text_p95_ms": percentile(text_times, 95),
        "text_cpu_p50_ms": percentile(text_cpu, 50),
        "text_no_rerank_p50_ms": percentile(retrieval_times, 50),
        "text_no_rerank_p95_ms": percentile(retrieval_times, 95),
        "text_no_rerank_cpu_p50_ms": percentile(retrieval_cpu, 50),
        "text_no_rerank_cpu_p95_ms": percentile(retrieval_cpu, 95),
    }
    if audio_times:
        result.update(
            audio_queries=len(audio_times),
            audio_p50_ms=percentile(audio_times, 50),
            audio_p95_ms=percentile(audio_times, 95),
            audio_first_query_ms=first_audio_ms,
        )
    return result


def peak_memory_child(args) -> None:
    """Runs in a subprocess: index one file, print peak RSS (MB) as JSON."""
    from archive_search import Archive

    bundle = load_bundle(args.models)
    if args.proxy_index:
        from archive_search.embedders.registry import ModelBundle

        bundle = ModelBundle(bundle.name, ProxyAudioEmbedder(bundle.name, bundle.audio.dim), bundle.text, bundle.reranker)
    started, cpu = time.monotonic(), cpu_seconds()
    report = Archive.open(args.peak_index, bundle).add([args.peak_file])
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "audio_s": report.audio_s, "elapsed_s": time.monotonic() - started,
                      "cpu_s": cpu_seconds() - cpu, "ok": report.ok}))


def main() -> None:
    parser = argparse.ArgumentParser(description="archive-search engine benchmark")
    parser.add_argument("--models", choices=["default", "fast", "tiny"], default="default")
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 10.0], help="archive sizes, built up in order")
    parser.add_argument("--long-file-hours", type=float, default=3.0, help="file for the peak-memory run (0 skips)")
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--keep-index", action="store_true", help="reuse the index from a previous run (query latency only)")
    parser.add_argument("--proxy-index", action="store_true",
                        help="build the index with a cheap stand-in audio encoder (same name and dim): for query latency on large archives; indexing speed is then not the model's")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "bench")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--peak-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--peak-index", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.peak_file:
        peak_memory_child(args)
        return

    from archive_search import Archive

    results: dict = {
        "models": args.models,
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}",
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg(),
        "proxy_index": args.proxy_index,
        "sizes": [],
    }
    started = time.monotonic()
    clips, vocabulary = sentence_pool(args.work / "pool")
    bundle = load_bundle(args.models)
    results["model_name"] = bundle.name
    print(f"bench: {len(clips)} pool sentences ready in {time.monotonic() - started:.0f} s; models {bundle.name}", flush=True)
    rng = np.random.default_rng(1)
    queries = [vocabulary[i] for i in rng.integers(len(vocabulary), size=args.queries)]
    audio_queries = [clips[i][: int(1.5 * SAMPLE_RATE)] for i in rng.integers(len(clips), size=10)]

    index_dir = args.work / f"index-{args.models}"
    audio_dir = args.work / "audio"
    import shutil

    if args.proxy_index:
        from archive_search.embedders.registry import ModelBundle

        index_dir = args.work / f"index-{args.models}-proxy"
        bundle = ModelBundle(bundle.name, ProxyAudioEmbedder(bundle.name, bundle.audio.dim), bundle.text, bundle.reranker)
    if not args.keep_index:
        shutil.rmtree(index_dir, ignore_errors=True)
    archive = Archive.open(index_dir, bundle)
    for hours in args.hours:
        t0 = time.monotonic()
        total_s = build_archive(audio_dir, hours, clips)
        print(f"bench: {total_s / 3600:.2f} h of episodes ready ({time.monotonic() - t0:.0f} s)", flush=True)
        t0, cpu0 = time.monotonic(), cpu_seconds()
        report = archive.add([audio_dir])
        elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
        stats = archive.stats()
        entry = {
            "archive_hours": round(total_s / 3600, 3),
            "indexed_audio_hours": round(report.audio_s / 3600, 3),
            "index_wall_s": round(elapsed, 1),
            "index_speed_x_realtime": round(report.audio_s / elapsed, 1),
            "index_audio_s_per_cpu_s": round(report.audio_s / cpu, 1),
            "load_average": round(os.getloadavg()[0], 1),
            "index_bytes": stats["bytes"],
            "index_mb_per_audio_hour": round(stats["bytes"] / 1e6 / (total_s / 3600), 2),
            "index_kind": stats["index_kind"],
            "windows": stats["windows"],
            "errors": len(report.errors),
        }
        entry.update(query_latency(archive, queries, audio_queries))
        results["sizes"].append(entry)
        print("bench: " + json.dumps(entry), flush=True)

    if args.long_file_hours > 0:
        long_dir = args.work / "long"
        long_file = long_dir / f"long-{args.long_file_hours:g}h.flac"
        if not long_file.exists():
            long_dir.mkdir(parents=True, exist_ok=True)
            make_episode(long_file, args.long_file_hours * 3600, clips, np.random.default_rng(99))
        peak_index = args.work / f"peak-index-{args.models}"
        shutil.rmtree(peak_index, ignore_errors=True)
        command = [sys.executable, __file__, "--models", args.models, "--peak-file", str(long_file), "--peak-index", str(peak_index)]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.proxy_index:
            command.append("--proxy-index")
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        peak = json.loads(output)
        results["long_file"] = {
            "hours": args.long_file_hours,
            "peak_rss_mb": round(peak["peak_rss_mb"], 1),
            "index_speed_x_realtime": round(peak["audio_s"] / peak["elapsed_s"], 1),
            "index_audio_s_per_cpu_s": round(peak["audio_s"] / peak["cpu_s"], 1),
        }
        print("bench: " + json.dumps(results["long_file"]), flush=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
