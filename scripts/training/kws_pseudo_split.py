"""Split the pseudo-labelled train-clean-100 manifest for the ParallelKWS runs (docs/models.md).

work/kws/gse/pseudo-dev.jsonl: the 40 utterances named in kws-dev-ids.txt (one per speaker, drawn
once with a seed when the run was made; the list is kept so the split is exact), used only to
choose the engine's score mix; work/kws/gse/pseudo-train.jsonl: the other 209, trained on.
Run from the repository root after `archive-data pseudo-label ... --out
work/data-helper/pseudo-train-clean-100.jsonl`.
"""

import os

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = "work/data-helper/pseudo-train-clean-100.jsonl"

with open(os.path.join(HERE, "kws-dev-ids.txt"), encoding="utf-8") as handle:
    dev_ids = {line.strip() for line in handle if line.strip()}
with open(SOURCE, encoding="utf-8") as handle:
    lines = [line for line in handle if line.strip()]
os.makedirs("work/kws/gse", exist_ok=True)
with open("work/kws/gse/pseudo-dev.jsonl", "w", encoding="utf-8") as dev, open(
    "work/kws/gse/pseudo-train.jsonl", "w", encoding="utf-8"
) as train:
    for line in lines:
        utterance_id = line.split('"id":', 1)[1].split('"')[1]
        (dev if utterance_id in dev_ids else train).write(line)
