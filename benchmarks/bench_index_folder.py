"""Indexing speed of the whole pipeline on a folder of real audio, for one models folder.

    .venv/bin/python benchmarks/bench_index_folder.py --models archive_search/checkpoints \
        --folder /work/shared/data/librispeech-mini/audio/4088 --threads 2
    .venv/bin/python benchmarks/bench_index_folder.py \
        --folder /work/shared/data/librispeech-mini/audio --concatenate-hours 3   # one 3-hour file
    .venv/bin/python benchmarks/bench_index_folder.py --folder /work/shared/data/librispeech-mini/audio/4088 \
        --modes default,no-transcript,whisper-peer                             # ratios in one run
    .venv/bin/python benchmarks/bench_index_folder.py --folder /work/shared/data/librispeech-mini/audio \
        --clips 2000 --modes default,whisper-peer                              # 2,000 clips of 1-3 s

Indexes the folder (or, with --concatenate-hours, one FLAC file made of its FLAC files in path
order, repeated to that length; with --clips, that many 1-3 s FLAC clips cut from them) into a
fresh temporary index (decode, windows, JMCL audio encoder, whisper transcript, SQLite, FAISS)
and prints one JSON line per mode: audio seconds, wall and CPU seconds, real-time factor, audio
seconds per CPU second (wall time on a shared machine mostly measures the neighbours), the
process's peak resident memory, and the ratio of its speed to the whisper peer's (faster-whisper
tiny.en transcribing each file, word timestamps on: transcribe-then-search's whole indexing)
when that mode ran too. Modes: default (transcript + vectors), no-transcript, whisper-peer.
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
from archive_search.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio
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


def cut_clips(folder: Path, count: int, out: Path, seed: int = 0) -> Path:
    """`count` FLAC clips of 1-3 s (uniform) cut at random from the folder's FLAC files."""
    import numpy as np

    rng = np.random.default_rng(seed)
    files = sorted(folder.rglob("*.flac"))
    for number in range(count):
        samples = load_audio(files[number % len(files)])
        length = int(rng.uniform(1.0, 3.0) * SAMPLE_RATE)
        first = int(rng.integers(0, max(1, len(samples) - length)))
        sf.write(out / f"clip{number:05d}.flac", samples[first : first + length], SAMPLE_RATE)
    return out


def run_mode(mode: str, source: Path, work: Path, bundle, threads: int) -> dict:
    """Index `source` one way; wall and CPU seconds and the audio seconds read."""
    wall, cpu = time.perf_counter(), time.process_time()
    if mode == "whisper-peer":
        from archive_search.evaluation.peers import WhisperTranscriber

        files = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        WhisperTranscriber(threads=threads).transcribe(files)
        audio_s = sum(sf.info(f).duration for f in files)
    else:
        with Archive(work / f"index-{mode}", models=bundle) as archive:
            audio_s = archive.add(source, transcribe=mode == "default").audio_s
    return {"mode": mode, "audio_s": audio_s, "wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="checkpoint folder (default: the shipped models)")
    parser.add_argument("--folder", type=Path, required=True, help="audio to index")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concatenate-hours", type=float, default=0.0, help="index one file this long instead (0: the folder)")
    parser.add_argument("--clips", type=int, default=0, help="index this many 1-3 s clips cut from the folder instead")
    parser.add_argument("--modes", default="default", help="comma-separated: default, no-transcript, whisper-peer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_models(args.models, device="cpu")
    with tempfile.TemporaryDirectory() as work:
        source = args.folder
        if args.concatenate_hours > 0:
            source = Path(work) / "long"
            source.mkdir()
            concatenate(args.folder, args.concatenate_hours, source / f"long-{args.concatenate_hours:g}h.flac")
        elif args.clips > 0:
            source = Path(work) / "clips"
            source.mkdir()
            cut_clips(args.folder, args.clips, source)
        results = [run_mode(mode, source, Path(work), bundle, args.threads) for mode in args.modes.split(",")]
    peer = next((r for r in results if r["mode"] == "whisper-peer"), None)
    for result in results:
        speed = result["audio_s"] / result["wall_s"]
        line = {"model": bundle.name, "threads": args.threads, "mode": result["mode"], "audio_s": round(result["audio_s"], 1),
                "wall_s": round(result["wall_s"], 1), "cpu_s": round(result["cpu_s"], 1), "x_real_time": round(speed, 1),
                "audio_s_per_cpu_s": round(result["audio_s"] / result["cpu_s"], 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}  # fmt: skip
        if peer is not None:
            line["speed_over_whisper_peer"] = round(speed / (peer["audio_s"] / peer["wall_s"]), 2)
        print(json.dumps(line))


if __name__ == "__main__":
    main()
