"""Indexing: walk folders, detect changes, stream and window each file, embed, transcribe, store.

With a transcriber, each file's words go into the same transaction as its windows. Long files
are transcribed chunk by chunk as they stream (`StreamingTranscript`); files of at most
`SHORT_FILE_S` wait in a pack and are transcribed together in one whisper pass
(`transcribe_packed`), then committed one by one. Files indexed without a transcript (an index
made with `--no-transcript`, or by a version without transcripts) gain one on the next run, without
being embedded again.

Per-file errors are collected (file + reason) and indexing carries on; each file is written
in one transaction, and the FAISS index is saved atomically every `save_every_s` seconds and
at the end (see storage/store.py for why a kill at any point loses nothing committed).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from archive_search.audio import (
    MIN_AUDIO_S,
    SAMPLE_RATE,
    STREAM_CHUNK_S,
    WINDOW_HOP_FRACTION,
    WINDOW_SCALES_S,
    needs_ffmpeg,
    probe,
    stream_audio,
)
from archive_search.embedders.base import AudioEmbedder
from archive_search.embedders.g2p import word_phonemes
from archive_search.embedders.transcriber import (
    DECODE_BATCH,
    PACK_GAP_S,
    WHISPER_WORKERS,
    PACK_SECONDS,
    SHORT_FILE_S,
    PieceCutter,
    StreamingTranscript,
    TimedWord,
    Transcriber,
    split_pack_words,
    shift_word,
    transcribe_packed,
)
from archive_search.embedders.whisper_encoder import FRAME_SAMPLES, frame_count, pack_clips
from archive_search.embedders.whisper_encoder import HOP_S as WHISPER_HOP_S
from archive_search.errors import ArchiveSearchError, AudioDecodeError, IndexWriteError
from archive_search.indexer.walk import Candidate, WalkProblem, content_hash, walk_audio
from archive_search.indexer.windows import StreamWindower, WindowBatch, window_spans
from archive_search.storage.store import IndexSettings, Store, StoredFile, StoredWord, Transcript

PACKS_WAITING = 2 * DECODE_BATCH * WHISPER_WORKERS
"""Packs of short files that wait before whisper runs: enough for every worker to run two batches."""

SILENCE_PEAK = 1e-3
"""A file whose absolute peak stays below this (about -60 dBFS) is silent: stored, not embedded."""


@dataclass(frozen=True)
class FileIssue:
    """A file that failed or was skipped, and why (one line)."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class IndexProgress:
    """Where an indexing run stands; passed to the progress callback after each file and chunk."""

    files_done: int
    files_total: int
    audio_s: float
    """Seconds of audio decoded and embedded so far in this run."""
    elapsed_s: float
    current: str | None = None

    @property
    def audio_hours(self) -> float:
        return self.audio_s / 3600.0

    @property
    def speed(self) -> float:
        """Times real time."""
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressCallback = Callable[[IndexProgress], None]


@dataclass
class IndexReport:
    """What an indexing run did."""

    index: str
    files_seen: int = 0
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[FileIssue] = field(default_factory=list)
    """Files stored without windows: silent, or shorter than MIN_AUDIO_S."""
    errors: list[FileIssue] = field(default_factory=list)
    """Files that could not be indexed; they are retried on the next run."""
    windows_added: int = 0
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    repaired: list[str] = field(default_factory=list)
    """Files dropped by the crash repair on open (a previous run was interrupted); re-indexed here."""
    transcribed: int = 0
    """Files whose transcript this run wrote (new and changed files, and older files that had none)."""
    words_added: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def speed(self) -> float:
        return self.audio_s / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["skipped"] = [str(issue) for issue in self.skipped]
        data["errors"] = [str(issue) for issue in self.errors]
        data["ok"] = self.ok
        data["speed_x_realtime"] = round(self.speed, 2)
        return json.loads(json.dumps(data, default=str, ensure_ascii=True))


