"""Evaluation files of the session-4 ablations (docs/models.md, "Training on indexer windows").

- work/data/abl-train-vocab.txt: every word of the train split of the three JMCL ablation
  training manifests (IV for `archive-eval windowed/search --vocab`);
- work/data/test-other-heldout.jsonl: the pseudo-labelled test-other speakers that are not the
  calibration's development speakers (the same split as make_calibration_dev.py, without the
  synthetic development corpus that script also needs).

Run from the repository root after the manifests named below exist (commands in docs/models.md).
"""

import json

from train_vocab import rows, write_vocab

TRAINING = ("work/data/libri-5652.jsonl", "work/data-helper/pseudo-train-clean-100.jsonl", "work/data/synth-a2/manifest.jsonl")
DEV_SPEAKERS = {f"librispeech:{s}" for s in ("1688", "1998", "2033", "2414", "2609")}

n_words = write_vocab("work/data/abl-train-vocab.txt", TRAINING)
held_out = [r for r in rows("work/data/pseudo-test-other.jsonl") if r["speaker"] not in DEV_SPEAKERS]
with open("work/data/test-other-heldout.jsonl", "w", encoding="utf-8") as handle:
    handle.writelines(json.dumps(r) + "\n" for r in held_out)
print(f"{n_words} training words, {len(held_out)} held-out test-other utterances")
