"""Copy training manifests' audio into one folder as Opus, small enough to travel to a lent GPU
machine (its working tree is capped at 64 MiB): 4.4 h of speech at about 18 kbit/s is ~36 MB.

    python scripts/training/pack_for_device.py .devdata work/data/libri-5652.jsonl ...

Writes OUT/<manifest stem>.jsonl (the training split only, audio paths relative to OUT) and
OUT/audio/<stem>/<id>.opus. The codec is the one the augmentation chain already applies to
some training clips (an Opus round trip), at a rate where log-mel frames stay within ~0.8 dB
RMS of the original.
"""

from __future__ import annotations

import dataclasses
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import soundfile as sf

from archive_search.audio import SAMPLE_RATE, load_audio
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


if __name__ == "__main__":
    pack(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
