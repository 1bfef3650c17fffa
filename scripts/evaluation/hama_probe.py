"""How fast hama's phoneme recogniser runs, as a candidate phonetic channel at index time.

    .venv/bin/pip install hama==1.7.0      # not a project dependency: not adopted
    OMP_NUM_THREADS=1 .venv/bin/python scripts/evaluation/hama_probe.py work/data/libri-4088.jsonl --utterances 15

Runs `hama.ASRModel` (IPA phonemes from 16 kHz audio, its own Zig engine, offline) over the
first utterances of a manifest and prints the real-time factor and the last utterance's
phonemes beside its reference text (docs/experiments.md, "Fusion probes").
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from archive_search.audio import SAMPLE_RATE, load_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path)
    parser.add_argument("--utterances", type=int, default=15)
    args = parser.parse_args()
    from hama import ASRModel

    model = ASRModel()
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines()[: args.utterances]]
    audio_s = busy_s = 0.0
    for row in rows:
        samples = load_audio(row["audio"])
        started = time.perf_counter()
        result = model.transcribe_waveform(samples, SAMPLE_RATE)
        busy_s += time.perf_counter() - started
        audio_s += len(samples) / SAMPLE_RATE
    print(json.dumps({"audio_s": round(audio_s, 1), "x_real_time": round(audio_s / busy_s, 1),
                      "reference": rows[-1]["text"], "phonemes": " ".join(result.phonemes)}))  # fmt: skip


if __name__ == "__main__":
    main()
