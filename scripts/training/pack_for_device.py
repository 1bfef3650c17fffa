"""Copy training manifests' audio into one folder as Opus, small enough to travel to a lent GPU
machine (its working tree is capped at 64 MiB): 4.4 h of speech at about 18 kbit/s is ~36 MB.

    python scripts/training/pack_for_device.py .devdata work/data/libri-5652.jsonl ...

Writes OUT/<manifest stem>.jsonl (the training split only, audio paths relative to OUT) and
OUT/audio/<stem>/<id>.opus, and prints how far the first utterance's 128-bin log-mel frames
moved (RMS, natural-log units, beside their per-bin spread; 0.77 against 3.4 for the first
LibriSpeech 5652 utterance). The codec is the one the augmentation chain already applies to
some training clips (an Opus round trip).
"""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

from archive_search.audio import SAMPLE_RATE, FeatureConfig, load_audio, log_mel
from archive_search.data.manifest import iter_manifest, write_manifest

OPUS_COMPRESSION = 0.95
"""soundfile's compression level for Opus: 0.95 is about 18 kbit/s for 16 kHz speech."""


def _encode(job: tuple[str, str]) -> None:
    source, target = job
    sf.write(target, load_audio(source), SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=OPUS_COMPRESSION)


def pack(out: Path, manifests: list[Path], workers: int = 2) -> None:
    jobs = []
    for manifest in manifests:
        folder = out / "audio" / manifest.stem
        folder.mkdir(parents=True, exist_ok=True)
        packed = []
        for utterance in iter_manifest(manifest):
            if utterance.split != "train":
                continue
            target = folder / f"{utterance.id}.opus"
            jobs.append((str(utterance.audio_path(manifest.parent)), str(target)))
            packed.append(dataclasses.replace(utterance, audio=str(target.relative_to(out))))
        write_manifest(out / f"{manifest.stem}.jsonl", packed)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_encode, jobs, chunksize=16))
    if jobs:
        error, spread = codec_error(*jobs[0])
        print(f"{jobs[0][1]}: log-mel RMS change {error:.2f} (per-bin spread {spread:.2f})")


def codec_error(source: str, packed: str) -> tuple[float, float]:
    """RMS difference of 128-bin log-mel frames between an original and its packed copy, and
    the original's mean per-bin standard deviation (both in natural-log units)."""
    original, copy = load_audio(source), load_audio(packed)
    config = FeatureConfig(n_mels=128)
    a, b = log_mel(original, config), log_mel(copy[: len(original)], config)
    frames = min(len(a), len(b))
    return float((a[:frames] - b[:frames]).pow(2).mean().sqrt()), float(a.std(dim=0).mean())


if __name__ == "__main__":
    pack(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
