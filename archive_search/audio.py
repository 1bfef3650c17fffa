"""Audio decoding, streaming, resampling and frame features.

Every audio constant of the engine lives here, with its unit. Times are seconds (float)
everywhere in the project; sample counts appear only inside this module and the models'
front-ends.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr
import torch
import torchaudio

from archive_search.errors import AudioDecodeError

SAMPLE_RATE = 16_000
"""Hz. Every model and window works at this rate; input is resampled on decode."""

FRAME_WINDOW_S = 0.025
"""Seconds. Analysis window of the log-mel / fbank front-ends (both papers: 25 ms)."""

FRAME_HOP_S = 0.010
"""Seconds. Frame shift of the log-mel / fbank front-ends (both papers: 10 ms)."""

STREAM_CHUNK_S = 60.0
"""Seconds of audio decoded at once when streaming a long file; bounds indexing memory."""

MIN_AUDIO_S = 0.1
"""Seconds. Anything shorter holds no word and is rejected as too short."""

SOUNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".opus"})
"""Read directly by libsndfile."""

FFMPEG_EXTENSIONS = frozenset({".m4a", ".aac", ".mp4", ".wma", ".webm"})
"""Need the ffmpeg program to decode."""

AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS

MP3_LEAD_IN_S = 0.5
"""Seconds decoded and dropped before an MP3 region: a frame may take bits from up to 511 bytes
earlier (the bit reservoir, <= 0.26 s at the lowest bitrates), so decoding starts that far back."""

RESAMPLE_CONTEXT_S = 0.02
"""Seconds of neighbouring audio resampled with a region, so its edges match a whole-file decode."""


@dataclass(frozen=True)
class FeatureConfig:
    """How a model turns 16 kHz samples into frames; stored in every checkpoint."""

    sample_rate: int = SAMPLE_RATE
    n_mels: int = 80
    window_s: float = FRAME_WINDOW_S
    hop_s: float = FRAME_HOP_S

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds before decoding: native rate, channels, duration in seconds."""

    path: Path
    sample_rate: int
    channels: int
    duration_s: float


@dataclass(frozen=True)
class AudioChunk:
    """A run of decoded 16 kHz mono samples starting at `start_s` in its file."""

    start_s: float
    samples: np.ndarray  # (S,) float32

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def needs_ffmpeg(path: Path) -> bool:
    return Path(path).suffix.lower() in FFMPEG_EXTENSIONS


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header; raises AudioDecodeError naming the file when it is not audio."""
    path = Path(path)
    if needs_ffmpeg(path):
        return _probe_ffmpeg(path)
    try:
        info = sf.info(os.fsencode(path))
    except Exception as exc:  # libsndfile raises several types for bad files
        raise AudioDecodeError(path, _soundfile_reason(exc)) from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioDecodeError(path, "holds no audio frames")
    return AudioInfo(path, int(info.samplerate), int(info.channels), info.frames / info.samplerate)


def stream_audio(
    path: str | Path, chunk_s: float = STREAM_CHUNK_S, sample_rate: int = SAMPLE_RATE
) -> Iterator[AudioChunk]:
    """Yield consecutive mono chunks at `sample_rate`; memory stays bounded by `chunk_s`."""
    path = Path(path)
    if needs_ffmpeg(path):
        yield from _stream_ffmpeg(path, chunk_s, sample_rate)
        return
    try:
        handle = sf.SoundFile(os.fsencode(path))
    except Exception as exc:
        raise AudioDecodeError(path, _soundfile_reason(exc)) from exc
    with handle:
        native_rate = int(handle.samplerate)
        resampler = None
        if native_rate != sample_rate:
            resampler = soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32")
        block = max(1, int(chunk_s * native_rate))
        emitted = 0
        while True:
            try:
                data = handle.read(block, dtype="float32", always_2d=True)
            except Exception as exc:
                raise AudioDecodeError(path, f"decoding failed after {emitted / sample_rate:.1f} s: {exc}") from exc
            last = len(data) < block
            mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            if resampler is not None:
                mono = resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
            if len(mono):
                yield AudioChunk(emitted / sample_rate, np.ascontiguousarray(mono, dtype=np.float32))
                emitted += len(mono)
            if last:
                break


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a whole file to mono float32 at `sample_rate`. For short files and clips."""
    chunks = [chunk.samples for chunk in stream_audio(path, sample_rate=sample_rate)]
    if not chunks:
        raise AudioDecodeError(Path(path), "holds no audio frames")
    return np.concatenate(chunks)


