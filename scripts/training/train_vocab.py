"""Write the training vocabulary of some manifests: every word of their train split, one per line.

`archive-eval windowed/search/words --vocab FILE` splits results into in-vocabulary (IV) and
out-of-vocabulary (OOV) words with it.

    python scripts/training/train_vocab.py OUT MANIFEST [MANIFEST ...]
"""

import sys

from manifests import rows


def training_words(paths):
    """Lower-cased labels of every word in the train split of the manifests (not markers such as <unk>)."""
    labels = (w["label"].lower() for path in paths for r in rows(path) if r.get("split", "train") == "train" for w in r["words"])
    return {label for label in labels if not label.startswith("<")}


def write_vocab(out, paths):
    """Write the sorted training words of `paths` to `out`; return how many."""
    words = training_words(paths)
    with open(out, "w", encoding="utf-8") as handle:
        handle.write("\n".join(sorted(words)) + "\n")
    return len(words)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(f"{write_vocab(sys.argv[1], sys.argv[2:])} training words")
