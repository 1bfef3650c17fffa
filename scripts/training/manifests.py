"""Shared helpers of the training scripts: manifest reading and writing, and the test-other split.

The calibration's development speakers and the held-out half of test-other must stay disjoint;
this module is the one place that splits them (make_calibration_dev.py, ablation_sets.py).
"""

import json
import os

TEST_OTHER_DEV_SPEAKERS = {f"librispeech:{s}" for s in ("1688", "1998", "2033", "2414", "2609")}
"""The pseudo-labelled test-other speakers that the score calibration is fitted on; the other five are held out."""


def rows(path):
    """The JSON records of a manifest, one per non-empty line."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_manifest(path, records):
    """Write records as JSON lines, creating the folder."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in records)


def split_test_other(records):
    """(development records, held-out records) of the pseudo-labelled test-other manifest."""
    dev = [r for r in records if r["speaker"] in TEST_OTHER_DEV_SPEAKERS]
    held_out = [r for r in records if r["speaker"] not in TEST_OTHER_DEV_SPEAKERS]
    return dev, held_out
