"""Typed utterances with word and phone alignments, and their JSON-lines manifests.

Every corpus the project reads or makes (synthetic TTS speech, LibriSpeech with TextGrids,
label folders, LibriPhrase) becomes a list of `Utterance`. Training and evaluation read only
this type.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from archive_search.errors import DataError


NON_WORD_LABELS = frozenset({"", "<unk>", "<sil>", "sil", "sp", "spn", "<eps>"})
"""Word-tier labels of aligners and recognisers that mark silence or unknown speech, not words."""


@dataclass(frozen=True)
class AlignedUnit:
    """A word or phone with its start and end in seconds inside its utterance."""

    label: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Utterance:
    """One audio file (or clip) with what is said in it and when.

    `audio` is a path, relative to the manifest's folder or absolute. `phones` use the
    stress-free ARPAbet of `archive_search.embedders.phonemes`. `words` may be empty for
    clip-level labelled data (then `text` is the label).
    """

    id: str
    audio: str
    duration: float
    text: str
    words: list[AlignedUnit] = field(default_factory=list)
    phones: list[AlignedUnit] = field(default_factory=list)
    speaker: str = ""
    source: str = ""
    split: str = "train"
    augment: dict = field(default_factory=dict)

    def audio_path(self, root: str | Path) -> Path:
        path = Path(self.audio)
        return path if path.is_absolute() else Path(root) / path

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict) -> "Utterance":
        data = dict(data)
        data["words"] = [AlignedUnit(**unit) for unit in data.get("words", [])]
        data["phones"] = [AlignedUnit(**unit) for unit in data.get("phones", [])]
        return cls(**data)


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> int:
    """Write utterances as JSON lines atomically (temp file, fsync, rename); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    count = 0
    with open(temporary, "w", encoding="utf-8") as handle:
        for utterance in utterances:
            handle.write(utterance.to_json() + "\n")
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    return count


def iter_manifest(path: str | Path) -> Iterator[Utterance]:
    """Read a JSON-lines manifest lazily; a bad line raises DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield Utterance.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError, KeyError) as exc:
                raise DataError(f"{path}:{number}: not a valid utterance record ({exc})") from exc


def read_manifest(path: str | Path) -> list[Utterance]:
    return list(iter_manifest(path))