class Indexer:
    """Indexes folders into a Store with one AudioEmbedder."""

    def __init__(
        self,
        store: Store,
        embedder: AudioEmbedder,
        progress: ProgressCallback | None = None,
        save_every_s: float = 30.0,
        chunk_s: float | None = None,
        transcriber: Transcriber | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.transcriber = transcriber
        self._pack: list[_PendingFile] = []
        self.progress = progress
        self.save_every_s = save_every_s
        self.chunk_s = chunk_s or STREAM_CHUNK_S
        settings = store.settings
        assert settings is not None
        self.scales = settings.window_scales_s
        self.hop_fraction = settings.window_hop_fraction

    def run(self, roots: Iterable[str | Path], report: IndexReport | None = None) -> IndexReport:
        """Index everything under `roots`; remove files under them (or anywhere) that vanished."""
        roots = [os.path.abspath(os.fspath(r)) for r in roots]
        report = report or IndexReport(str(self.store.folder))
        started = time.monotonic()
        problems: list[WalkProblem] = []
        candidates = list(walk_audio(roots, problems))
        report.errors.extend(FileIssue(p.path, p.reason) for p in problems)
        report.files_seen = len(candidates)
        stored = self.store.stored_files()

        found = {c.path for c in candidates}
        vanished = [
            path for path in stored
            if path not in found and (_under(path, roots) or not os.path.lexists(path))
        ]
        self._last_save = time.monotonic()
        if self.transcriber is not None:
            self.store.keep_transcripts(self.transcriber.name)
        try:
            if vanished:
                self.store.remove_files(vanished)
                report.removed.extend(vanished)
            self._index_all(candidates, stored, report, started)
            self._commit_pack(report)
        except BaseException:
            # Also on Ctrl-C or a full disk: what was committed keeps its vectors if they can
            # still be saved; if not, the saved index stays as it was and the next run repairs
            # (so the first error, not this one, is what the caller sees).
            with contextlib.suppress(IndexWriteError):
                self.store.save_vectors()
            raise
        self.store.save_vectors()
        report.elapsed_s = time.monotonic() - started
        self._notify(len(candidates), len(candidates), report, started, None)
        return report

    def _index_all(self, candidates: list[Candidate], stored: dict[str, StoredFile], report: IndexReport, started: float) -> None:
        """Index each found file in turn (indexer/distributed.py hands the work to Ray workers instead)."""
        for number, candidate in enumerate(candidates):
            self._notify(number, len(candidates), report, started, candidate.path)
            self._index_one(candidate, stored.get(candidate.path), report, started, number, len(candidates))
            self._maybe_save()

    def _maybe_save(self) -> None:
        if time.monotonic() - self._last_save > self.save_every_s:
            self.store.save_vectors()
            self._last_save = time.monotonic()

    def _notify(self, done: int, total: int, report: IndexReport, started: float, current: str | None) -> None:
        if self.progress is not None:
            self.progress(IndexProgress(done, total, report.audio_s, time.monotonic() - started, current))

    def _index_one(
        self, candidate: Candidate, stored: StoredFile | None, report: IndexReport, started: float, number: int, total: int
    ) -> None:
        path = candidate.path
        try:
            digest = self._changed(candidate, stored, report)
            if digest is None:
                return
            sample_rate = _native_rate(path)
            embedded = self._embed_file(path, report, started, number, total)
        except (IndexWriteError, MemoryError):
            raise  # the index or the machine, not this file, is the problem: stop the run
        except Exception as exc:  # one odd file must not stop an archive-wide run
            report.errors.append(file_issue(path, exc))
            return
        self._accept(candidate, stored, digest, sample_rate, embedded, report)

    def _changed(self, candidate: Candidate, stored: StoredFile | None, report: IndexReport) -> str | None:
        """The content hash of a file to (re)index, or None for an unchanged one (counted here)."""
        path = candidate.path
        if stored is not None and stored.size == candidate.size and stored.mtime == candidate.mtime:
            report.unchanged += 1
            self._add_missing_transcript(stored, report)
            return None
        digest = content_hash(path)
        if stored is not None and stored.content_hash == digest:
            self.store.touch_file(path, candidate.size, candidate.mtime)
            report.unchanged += 1
            self._add_missing_transcript(stored, report)
            return None
        return digest

    def _accept(self, candidate: Candidate, stored: StoredFile | None, digest: str, sample_rate: int,
                embedded: "EmbeddedFile", report: IndexReport) -> None:  # fmt: skip
        """Commit an embedded file (or pack it for a shared transcription pass); silent and too
        short files are stored without windows."""
        path = candidate.path
        windows, vectors, duration, peak = embedded.windows, embedded.vectors, embedded.duration, embedded.peak
        words, short_clip = embedded.words, embedded.short_clip
        note = None
        if duration < MIN_AUDIO_S:
            note = f"is too short to hold a word ({duration:.3f} s)"
        elif peak < SILENCE_PEAK:
            note = "is silent"
        if note is not None:
            windows, vectors = np.zeros((0, 3)), np.zeros((0, self.embedder.dim), np.float32)
            words, short_clip = [], None
            report.skipped.append(FileIssue(path, note))
        pending = _PendingFile(path, digest, candidate.size, candidate.mtime, duration, sample_rate, windows, vectors, note,
                               stored is not None, words)  # fmt: skip
        if self.transcriber is not None and short_clip is not None:
            self._pack.append((pending, short_clip))
            # a few batches of packs wait, so that whisper's workers decode them side by side
            if sum(len(clip) for _, clip in self._pack) / SAMPLE_RATE + PACK_GAP_S * len(self._pack) >= PACK_SECONDS * PACKS_WAITING:
                self._commit_pack(report)
            return
        self._commit(pending, report)

    def _commit(self, pending: "_PendingFile", report: IndexReport) -> None:
        transcript = None
        if self.transcriber is not None:
            transcript = _transcript(self.transcriber.name, pending.words or [])
            report.transcribed += 1
            report.words_added += len(transcript.words)
        self.store.put_file(pending.path, pending.digest, pending.size, pending.mtime, pending.duration, pending.sample_rate,
                            pending.windows, pending.vectors, pending.note, transcript)  # fmt: skip
        (report.updated if pending.replaces else report.added).append(pending.path)
        report.windows_added += len(pending.windows)

    def _commit_pack(self, report: IndexReport) -> None:
        """Transcribe the waiting short files in shared whisper passes, then commit each."""
        pack, self._pack = self._pack, []
        if not pack:
            return
        assert self.transcriber is not None
        clips = [clip for _, clip in pack]
        try:
            if pack[0][0].vectors is None:  # deferred: embedded from the pack's encoder states
                packed_vectors, packed_words = embed_packed(self.embedder, self.transcriber, clips, [p.windows for p, _ in pack])
                for (pending, _), vectors in zip(pack, packed_vectors):
                    pending.vectors = _checked(self.embedder, pending.path, vectors, len(pending.windows))
            else:
                packed_words = transcribe_packed(self.transcriber, clips)
        except (ArchiveSearchError, RuntimeError, ValueError) as exc:
            for pending, _ in pack:  # not committed: the next run tries them again
                report.errors.append(FileIssue(pending.path, f"transcription failed: {exc}"))
            return
        for (pending, _), words in zip(pack, packed_words):
            pending.words = words
            self._commit(pending, report)

    def _add_missing_transcript(self, stored: StoredFile, report: IndexReport) -> None:
        """Transcribe an indexed file that has no transcript yet (its windows stay as they are)."""
        if self.transcriber is None or stored.transcribed:
            return
        words: list[TimedWord] = []
        if stored.n_windows:

            def on_chunk(seconds: float) -> None:
                report.audio_s += seconds

            words = stream_transcript(stored.path, self.transcriber, self.chunk_s, on_chunk)
        self._put_transcript(stored.path, words, report)

    def _put_transcript(self, path: str, words: list[TimedWord], report: IndexReport) -> None:
        assert self.transcriber is not None
        transcript = _transcript(self.transcriber.name, words)
        self.store.put_transcript(path, transcript)
        report.transcribed += 1
        report.words_added += len(transcript.words)

    def _embed_file(self, path: str, report: IndexReport, started: float, number: int, total: int) -> "EmbeddedFile":
        def on_chunk(seconds: float) -> None:
            report.audio_s += seconds
            self._notify(number, total, report, started, path)

        return embed_file(path, self.embedder, self.scales, self.hop_fraction, self.chunk_s, self.transcriber, on_chunk,
                          defer_short=True)  # fmt: skip


@dataclass
class EmbeddedFile:
    """One file's decoded work: windows (N, 3) start, end, scale; vectors (N, D) float32 (None
    while a short file waits for its pack's shared pass); duration s; absolute peak; words of a
    long file; `short_clip` (S,) the samples of a short file still to be transcribed in a pack
    (None otherwise)."""

    windows: np.ndarray
    vectors: np.ndarray | None
    duration: float
    peak: float
    words: list[TimedWord]
    short_clip: np.ndarray | None


def embed_file(path: str, embedder: AudioEmbedder, scales: tuple[float, ...], hop_fraction: float, chunk_s: float,
               transcriber: Transcriber | None = None, on_chunk: Callable[[float], None] | None = None,
               defer_short: bool = False) -> EmbeddedFile:  # fmt: skip
    """Stream, window and embed one file (and transcribe it when long); `on_chunk(seconds)` after each chunk.

    When the transcriber and the audio model read the same whisper encoder, a long file is
    encoded once for both (`_embed_shared`); with `defer_short`, a short file is not embedded
    here: its windows wait (vectors None) for its pack's shared pass (`embed_packed`)."""
    chunks = iter(stream_audio(path, chunk_s=chunk_s))
    if transcriber is not None and _shares_encoder(embedder, transcriber):
        head, held = [], 0  # read until the file proves longer than a short (packed) one
        for chunk in chunks:
            head.append(chunk)
            held += len(chunk.samples)
            if held > SHORT_FILE_S * SAMPLE_RATE:
                break
        chunks = itertools.chain(head, chunks)
        if held > SHORT_FILE_S * SAMPLE_RATE:
            return _embed_shared(path, chunks, embedder, transcriber, scales, hop_fraction, on_chunk)
        if defer_short:
            return _defer_short(path, head, scales, hop_fraction, on_chunk)
    windower = StreamWindower(scales, hop_fraction)
    windows, vectors = [], []
    peak = 0.0
    held: list[np.ndarray] = []  # a file's first seconds, until it proves too long to pack
    streaming = None
    for chunk in chunks:
        if len(chunk.samples):
            peak = max(peak, float(np.max(np.abs(chunk.samples))))
        batch = windower.push(chunk.samples)
        if batch is not None:
            _embed(embedder, path, batch, windows, vectors)
        if transcriber is not None:
            if streaming is None and windower.duration <= SHORT_FILE_S:
                held.append(chunk.samples)
            else:
                if streaming is None:
                    streaming = StreamingTranscript(transcriber)
                    held.append(chunk.samples)
                    streaming.push(np.concatenate(held))
                    held = []
                else:
                    streaming.push(chunk.samples)
        if on_chunk is not None:
            on_chunk(chunk.duration_s)
    tail = windower.finish()
    if windower.total == 0:
        raise AudioDecodeError(path, "holds no audio frames")
    if tail is not None:
        _embed(embedder, path, tail, windows, vectors)
    dim = embedder.dim
    return EmbeddedFile(
        np.concatenate(windows) if windows else np.zeros((0, 3)),
        np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32),
        windower.duration,
        peak,
        streaming.finish() if streaming is not None else [],
        np.concatenate(held) if held else None,
    )