def load_segment(path: str | Path, start_s: float, end_s: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode only [start_s, end_s) of a file, seeking where the format allows it.

    Sample k of the result is sample int(start_s * sample_rate) + k of `load_audio(path)`.
    """
    path = Path(path)
    start_s = max(0.0, start_s)
    if needs_ffmpeg(path):
        return _ffmpeg_decode(path, sample_rate, start_s=start_s, duration_s=max(0.0, end_s - start_s))
    first = int(start_s * sample_rate)
    count = max(0, int(end_s * sample_rate) - first)
    try:
        with sf.SoundFile(os.fsencode(path)) as handle:
            native_rate = int(handle.samplerate)
            mp3 = handle.format == "MP3"
            context_s = RESAMPLE_CONTEXT_S if native_rate != sample_rate else 0.0
            lead_s = max(MP3_LEAD_IN_S if mp3 else 0.0, context_s)
            # Start on an output sample that falls on a whole native sample, so the resampled
            # region lies on the same grid as a whole-file decode.
            grid = sample_rate // math.gcd(native_rate, sample_rate)
            begin = max(0, first - int(lead_s * sample_rate)) // grid * grid
            native_begin = min(begin * native_rate // sample_rate, handle.frames)
            native_end = math.ceil((first + count + context_s * sample_rate) * native_rate / sample_rate)
            # libmpg123 reports each frame whose reservoir bits lie before the seek point; those
            # frames are in the dropped lead-in.
            with _without_libmpg123_messages() if mp3 else nullcontext():
                handle.seek(native_begin)
                data = handle.read(max(0, native_end - native_begin), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioDecodeError(path, _soundfile_reason(exc)) from exc
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if native_rate != sample_rate and len(mono):
        mono = soxr.resample(mono, native_rate, sample_rate)
    return np.ascontiguousarray(mono[first - begin : first - begin + count], dtype=np.float32)


_STDERR_LOCK = threading.Lock()  # interleaved redirects would leave fd 2 on a closed file


@contextmanager
def _without_libmpg123_messages() -> Iterator[None]:
    """Catch file descriptor 2 (libmpg123 writes there from C), then pass on all but libmpg123's lines."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as caught:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = b"".join(line for line in caught if b"libmpg123" not in line)
            if kept:
                with open(2, "wb", closefd=False) as stderr:
                    stderr.write(kept)


def resample(samples: np.ndarray, from_rate: int, to_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Resample a whole mono array (soxr, high quality)."""
    if from_rate == to_rate:
        return samples.astype(np.float32, copy=False)
    return soxr.resample(samples.astype(np.float32, copy=False), from_rate, to_rate).astype(np.float32)


def trim_silence(samples: np.ndarray, top_db: float = 35.0) -> np.ndarray:
    """Cut leading and trailing silence (for query clips); keeps everything if all is quiet."""
    import librosa

    if len(samples) == 0:
        return samples
    trimmed, _ = librosa.effects.trim(samples, top_db=top_db, frame_length=400, hop_length=160)
    return trimmed if len(trimmed) else samples


_MEL_CACHE: dict[tuple, torchaudio.transforms.MelSpectrogram] = {}


def log_mel(samples: np.ndarray | torch.Tensor, config: FeatureConfig) -> torch.Tensor:
    """Log-mel filterbank frames of mono 16 kHz samples: (S,) -> (T, n_mels), T = S // hop + 1."""
    key = (config.sample_rate, config.n_mels, config.window_samples, config.hop_samples)
    transform = _MEL_CACHE.get(key)
    if transform is None:
        transform = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=512,
            win_length=config.window_samples,
            hop_length=config.hop_samples,
            n_mels=config.n_mels,
            window_fn=torch.hann_window,
            power=2.0,
            center=True,
        )
        _MEL_CACHE[key] = transform
    wave = torch.as_tensor(samples, dtype=torch.float32)
    with torch.no_grad():
        mel = transform(wave)
    return torch.log(mel + 1e-6).transpose(-1, -2).contiguous()


def seconds_to_frames(seconds: float, config: FeatureConfig) -> int:
    """Index of the frame that starts at `seconds` (frames are centred, hop-spaced)."""
    return int(round(seconds / config.hop_s))


def _soundfile_reason(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "Format not recognised" in text or "unknown format" in text.lower():
        return "is not a recognised audio format"
    if "Permission denied" in text:
        return "cannot be read: permission denied"
    if "No such file" in text or "System error" in text and "No such file" in text:
        return "does not exist"
    return f"cannot be decoded: {text}"


def _ffmpeg_binary(path: Path) -> str:
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise AudioDecodeError(path, "needs ffmpeg to decode, and ffmpeg is not installed (apt-get install ffmpeg)")
    return binary


def _ffmpeg_command(path: Path, sample_rate: int, start_s: float = 0.0, duration_s: float | None = None) -> list[str]:
    command = [_ffmpeg_binary(path), "-nostdin", "-v", "error"]
    if start_s > 0:
        command += ["-ss", f"{start_s:.3f}"]
    command += ["-i", str(path)]
    if duration_s is not None:
        command += ["-t", f"{duration_s:.3f}"]
    return command + ["-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "-"]


def _probe_ffmpeg(path: Path) -> AudioInfo:
    if not path.is_file():
        raise AudioDecodeError(path, "does not exist")
    samples = _ffmpeg_decode(path, SAMPLE_RATE)
    return AudioInfo(path, SAMPLE_RATE, 1, len(samples) / SAMPLE_RATE)


def _ffmpeg_decode(path: Path, sample_rate: int, start_s: float = 0.0, duration_s: float | None = None) -> np.ndarray:
    result = subprocess.run(
        _ffmpeg_command(path, sample_rate, start_s, duration_s), capture_output=True, check=False
    )
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioDecodeError(path, f"ffmpeg could not decode it: {reason[-1] if reason else 'unknown error'}")
    samples = np.frombuffer(result.stdout, dtype=np.float32).copy()
    if start_s == 0.0 and len(samples) == 0:
        raise AudioDecodeError(path, "holds no audio frames")
    return samples


def _stream_ffmpeg(path: Path, chunk_s: float, sample_rate: int) -> Iterator[AudioChunk]:
    process = subprocess.Popen(
        _ffmpeg_command(path, sample_rate), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    chunk_bytes = int(chunk_s * sample_rate) * 4
    emitted = 0
    try:
        assert process.stdout is not None
        while True:
            raw = process.stdout.read(chunk_bytes)
            if not raw:
                break
            samples = np.frombuffer(raw[: len(raw) // 4 * 4], dtype=np.float32).copy()
            yield AudioChunk(emitted / sample_rate, samples)
            emitted += len(samples)
    finally:
        if process.stdout:
            process.stdout.close()
        stderr = process.stderr.read().decode("utf-8", "replace") if process.stderr else ""
        code = process.wait()
    if code != 0:
        lines = stderr.strip().splitlines()
        raise AudioDecodeError(path, f"ffmpeg could not decode it: {lines[-1] if lines else 'unknown error'}")
    if emitted == 0:
        raise AudioDecodeError(path, "holds no audio frames")


WINDOW_SCALES_S: tuple[float, ...] = (0.5, 1.0, 1.6)
"""Seconds. Fixed window lengths the indexer cuts: one short word, 1-2 words, 3-4 words."""

WINDOW_HOP_FRACTION = 1 / 3
"""Each scale's hop as a fraction of its length, so every spoken word lies whole in some window."""

REGION_CONTEXT_S = 0.3
"""Seconds of audio added on each side of a merged candidate region before reranking."""

PLAY_CONTEXT_S = 1.0
"""Seconds of audio played on each side of a hit, so a listener hears the word in its sentence."""

MAX_PLAY_S = 60.0
"""Seconds. The longest stretch of an indexed file served for listening (a hit plus context is a few)."""
