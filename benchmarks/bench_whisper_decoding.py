"""How fast whisper tiny.en can transcribe on this machine without faster-whisper's per-window
logic: the lower bound the transcript channel could reach with batched greedy decoding.

    .venv/bin/python benchmarks/bench_whisper_decoding.py --threads 2

Cuts 8 windows of 30 s from the librispeech-mini speaker 5652 files, then encodes and decodes
them greedily (no timestamp tokens, no word alignment, no VAD) with CTranslate2 directly, in
batches of 1, 4 and 8, and prints one JSON line per batch size (x real time, tokens).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ctranslate2
import numpy as np

from archive_search.audio import SAMPLE_RATE, load_audio
from archive_search.embedders.transcriber import whisper_model

WINDOW_S = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/work/shared/data/librispeech-mini/audio/5652"))
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from faster_whisper.tokenizer import Tokenizer

    model = whisper_model(args.threads)
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    prompt = list(tokenizer.sot_sequence) + [tokenizer.no_timestamps]
    samples, needed = [], args.windows * WINDOW_S * SAMPLE_RATE
    for path in sorted(args.folder.rglob("*.flac")):
        samples.append(load_audio(path))
        if sum(len(s) for s in samples) >= needed:
            break
    audio = np.concatenate(samples)[:needed]
    window = WINDOW_S * SAMPLE_RATE
    mel = np.stack([model.feature_extractor(audio[i * window : (i + 1) * window])[:, :3000] for i in range(args.windows)])
    for batch in (1, 4, 8):
        started, tokens = time.perf_counter(), 0
        for first in range(0, args.windows, batch):
            states = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[first : first + batch], dtype=np.float32)))
            results = model.model.generate(states, [prompt] * len(mel[first : first + batch]), beam_size=1, max_length=224)
            tokens += sum(len(r.sequences_ids[0]) for r in results)
        seconds = time.perf_counter() - started
        print(json.dumps({"batch": batch, "x_real_time": round(args.windows * WINDOW_S / seconds, 1), "tokens": tokens}))


if __name__ == "__main__":
    main()
