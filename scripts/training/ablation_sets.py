"""Evaluation files of the window ablation (docs/experiments.md, "Window ablation: indexer windows
versus segments").

- work/data/abl-train-vocab.txt: every word of the train split of the three JMCL ablation
  training manifests (IV for `archive-eval windowed/search --vocab`);
- work/data/test-other-heldout.jsonl: the pseudo-labelled test-other speakers that are not the
  calibration's development speakers (the same split as make_calibration_dev.py, without the
  synthetic development corpus that script also needs).

Run from the repository root after the manifests named below exist (commands in
docs/experiments.md).
"""

from manifests import rows, split_test_other, write_manifest
from train_vocab import write_vocab

TRAINING = ("work/data/libri-5652.jsonl", "work/data-helper/pseudo-train-clean-100.jsonl", "work/data/synth-a2/manifest.jsonl")

n_words = write_vocab("work/data/abl-train-vocab.txt", TRAINING)
_, held_out = split_test_other(rows("work/data/pseudo-test-other.jsonl"))
write_manifest("work/data/test-other-heldout.jsonl", held_out)
print(f"{n_words} training words, {len(held_out)} held-out test-other utterances")
