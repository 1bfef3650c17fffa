"""Throughput of the bundled whisper tiny.en encoder over long audio, padded 30 s chunks as the
query-by-example rerank runs it: what indexing on whisper frames would cost (docs/performance.md).

    .venv/bin/python benchmarks/bench_whisper_encoder.py --data work/data/libri-4088.jsonl --utterances 25
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from archive_search.audio import load_audio
from archive_search.data.manifest import iter_manifest
from archive_search.embedders.whisper_encoder import CHUNK_S, WhisperEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="manifest whose first utterances are encoded back to back")
    parser.add_argument("--utterances", type=int, default=25)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    root = Path(args.data).parent
    utterances = list(iter_manifest(args.data))[: args.utterances]
    audio = np.concatenate([load_audio(u.audio_path(root)) for u in utterances])
    seconds = len(audio) / 16000
    result = {"audio_s": round(seconds, 1)}
    for threads in args.threads:
        encoder = WhisperEncoder(threads=threads, pad=True)
        encoder.frames(audio[: int(CHUNK_S * 16000)])  # warm up
        started_wall, started_cpu = time.perf_counter(), time.process_time()
        encoder.frames(audio)
        wall, cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
        result[f"threads_{threads}"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "real_time_factor": round(seconds / wall, 1)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
