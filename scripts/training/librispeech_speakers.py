"""librispeech-mini TextGrids -> one manifest per speaker (5652 train, 4088 test) under work/data/.
`archive-data import librispeech` makes the same records; this is what the shipped jmcl.pt used."""
import sys
from pathlib import Path
from praatio import textgrid
import soundfile as sf
from archive_search.data.manifest import AlignedUnit, Utterance, write_manifest
from archive_search.embedders.phonemes import normalise_phonemes
root = Path("/work/shared/data/librispeech-mini")
for speaker, split in [("5652", "train"), ("4088", "test")]:
    utts = []
    for tg_path in sorted((root / "alignment" / speaker).rglob("*.TextGrid")):
        audio = root / "audio" / speaker / tg_path.parent.name / (tg_path.stem + ".flac")
        tg = textgrid.openTextgrid(str(tg_path), includeEmptyIntervals=False)
        words = [AlignedUnit(e.label, e.start, e.end) for e in tg.getTier("words").entries if e.label.strip()]
        phones = []
        for e in tg.getTier("phones").entries:
            p = normalise_phonemes([e.label])
            if p: phones.append(AlignedUnit(p[0], e.start, e.end))
        info = sf.info(str(audio))
        utts.append(Utterance(tg_path.stem, str(audio), info.frames / info.samplerate, " ".join(w.label for w in words), words, phones, speaker, "librispeech", split))
    n = write_manifest(f"work/data/libri-{speaker}.jsonl", utts)
    print(speaker, n, sum(u.duration for u in utts) / 60, "min")
