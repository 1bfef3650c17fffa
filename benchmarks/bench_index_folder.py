"""Indexing speed of the whole pipeline on a folder of real audio, for one models folder.

    .venv/bin/python benchmarks/bench_index_folder.py --models archive_search/checkpoints \
        --folder /work/shared/data/librispeech-mini/audio/4088 --threads 2

Indexes the folder into a fresh temporary index (decode, windows, JMCL audio encoder, SQLite,
FAISS) and prints one JSON line: audio seconds, wall and CPU seconds, real-time factor and audio
seconds per CPU second (wall time on a shared machine mostly measures the neighbours).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from archive_search.api import Archive
from archive_search.embedders.registry import load_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="checkpoint folder (default: the shipped models)")
    parser.add_argument("--folder", type=Path, required=True, help="audio to index")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_models(args.models, device="cpu")
    with tempfile.TemporaryDirectory() as index:
        wall, cpu = time.perf_counter(), time.process_time()
        with Archive(index, models=bundle) as archive:
            report = archive.add(args.folder)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(json.dumps({"model": bundle.name, "threads": args.threads, "audio_s": round(report.audio_s, 1),
                      "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "x_real_time": round(report.audio_s / wall, 1),
                      "audio_s_per_cpu_s": round(report.audio_s / cpu, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
