"""Real corpora as `Utterance` manifests: LibriSpeech + MFA TextGrids, label folders (fsdd),
Google Speech Commands, and LibriPhrase CSVs.

Every loader returns utterances whose `audio` is an absolute path, so the manifest can be
written anywhere. Phones are mapped to the project's stress-free ARPAbet; silence, `sp`,
`spn`, `<unk>` and empty intervals are left out of the word and phone lists.
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import soundfile as sf

from archive_search.data.manifest import AlignedUnit, Utterance
from archive_search.embedders.phonemes import normalise_phonemes
from archive_search.errors import DataError

SILENCE_LABELS = frozenset({"", "sil", "sp", "spn", "<unk>", "<eps>", "<sil>", "[noise]", "[laughter]"})
WAV_LIKE = (".wav", ".flac")


def _duration(path: Path) -> float:
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types
        raise DataError(f"{path}: cannot read audio header ({exc})") from exc
    return round(info.frames / info.samplerate, 4)


# ----------------------------------------------------------------------------- TextGrids


def read_textgrid(path: str | Path) -> tuple[list[AlignedUnit], list[AlignedUnit]]:
    """Words and phones of an MFA TextGrid (tiers 'words' and 'phones'), silence left out."""
    from praatio import textgrid

    path = Path(path)
    try:
        grid = textgrid.openTextgrid(str(path), includeEmptyIntervals=False)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: TextGrid not found") from exc
    except Exception as exc:  # praatio raises bare Exceptions, IndexError, ValueError... on bad files
        raise DataError(f"{path}: not a valid TextGrid ({type(exc).__name__}: {exc})") from exc
    names = {name.lower(): name for name in grid.tierNames}
    missing = [tier for tier in ("words", "phones") if tier not in names]
    if missing:
        raise DataError(f"{path}: TextGrid has no {' or '.join(missing)} tier (tiers: {', '.join(grid.tierNames)})")
    words = []
    for entry in grid.getTier(names["words"]).entries:
        label = entry.label.strip().lower()
        if label in SILENCE_LABELS:
            continue
        words.append(AlignedUnit(label, round(float(entry.start), 4), round(float(entry.end), 4)))
    phones = []
    for entry in grid.getTier(names["phones"]).entries:
        mapped = normalise_phonemes([entry.label]) if entry.label.strip().lower() not in SILENCE_LABELS else []
        if mapped:
            phones.append(AlignedUnit(mapped[0], round(float(entry.start), 4), round(float(entry.end), 4)))
    for unit in words + phones:
        if unit.end < unit.start:
            raise DataError(f"{path}: interval {unit.label!r} ends before it starts ({unit.start} > {unit.end})")
    return words, phones


def _read_transcripts(folder: Path) -> dict[str, str]:
    texts = {}
    for trans in folder.glob("*.trans.txt"):
        for number, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            key, _, text = line.partition(" ")
            if not text:
                raise DataError(f"{trans}:{number}: expected '<utterance-id> <transcript>'")
            texts[key] = text.strip().lower()
    return texts


def load_librispeech(root: str | Path, split: str = "train", alignment: str | Path | None = None) -> list[Utterance]:
    """LibriSpeech `audio/<speaker>/<chapter>/*.flac` (or the plain LibriSpeech layout) with
    `<speaker>-<chapter>.trans.txt`, and MFA TextGrids under `alignment/` mirrored by speaker and
    chapter (or next to the audio). Utterances without a TextGrid keep the transcript, no times."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: LibriSpeech folder not found")
    audio_root = root / "audio" if (root / "audio").is_dir() else root
    align_root = Path(alignment) if alignment else (root / "alignment" if (root / "alignment").is_dir() else None)
    utterances = []
    for folder in sorted({p.parent for p in audio_root.rglob("*.trans.txt")}):
        texts = _read_transcripts(folder)
        relative = folder.relative_to(audio_root)
        for key in sorted(texts):
            audio = next((folder / f"{key}{ext}" for ext in WAV_LIKE if (folder / f"{key}{ext}").is_file()), None)
            if audio is None:
                raise DataError(f"{folder}: transcript names {key} but no {key}.flac or {key}.wav is there")
            words: list[AlignedUnit] = []
            phones: list[AlignedUnit] = []
            candidates = [folder / f"{key}.TextGrid"]
            if align_root is not None:
                candidates.insert(0, align_root / relative / f"{key}.TextGrid")
            grid = next((c for c in candidates if c.is_file()), None)
            if grid is not None:
                words, phones = read_textgrid(grid)
            utterances.append(
                Utterance(
                    id=key, audio=str(audio.resolve()), duration=_duration(audio), text=texts[key],
                    words=words, phones=phones, speaker=f"librispeech:{key.split('-')[0]}",
                    source="librispeech", split=split,
                )  # fmt: skip
            )
    if not utterances:
        raise DataError(f"{root}: no LibriSpeech transcripts (*.trans.txt) found")
    return utterances


# ----------------------------------------------------------------------------- label folders


@functools.lru_cache(maxsize=4096)
def _label_text(label: str) -> str:
    """A clip label as words: digits spelled out ('7' -> 'seven'), '_'/'-' as spaces."""
    words = []
    for token in re.split(r"[\s_\-]+", label.strip().lower()):
        if token in _DIGITS:
            words.append(_DIGITS[token])
        elif token.isdigit():  # rare: inflect is slow to import
            words += re.findall(r"[a-z]+", _inflect().number_to_words(token))
        else:
            words += re.findall(r"[a-z]+(?:'[a-z]+)*", token)
    return " ".join(words)


_DIGITS = dict(zip("0123456789", "zero one two three four five six seven eight nine".split()))


