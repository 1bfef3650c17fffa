"""Split the development and held-out sets used for the score calibration (docs/models.md).

- work/calib/dev.jsonl: 300 training-voice utterances of work/data/synth-2h-s1 (seeded shuffle; that
  corpus is not in the JMCL training data) + the pseudo-labelled test-other speakers 1688, 1998,
  2033, 2414 and 2609. The engine's calibration is fitted here.
- work/data/test-other-heldout.jsonl: the other five test-other speakers, reported only.

Run from the repository root after `archive-data synth --hours 2 --out work/data/synth-2h-s1 --seed 1`
and `archive-data pseudo-label .../test-other --out work/data/pseudo-test-other.jsonl --split test`.
"""

import json
import os
import random

DEV_SPEAKERS = {f"librispeech:{s}" for s in ("1688", "1998", "2033", "2414", "2609")}


def rows(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)


synth_dir = "work/data/synth-2h-s1"
synthetic = [r for r in rows(f"{synth_dir}/manifest.jsonl") if r["split"] == "train"]
random.Random(0).shuffle(synthetic)
synthetic = synthetic[:300]
for record in synthetic:
    record["audio"] = os.path.abspath(os.path.join(synth_dir, record["audio"]))
other = rows("work/data/pseudo-test-other.jsonl")
write("work/calib/dev.jsonl", synthetic + [r for r in other if r["speaker"] in DEV_SPEAKERS])
write("work/data/test-other-heldout.jsonl", [r for r in other if r["speaker"] not in DEV_SPEAKERS])