def _shares_encoder(embedder: AudioEmbedder, transcriber: Transcriber) -> bool:
    return bool(getattr(embedder, "reads_whisper_states", False)) and hasattr(transcriber, "decode")


def _embed_shared(path: str, chunks: Iterable, embedder, transcriber, scales: tuple[float, ...], hop_fraction: float,
                  on_chunk: Callable[[float], None] | None) -> EmbeddedFile:  # fmt: skip
    """embed_file for a long file when transcript and vectors read the same whisper encoder.

    The stream is cut into <= 30 s pieces at quiet moments; whisper encodes and decodes them in
    batches on its worker threads (`run_batches`), and here, batch by batch, each piece's audio
    goes to the windower, whose windows are embedded from the piece's encoder states. Only the
    states of pieces the windower may still cut windows from are kept."""
    windower = StreamWindower(scales, hop_fraction)
    kept: list[tuple[int, np.ndarray]] = []  # (first frame in the file, raw states (T, 384)) per piece
    windows, vectors, words = [], [], []
    peak = 0.0

    def pieces():
        nonlocal peak
        cutter = PieceCutter()
        for chunk in chunks:
            if len(chunk.samples):
                peak = max(peak, float(np.max(np.abs(chunk.samples))))
            yield from cutter.push(chunk.samples)
            if on_chunk is not None:
                on_chunk(chunk.duration_s)
        yield from cutter.finish()

    for batch, states, batch_words in transcriber.run_batches(pieces(), lambda piece: piece.samples):
        for piece, piece_states, piece_words in zip(batch, states, batch_words):
            words.extend(shift_word(word, piece.start / SAMPLE_RATE) for word in piece_words)
            kept.append((piece.start // FRAME_SAMPLES, piece_states[: frame_count(len(piece.samples))]))
            window_batch = windower.push(piece.samples)
            if window_batch is not None:
                _embed_states(embedder, path, window_batch, kept, windows, vectors)
            # drop the states of pieces that end before the audio the windower still holds
            while len(kept) > 1 and (kept[0][0] + len(kept[0][1])) * WHISPER_HOP_S <= windower.buffer_start:
                kept.pop(0)
    if windower.total == 0:
        raise AudioDecodeError(path, "holds no audio frames")
    tail = windower.finish()
    if tail is not None:
        _embed_states(embedder, path, tail, kept, windows, vectors)
    return EmbeddedFile(
        np.concatenate(windows) if windows else np.zeros((0, 3)),
        np.concatenate(vectors) if vectors else np.zeros((0, embedder.dim), np.float32),
        windower.duration, peak, words, None,
    )  # fmt: skip


def _defer_short(path: str, chunks: list, scales: tuple[float, ...], hop_fraction: float,
                 on_chunk: Callable[[float], None] | None) -> EmbeddedFile:  # fmt: skip
    """A short file's windows and samples, its vectors left to its pack (`embed_packed`)."""
    samples = np.concatenate([chunk.samples for chunk in chunks]) if chunks else np.zeros(0, np.float32)
    if len(samples) == 0:
        raise AudioDecodeError(path, "holds no audio frames")
    if on_chunk is not None:
        for chunk in chunks:
            on_chunk(chunk.duration_s)
    duration = len(samples) / SAMPLE_RATE
    return EmbeddedFile(window_spans(duration, scales, hop_fraction), None, duration, float(np.max(np.abs(samples))), [], samples)


def embed_packed(embedder, transcriber, clips: Sequence[np.ndarray], windows: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[list[TimedWord]]]:
    """Short files' samples [(S_i,)] and windows [(N_i, 3)] -> their vectors [(N_i, D)] and words,
    from one whisper encoder pass per pack of clips (`pack_clips`), run in batches on whisper's
    worker threads; each clip's states are its rows of the pack's, standardised over the clip alone."""
    vectors: list[np.ndarray] = [np.zeros((0, embedder.dim), np.float32)] * len(clips)
    words: list[list[TimedWord]] = [[] for _ in clips]
    for batch, states, batch_words in transcriber.run_batches(pack_clips(clips, PACK_SECONDS, PACK_GAP_S), lambda pack: pack.signal):
        for pack, pack_states, pack_words in zip(batch, states, batch_words):
            for index, clip_words in split_pack_words(pack, pack_words).items():
                words[index] = clip_words
            for index, offset, length in pack.clips:
                rows = pack_states[offset // FRAME_SAMPLES : offset // FRAME_SAMPLES + frame_count(length)]
                vectors[index] = np.asarray(embedder.embed_whisper_spans([rows], windows[index][:, :2]), dtype=np.float32)
    return vectors, words


def _embed_states(embedder, path: str, batch: WindowBatch, kept: list[tuple[int, np.ndarray]], windows: list, vectors: list) -> None:
    """_embed from the kept whisper states (spans made relative to the first kept piece)."""
    spans = batch.windows[:, :2] - kept[0][0] * WHISPER_HOP_S
    _check_and_keep(embedder.embed_whisper_spans([states for _, states in kept], spans), embedder, path, batch, windows, vectors)


def stream_transcript(path: str, transcriber: Transcriber, chunk_s: float, on_chunk: Callable[[float], None] | None = None) -> list[TimedWord]:
    """A whole file's words, transcribed chunk by chunk as it streams."""
    streaming = StreamingTranscript(transcriber)
    for chunk in stream_audio(path, chunk_s=chunk_s):
        streaming.push(chunk.samples)
        if on_chunk is not None:
            on_chunk(chunk.duration_s)
    return streaming.finish()


def file_issue(path: str, exc: Exception) -> FileIssue:
    """How a file that raised `exc` while being indexed is reported."""
    if isinstance(exc, ArchiveSearchError):
        return FileIssue(path, getattr(exc, "reason", None) or str(exc))
    if isinstance(exc, OSError):
        return FileIssue(path, f"cannot be read: {exc.strerror or exc}")
    return FileIssue(path, f"failed: {type(exc).__name__}: {exc}")


def _embed(embedder: AudioEmbedder, path: str, batch: WindowBatch, windows: list, vectors: list) -> None:
    _check_and_keep(embedder.embed_spans(batch.samples, batch.spans), embedder, path, batch, windows, vectors)


def _check_and_keep(embedded, embedder: AudioEmbedder, path: str, batch: WindowBatch, windows: list, vectors: list) -> None:
    vectors.append(_checked(embedder, path, embedded, len(batch.spans)))
    windows.append(batch.windows)


def _checked(embedder: AudioEmbedder, path: str, embedded, count: int) -> np.ndarray:
    """The audio model's (count, dim) vectors, or AudioDecodeError naming the file."""
    embedded = np.asarray(embedded, dtype=np.float32)
    if embedded.shape != (count, embedder.dim):
        raise AudioDecodeError(path, f"the audio model returned shape {embedded.shape} for {count} windows")
    if not np.isfinite(embedded).all():
        raise AudioDecodeError(path, "the audio model returned non-finite vectors")
    return embedded


@dataclass
class _PendingFile:
    """A file embedded but not yet committed (put_file's arguments)."""

    path: str
    digest: str
    size: int
    mtime: float
    duration: float
    sample_rate: int
    windows: np.ndarray
    vectors: np.ndarray | None
    note: str | None
    replaces: bool
    words: list[TimedWord] | None


@functools.lru_cache(maxsize=65_536)
def _token_phonemes(token: str) -> str:
    return " ".join(word_phonemes(token))


def _transcript(model: str, words: list[TimedWord]) -> Transcript:
    return Transcript(model, [StoredWord(w.token, w.start, w.end, w.probability, _token_phonemes(w.token)) for w in words])


def index_settings(model_name: str, dim: int) -> IndexSettings:
    """Settings of a new index for a model, with this version's windowing."""
    return IndexSettings(model_name, dim, tuple(WINDOW_SCALES_S), WINDOW_HOP_FRACTION)


def _under(path: str, roots: list[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _native_rate(path: str) -> int:
    """The file's own sample rate (metadata only); 0 when unknown."""
    if not needs_ffmpeg(Path(path)):
        return probe(path).sample_rate
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return 0
    result = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=sample_rate", "-of", "csv=p=0", path],
        capture_output=True, text=True, check=False,
    )
    try:
        return int(result.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        return SAMPLE_RATE
