"""Indexing speed of the whole pipeline on a folder of real audio, for one models folder.

    .venv/bin/python benchmarks/bench_index_folder.py --models archive_search/checkpoints \
        --folder /work/shared/data/librispeech-mini/audio/4088 --threads 2
    .venv/bin/python benchmarks/bench_index_folder.py \
        --folder /work/shared/data/librispeech-mini/audio --concatenate-hours 3   # one 3-hour file

Indexes the folder (or, with --concatenate-hours, one FLAC file made of its FLAC files in path
order, repeated to that length) into a fresh temporary index (decode, windows, JMCL audio
encoder, SQLite, FAISS) and prints one JSON line: audio seconds, wall and CPU seconds, real-time
factor, audio seconds per CPU second (wall time on a shared machine mostly measures the
neighbours) and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

from archive_search.api import Archive
from archive_search.audio import SAMPLE_RATE, load_audio
from archive_search.embedders.registry import load_models


def concatenate(folder: Path, hours: float, out: Path) -> Path:
    """One 16 kHz FLAC file of `hours`: the folder's FLAC files in path order, repeated."""
    files = sorted(folder.rglob("*.flac"))
    if not files:
        raise SystemExit(f"{folder}: no FLAC files to concatenate")
    target, written = int(hours * 3600 * SAMPLE_RATE), 0
    with sf.SoundFile(out, "w", samplerate=SAMPLE_RATE, channels=1, format="FLAC") as sink:
        while written < target:
            for path in files:
                samples = load_audio(path)[: target - written]
                sink.write(samples)
                written += len(samples)
                if written >= target:
                    break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="checkpoint folder (default: the shipped models)")
    parser.add_argument("--folder", type=Path, required=True, help="audio to index")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concatenate-hours", type=float, default=0.0, help="index one file this long instead (0: the folder)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_models(args.models, device="cpu")
    with tempfile.TemporaryDirectory() as work:
        source = args.folder
        if args.concatenate_hours > 0:
            source = Path(work) / "long"
            source.mkdir()
            concatenate(args.folder, args.concatenate_hours, source / f"long-{args.concatenate_hours:g}h.flac")
        wall, cpu = time.perf_counter(), time.process_time()
        with Archive(Path(work) / "index", models=bundle) as archive:
            report = archive.add(source)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"model": bundle.name, "threads": args.threads, "audio_s": round(report.audio_s, 1),
                      "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "x_real_time": round(report.audio_s / wall, 1),
                      "audio_s_per_cpu_s": round(report.audio_s / cpu, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))  # fmt: skip


if __name__ == "__main__":
    main()
