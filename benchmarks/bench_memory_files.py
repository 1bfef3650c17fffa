"""Peak memory while indexing an archive of many short files (issue 6: "memory stays bounded on
a 10,000-file archive"). A benchmark, not a test.

    .venv/bin/python benchmarks/bench_memory_files.py --files 10000 --json work/bench-memory/result.json

Makes `--files` WAVs of 1-3 s (tone bursts in noise, 16 kHz, 100 per folder) under `--work`
once, then indexes them in a fresh child process with a stand-in audio encoder of the shipped
model's width (256; vectors from a random projection of each window's spectrum, as the 3-hour
file figure in docs/performance.md used), so the figure is the engine's own memory: walking,
decoding, windowing, SQLite, FAISS. The child samples its resident memory (VmRSS) every
`--sample-every` files, so growth with the file count shows, and reports peak RSS
(ru_maxrss) beside the FAISS index's own bytes (the one part that must grow with the archive);
then a second child re-runs over the finished index (all files unchanged) for the peak of an
incremental run, whose open-time consistency check reads every window row.
With `--threads 1` it stays on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from archive_search.audio import SAMPLE_RATE  # noqa: E402

DIM = 256
"""Width of the shipped JMCL fast embeddings."""


class StandInEncoder:
    """Cheap audio encoder of the shipped width: log band energies of each window through a
    fixed random projection, unit length. Memory-wise it holds nothing between calls."""

    name = "memory-bench-stand-in"
    dim = DIM

    def __init__(self):
        self.projection = np.random.default_rng(0).standard_normal((32, DIM)).astype(np.float32)

    def embed_spans(self, samples: np.ndarray, spans: np.ndarray) -> np.ndarray:
        out = np.zeros((len(spans), DIM), np.float32)
        for row, (start, end) in enumerate(spans):
            segment = samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)][:1024]
            spectrum = np.abs(np.fft.rfft(segment, n=1024))[:512].reshape(32, 16).mean(axis=1)
            out[row] = np.log(spectrum + 1e-6) @ self.projection
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_clips(self, clips):
        return np.stack([self.embed_spans(c, np.array([[0.0, len(c) / SAMPLE_RATE]]))[0] for c in clips])


def make_files(folder: Path, count: int, seed: int = 0) -> float:
    """`count` WAVs of 1-3 s under `folder` (100 per subfolder); returns seconds of audio. Kept between runs."""
    marker = folder / f".complete-{count}-{seed}"
    if marker.exists():
        return float(marker.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    total = 0.0
    for number in range(count):
        duration = float(rng.uniform(1.0, 3.0))
        n = int(duration * SAMPLE_RATE)
        t = np.arange(n) / SAMPLE_RATE
        samples = 0.01 * rng.standard_normal(n)
        for _ in range(int(rng.integers(1, 4))):  # a few "words": tone bursts with harmonics
            start, length = rng.uniform(0, duration - 0.4), rng.uniform(0.2, 0.4)
            span = (t >= start) & (t < start + length)
            f0 = rng.uniform(100, 300)
            samples[span] += sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t[span]) for k in (1, 2, 3))
        sub = folder / f"d{number // 100:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        sf.write(sub / f"f{number:05d}.wav", samples.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        total += n / SAMPLE_RATE
    marker.write_text(repr(total))
    return total


def rss_mb() -> float:
    """Current resident memory of this process (MB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(audio: Path, index: Path, sample_every: int, threads: int, fresh: bool = True) -> dict:
    """Index `audio` into `index` (a fresh one unless `fresh` is False) in this process; memory figures as a dict."""
    import torch

    from archive_search import Archive
    from archive_search.embedders.registry import ModelBundle
    from archive_search.storage.store import Store

    if threads:
        torch.set_num_threads(threads)
    if fresh:
        shutil.rmtree(index, ignore_errors=True)
    bundle = ModelBundle(StandInEncoder.name, StandInEncoder(), None, None)
    archive = Archive.open(index, bundle)
    baseline = rss_mb()
    samples: list[tuple[int, float]] = []

    def progress(p) -> None:
        if p.current is None or p.files_done % sample_every == 0 and (not samples or samples[-1][0] != p.files_done):
            samples.append((p.files_done, round(rss_mb(), 1)))

    started = time.monotonic()
    report = archive.add([audio], progress=progress)
    elapsed = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the stats below load the index again
    final = rss_mb()
    store = Store.open(index)
    vectors = store.vectors
    code_bytes = vectors.ntotal * (vectors.index.sa_code_size() + 8)  # codes + int64 ids (IDMap2)
    stats = {"files": store.counts()[0], "windows": store.counts()[1], "vectors": vectors.ntotal, "kind": vectors.kind,
             "index_bytes_on_disk": store.size_bytes()}
    store.close()
    return {
        "files_indexed": len(report.added), "unchanged": report.unchanged, "errors": len(report.errors), "skipped": len(report.skipped),
        "audio_hours": round(report.audio_s / 3600, 3), "elapsed_s": round(elapsed, 1),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(peak, 1),
        "final_rss_mb": round(final, 1),
        "faiss_in_memory_mb": round(code_bytes / 2**20, 1),
        "rss_by_files_done": samples,
        **stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="peak memory indexing many short files")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--sample-every", type=int, default=500, help="record RSS every N files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work", type=Path, default=ROOT / "work" / "bench-memory")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--again", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    audio, index = args.work / f"audio-{args.files}", args.work / f"index-{args.files}"
    if args.child:
        print(json.dumps(child(audio, index, args.sample_every, args.threads, fresh=not args.again)))
        return
    started = time.monotonic()
    seconds = make_files(audio, args.files)
    print(f"bench-memory: {args.files} files, {seconds / 3600:.2f} h ready in {time.monotonic() - started:.0f} s", flush=True)
    command = [sys.executable, __file__, "--child", "--files", str(args.files), "--work", str(args.work),
               "--sample-every", str(args.sample_every), "--threads", str(args.threads)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    result = {"command": " ".join(sys.argv), "load_average": os.getloadavg(), **json.loads(output)}
    # A second run over the same archive: nothing to embed, but the index is opened, checked
    # against its vectors (every window row is read) and every file is compared with its row.
    again = subprocess.run(command + ["--again"], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    again = json.loads(again)
    result["rerun"] = {key: again[key] for key in ("unchanged", "files_indexed", "elapsed_s", "baseline_rss_mb", "peak_rss_mb")}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