@functools.lru_cache(maxsize=1)
def _inflect():
    import inflect

    return inflect.engine()


def load_label_folder(root: str | Path, split: str = "train", source: str = "labels") -> list[Utterance]:
    """Clips named `<label>_<speaker>_<take>.wav` (fsdd): the label is the text (digits spelled out)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    utterances = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in WAV_LIKE):
        parts = path.stem.split("_")
        if len(parts) < 2 or not parts[0]:
            raise DataError(f"{path}: expected a name like <label>_<speaker>_<take>{path.suffix}")
        text = _label_text(parts[0])
        if not text:
            raise DataError(f"{path}: label {parts[0]!r} has no pronounceable word")
        utterances.append(
            Utterance(
                id=f"{source}-{path.stem}", audio=str(path.resolve()), duration=_duration(path), text=text,
                speaker=f"{source}:{parts[1]}", source=source, split=split,
            )  # fmt: skip
        )
    if not utterances:
        raise DataError(f"{root}: no <label>_*.wav clips found")
    return utterances


def load_speech_commands(root: str | Path) -> list[Utterance]:
    """Google Speech Commands: `<word>/<speaker>_nohash_<n>.wav`; splits from
    validation_list.txt / testing_list.txt (the rest is train); `_background_noise_` is skipped."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: Speech Commands folder not found")
    lists = {}
    for name, split in (("validation_list.txt", "dev"), ("testing_list.txt", "test")):
        listing = root / name
        if listing.is_file():
            for line in listing.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    lists[line.strip()] = split
    utterances = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        text = _label_text(folder.name)
        for path in sorted(folder.glob("*.wav")):
            relative = f"{folder.name}/{path.name}"
            utterances.append(
                Utterance(
                    id=f"gsc-{folder.name}-{path.stem}", audio=str(path.resolve()), duration=_duration(path),
                    text=text, speaker=f"gsc:{path.stem.split('_nohash_')[0]}", source="speechcommands",
                    split=lists.get(relative, "train"),
                )  # fmt: skip
            )
    if not utterances:
        raise DataError(f"{root}: no <word>/*.wav clips found")
    return utterances


# ----------------------------------------------------------------------------- LibriPhrase

LIBRIPHRASE_COLUMNS = ("anchor", "anchor_text", "comparison", "comparison_text", "target")


@dataclass(frozen=True)
class PhrasePair:
    """A LibriPhrase trial: anchor audio vs comparison text (and audio), same phrase or not."""

    anchor_audio: str
    anchor_text: str
    comparison_audio: str
    comparison_text: str
    target: bool
    kind: str  # e.g. "diffspk_positive", "diffspk_hardneg", "diffspk_easyneg"

    @property
    def hard(self) -> bool:
        return "hard" in self.kind


def _libriphrase_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise DataError(f"{path}: LibriPhrase CSV not found")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in LIBRIPHRASE_COLUMNS if c not in header]
        if missing:
            raise DataError(f"{path}: LibriPhrase CSV lacks column(s) {', '.join(missing)} (header: {', '.join(header)})")
        for number, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if any(not row.get(c) for c in LIBRIPHRASE_COLUMNS):
                raise DataError(f"{path}:{number}: empty value in a required column")
            yield number, row


def _target(value: str, path: Path, number: int) -> bool:
    if value in ("1", "true", "True", "1.0"):
        return True
    if value in ("0", "false", "False", "0.0"):
        return False
    raise DataError(f"{path}:{number}: target must be 0 or 1, not {value!r}")


def load_libriphrase_pairs(csv_path: str | Path, audio_root: str | Path | None = None) -> list[PhrasePair]:
    """The trials of a LibriPhrase CSV; audio paths are resolved against `audio_root` (default: the CSV's folder)."""
    path = Path(csv_path)
    base = Path(audio_root) if audio_root else path.parent
    pairs = []
    for number, row in _libriphrase_rows(path):
        pairs.append(
            PhrasePair(
                anchor_audio=str((base / row["anchor"]).resolve()), anchor_text=row["anchor_text"].lower(),
                comparison_audio=str((base / row["comparison"]).resolve()),
                comparison_text=row["comparison_text"].lower(), target=_target(row["target"], path, number),
                kind=row.get("type", ""),
            )  # fmt: skip
        )
    return pairs


def load_libriphrase(csv_path: str | Path, audio_root: str | Path | None = None, split: str = "test") -> list[Utterance]:
    """Every distinct clip of a LibriPhrase CSV (anchors and comparisons) as an utterance with its phrase."""
    path = Path(csv_path)
    base = Path(audio_root) if audio_root else path.parent
    seen: dict[str, Utterance] = {}
    for _, row in _libriphrase_rows(path):
        for side in ("anchor", "comparison"):
            audio = (base / row[side]).resolve()
            if str(audio) in seen:
                continue
            duration_text = row.get(f"{side}_dur", "")
            try:
                duration = float(duration_text) if duration_text else _duration(audio)
            except ValueError as exc:
                raise DataError(f"{path}: {side}_dur {duration_text!r} is not a number") from exc
            seen[str(audio)] = Utterance(
                id=f"libriphrase-{re.sub(r'[^A-Za-z0-9_-]+', '_', row[side])}", audio=str(audio), duration=duration,
                text=row[f"{side}_text"].lower(), speaker=f"librispeech:{row.get(f'{side}_spk', '')}",
                source="libriphrase", split=split,
            )  # fmt: skip
    return list(seen.values())


LOADERS = {
    "librispeech": load_librispeech,
    "fsdd": lambda root, split="train": load_label_folder(root, split, source="fsdd"),
    "speechcommands": lambda root, split=None: load_speech_commands(root),
    "libriphrase": lambda root, split="test": load_libriphrase(root, split=split),
}
