#!/usr/bin/env bash
# The development archives the fusion is fitted on (docs/models.md, "fusion.json"), under work/ (git-ignored).
# Run from anywhere:  bash scripts/training/make_fusion_dev.sh [libri] [other] [synth] [real5652] [check]
# (no argument = every step, in this order). Each step prints its wall time.
# Heavy steps run with nice -n 5 and one thread/job (the 2-core machine is shared).
set -euo pipefail
cd "$(dirname "$0")/../.."          # repository root
PY=.venv/bin/python
DATA=.venv/bin/archive-data
steps=("$@"); [ ${#steps[@]} -eq 0 ] && steps=(libri other synth real5652 check)
mkdir -p work/data work/dev

timed() { local name=$1; shift; local t0=$SECONDS; "$@"; echo "[make_dev] step $name: $((SECONDS - t0)) s" >&2; }

# 1. librispeech-mini MFA TextGrids -> one manifest per speaker:
#    work/data/libri-5652.jsonl (split train), work/data/libri-4088.jsonl (split test, held out).
#    The script the shipped models' manifests were made with (docs/models.md); it reads
#    /work/shared/data/librispeech-mini and writes absolute audio paths.
libri() {
    nice -n 5 $PY scripts/training/librispeech_speakers.py
}

# 2. Whisper tiny.en pseudo-labels of LibriSpeech test-other (10 speakers, 100 files), then the
#    one split of scripts/training/manifests.py: 5 development speakers / 5 held-out speakers.
#    (--threads 1: the machine's 2 cores are shared.)
other() {
    nice -n 5 $DATA pseudo-label /work/shared/data/librispeech-untranscribed/test-other \
        --out work/data/pseudo-test-other.jsonl --split test --threads 1 --json
    $PY - <<'EOF'
import sys
sys.path.insert(0, "scripts/training")
from manifests import rows, split_test_other, write_manifest
dev, held_out = split_test_other(rows("work/data/pseudo-test-other.jsonl"))
write_manifest("work/dev/real-other.jsonl", dev)
write_manifest("work/data/test-other-heldout.jsonl", held_out)
print("real-other", len(dev), "test-other-heldout", len(held_out))
EOF
}

# 3. Synthetic development archive of training voices: a 0.5 h corpus (seed 1), then 300
#    train-split clips drawn as scripts/training/make_calibration_dev.py draws them
#    (random.Random(0).shuffle, first 300), audio paths made absolute.
synth() {
    nice -n 5 $DATA synth --hours 0.5 --out work/data/synth-dev --seed 1 --jobs 1 --json
    $PY - <<'EOF'
import os, random, sys
sys.path.insert(0, "scripts/training")
from manifests import rows, write_manifest
synth_dir = "work/data/synth-dev"
synthetic = [r for r in rows(f"{synth_dir}/manifest.jsonl") if r["split"] == "train"]
random.Random(0).shuffle(synthetic)
synthetic = synthetic[:300]
for record in synthetic:
    record["audio"] = os.path.abspath(os.path.join(synth_dir, record["audio"]))
write_manifest("work/dev/synth.jsonl", synthetic)
print("synth", len(synthetic))
EOF
}

# 4. Real development speaker 5652: every 2nd utterance of work/data/libri-5652.jsonl.
real5652() {
    $PY - <<'EOF'
import sys
sys.path.insert(0, "scripts/training")
from manifests import rows, write_manifest
records = rows("work/data/libri-5652.jsonl")[::2]
write_manifest("work/dev/real-5652.jsonl", records)
print("real-5652", len(records), round(sum(r["duration"] for r in records) / 60, 2), "min")
EOF
}

# 5. Every manifest loads with the evaluation harness, every audio file exists; counts.
check() {
    $PY - <<'EOF'
from archive_search.evaluation.harness import load_corpus
from archive_search.data.manifest import NON_WORD_LABELS
paths = ["work/data/libri-5652.jsonl", "work/data/libri-4088.jsonl", "work/data/pseudo-test-other.jsonl",
         "work/dev/real-other.jsonl", "work/data/test-other-heldout.jsonl", "work/dev/synth.jsonl",
         "work/dev/real-5652.jsonl"]
for path in paths:
    corpus = load_corpus(path)
    utts = corpus.utterances
    missing = [u.id for u in utts if not u.audio_path(corpus.root).is_file()]
    assert not missing, (path, missing[:5])
    words = sum(1 for u in utts for w in u.words if w.label.lower() not in NON_WORD_LABELS)
    speakers = len({u.speaker for u in utts})
    splits = sorted({u.split for u in utts})
    print(f"{path}\t{len(utts)} utts\t{sum(u.duration for u in utts) / 3600:.4f} h\t{words} words"
          f"\t{speakers} speakers\tsplits {splits}")
EOF
}

for step in "${steps[@]}"; do timed "$step" "$step"; done
