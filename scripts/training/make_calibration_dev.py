"""Split the development and held-out sets used for the score calibration (docs/experiments.md,
"Score calibration").

- work/calib/dev.jsonl: 300 training-voice utterances of work/data/synth-2h-s1 (seeded shuffle; that
  corpus is not in the JMCL training data) + the pseudo-labelled test-other speakers 1688, 1998,
  2033, 2414 and 2609: a mostly synthetic development archive, used to choose weights and models.
- work/calib/dev-real.jsonl (the shipped calibration is fitted here): real speech only, closer to
  the archives the engine serves: the 40 pseudo-labelled train-clean-100 development utterances
  (work/kws/gse/pseudo-dev.jsonl, 40 speakers the models never trained on) + the same five
  test-other speakers.
- work/data/test-other-heldout.jsonl: the other five test-other speakers, reported only.

Run from the repository root after `archive-data synth --hours 2 --out work/data/synth-2h-s1 --seed 1`
and `archive-data pseudo-label .../test-other --out work/data/pseudo-test-other.jsonl --split test`
(and scripts/training/kws_pseudo_split.py for the train-clean-100 development utterances).
"""

import os
import random

from manifests import rows, split_test_other, write_manifest

synth_dir = "work/data/synth-2h-s1"
synthetic = [r for r in rows(f"{synth_dir}/manifest.jsonl") if r["split"] == "train"]
random.Random(0).shuffle(synthetic)
synthetic = synthetic[:300]
for record in synthetic:
    record["audio"] = os.path.abspath(os.path.join(synth_dir, record["audio"]))
dev_speakers, held_out = split_test_other(rows("work/data/pseudo-test-other.jsonl"))
write_manifest("work/calib/dev.jsonl", synthetic + dev_speakers)
write_manifest("work/calib/dev-real.jsonl", rows("work/kws/gse/pseudo-dev.jsonl") + dev_speakers)
write_manifest("work/data/test-other-heldout.jsonl", held_out)
