"""On-the-fly audio augmentation for training: each function takes 16 kHz mono float32 samples
and a seeded `np.random.Generator`, and returns (new samples, description dict).

Every function keeps the timeline (word times stay valid) except `speed`, whose description
holds `time_scale`: multiply alignment times by it. `random_augment` draws a chain of the
time-preserving ones; it is what the trainers call per example.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import soxr
from scipy import signal

from archive_search.audio import SAMPLE_RATE
from archive_search.errors import MissingToolError

Augmented = tuple[np.ndarray, dict]


def _nonempty(function):
    """Empty input comes back unchanged (with a description saying so) instead of failing."""

    @functools.wraps(function)
    def wrapper(samples: np.ndarray, rng: np.random.Generator, *args, **kwargs) -> Augmented:
        if len(samples) == 0:
            return _f32(samples), {"op": function.__name__, "skipped": "empty"}
        return function(samples, rng, *args, **kwargs)

    return wrapper


def _f32(samples: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(samples, dtype=np.float32)


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0


def _mix(samples: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add `noise` scaled to the given signal-to-noise ratio (dB, by RMS)."""
    speech, level = _rms(samples), _rms(noise)
    if speech == 0.0 or level == 0.0:
        return _f32(samples)
    scale = speech / (level * 10 ** (snr_db / 20))
    return _f32(samples + scale * noise[: len(samples)])


# ----------------------------------------------------------------------------- tempo and pitch


@_nonempty
def speed(samples: np.ndarray, rng: np.random.Generator, low: float = 0.85, high: float = 1.15) -> Augmented:
    """Speed perturbation by resampling (tempo and pitch together, as Kaldi's): factor > 1 is
    faster. Alignment times must be multiplied by the returned `time_scale` (= 1 / factor)."""
    factor = float(rng.uniform(low, high))
    return change_speed(samples, factor), {"op": "speed", "factor": round(factor, 4), "time_scale": round(1 / factor, 6)}


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play `samples` `factor` times faster (tempo and pitch together): the result lasts
    len(samples) / factor samples."""
    return _f32(soxr.resample(_f32(samples), SAMPLE_RATE * factor, SAMPLE_RATE))


_PV_FFT, _PV_HOP = 512, 128
"""Phase vocoder STFT for pitch shifts: 32 ms windows, 8 ms hop (a longer window smears onsets)."""


def _phase_vocoder(spectrum: np.ndarray, rate: float) -> np.ndarray:
    """Time-stretch an STFT (bins, frames) by `rate` (< 1 = longer), keeping phase coherent."""
    bins, frames = spectrum.shape
    steps = np.arange(0, frames, rate)
    advance = np.linspace(0, np.pi * _PV_HOP, bins)
    padded = np.pad(spectrum, [(0, 0), (0, 2)])
    phase = np.angle(padded[:, 0])
    out = np.empty((bins, len(steps)), dtype=np.complex64)
    for t, step in enumerate(steps):
        left, right = padded[:, int(step)], padded[:, int(step) + 1]
        alpha = step - int(step)
        out[:, t] = ((1 - alpha) * np.abs(left) + alpha * np.abs(right)) * np.exp(1j * phase)
        delta = np.angle(right) - np.angle(left) - advance
        phase = phase + advance + (delta - 2 * np.pi * np.round(delta / (2 * np.pi)))
    return out


@_nonempty
def pitch(samples: np.ndarray, rng: np.random.Generator, semitones: float = 3.0) -> Augmented:
    """Pitch shift by up to +-`semitones` without changing duration: phase-vocoder stretch by the
    pitch ratio, then resample back (numpy/scipy/soxr; no JIT warm-up)."""
    steps = float(rng.uniform(-semitones, semitones))
    if len(samples) < _PV_FFT:
        return _f32(samples), {"op": "pitch", "semitones": 0.0}
    ratio = 2 ** (steps / 12)
    overlap = _PV_FFT - _PV_HOP
    _, _, spectrum = signal.stft(samples, nperseg=_PV_FFT, noverlap=overlap)
    _, stretched = signal.istft(_phase_vocoder(spectrum, 1 / ratio), nperseg=_PV_FFT, noverlap=overlap)
    out = soxr.resample(_f32(stretched), SAMPLE_RATE * ratio, SAMPLE_RATE)[: len(samples)]
    out = np.pad(out, (0, len(samples) - len(out)))
    return _f32(out), {"op": "pitch", "semitones": round(steps, 3)}


# ----------------------------------------------------------------------------- additive noise


@_nonempty
def coloured_noise(
    samples: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (5.0, 25.0)
) -> Augmented:
    """Noise with a 1/f^beta spectrum (beta 0 white, 1 pink, 2 brown) at a random SNR."""
    beta = float(rng.uniform(0.0, 2.0))
    n = len(samples)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (beta / 2), n=n)
    snr = float(rng.uniform(*snr_db))
    return _mix(samples, noise, snr), {"op": "coloured_noise", "beta": round(beta, 3), "snr_db": round(snr, 2)}


@_nonempty
def babble(
    samples: np.ndarray,
    rng: np.random.Generator,
    pool: Sequence[np.ndarray] | None = None,
    talkers: tuple[int, int] = (3, 7),
    snr_db: tuple[float, float] = (5.0, 20.0),
) -> Augmented:
    """Several other voices talking at once (crops of `pool`, default: synthetic sentences)."""
    pool = list(pool) if pool is not None else list(babble_pool())
    count = int(rng.integers(talkers[0], talkers[1] + 1))
    n = len(samples)
    mixture = np.zeros(n, dtype=np.float64)
    for _ in range(count):
        clip = pool[int(rng.integers(len(pool)))]
        if len(clip) == 0:
            continue
        reps = int(np.ceil((n + len(clip)) / len(clip)))
        tiled = np.tile(clip, reps)
        offset = int(rng.integers(len(clip)))
        piece = tiled[offset : offset + n]
        mixture += piece / max(_rms(piece), 1e-6)
    snr = float(rng.uniform(*snr_db))
    return _mix(samples, mixture, snr), {"op": "babble", "talkers": count, "snr_db": round(snr, 2)}


@functools.lru_cache(maxsize=1)
def babble_pool(count: int = 12) -> tuple[np.ndarray, ...]:
    """Sentences spoken by assorted training voices, synthesized once (espeak-ng) and cached on
    disk beside the room responses, so a machine without espeak-ng can train from the cache."""
    path = cache_root() / f"babble-{count}.npz"
    if path.is_file():
        with np.load(path) as data:
            return tuple(data[f"clip{k}"] for k in range(count))
    clips = _synthesize_babble(count)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **{f"clip{k}": clip for k, clip in enumerate(clips)})
    return clips


def _synthesize_babble(count: int) -> tuple[np.ndarray, ...]:
    from archive_search.audio import resample
    from archive_search.data.tts import Voice, _espeak

    engine = _espeak()  # raw audio only: babble needs no alignment (and no dictionary load)
    sentences = [
        "we talked about the weather and the long road home",
        "she opened the window and looked at the garden",
        "they said the meeting would start after lunch today",
        "my brother bought a small boat last summer",
        "the children were playing near the old bridge",
        "please put the books back on the second shelf",
    ]
    variants = ["m1", "f1", "m3", "f3", "m7", "f2", "klatt", "m2", "f5", "m4", "klatt2", "m5"]
    languages = ["en-us", "en", "en-gb-x-rp", "en-us-nyc"]
    clips = []
    for k in range(count):
        voice = Voice("espeak", languages[k % len(languages)], variants[k % len(variants)], 1.0 + 0.05 * (k % 4), 0.9 + 0.05 * (k % 5))
        raw, _ = engine.speak(sentences[k % len(sentences)], voice)
        clips.append(resample(raw.astype(np.float32) / 32768.0, engine.sample_rate, SAMPLE_RATE))
    return tuple(clips)


@_nonempty
def music(samples: np.ndarray, rng: np.random.Generator, snr_db: tuple[float, float] = (5.0, 20.0)) -> Augmented:
    """Music-like background: a melody of harmonic notes over chords, with enveloped beats."""
    n = len(samples)
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    note_s = float(rng.uniform(0.15, 0.5))
    root = float(rng.uniform(110, 330))
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    start = 0
    while start < n:
        length = int(note_s * SAMPLE_RATE)
        stop = min(n, start + length)
        local = t[: stop - start]
        envelope = np.exp(-local * rng.uniform(2, 8))
        chord = root * 2 ** (rng.choice(scale, size=int(rng.integers(1, 4)), replace=False) / 12)
        for f0 in chord:
            for harmonic in range(1, 5):
                out[start:stop] += envelope * np.sin(2 * np.pi * f0 * harmonic * local + rng.uniform(0, 6.3)) / harmonic**1.5
        start = stop
    if rng.random() < 0.5:  # a drum-like noise burst on every other note
        beat = int(2 * note_s * SAMPLE_RATE)
        for position in range(0, n, max(beat, 1)):
            burst = min(n - position, 800)
            out[position : position + burst] += rng.standard_normal(burst) * np.exp(-np.arange(burst) / 150) * 0.8
    snr = float(rng.uniform(*snr_db))
    return _mix(samples, out, snr), {"op": "music", "root_hz": round(root, 1), "note_s": round(note_s, 3), "snr_db": round(snr, 2)}


# ----------------------------------------------------------------------------- reverberation


def cache_root() -> Path:
    """Where derived data is cached between runs: $ARCHIVE_SEARCH_CACHE, else the user cache."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("ARCHIVE_SEARCH_CACHE", user_cache_dir("archive-search")))


@functools.lru_cache(maxsize=4)
def simulated_rirs(count: int = 24, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Room impulse responses of random shoebox rooms (pyroomacoustics image source method),
    RT60 0.15-0.9 s; made once and cached on disk. Each starts at its direct path."""
    path = cache_root() / f"rirs-{count}-{seed}.npz"
    if path.is_file():
        with np.load(path) as data:
            return tuple(data[f"rir{k}"] for k in range(count))
    import pyroomacoustics as pra

    rng = np.random.default_rng(seed)
    rirs = []
    while len(rirs) < count:
        dims = rng.uniform([3.0, 3.0, 2.4], [10.0, 8.0, 4.0])
        rt60 = float(rng.uniform(0.15, 0.9))
        try:
            absorption, max_order = pra.inverse_sabine(rt60, dims)
        except ValueError:  # a reverberation time this room cannot have
            continue
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(max_order, 17))
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], dtype=np.float32)
        rir = rir[int(np.argmax(np.abs(rir))) :]  # start at the direct path: no delay added
        rirs.append(_f32(rir / np.abs(rir).max()))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
    np.savez(temporary, **{f"rir{k}": r for k, r in enumerate(rirs)})
    os.replace(temporary, path)
    return tuple(rirs)


@_nonempty
def reverb(samples: np.ndarray, rng: np.random.Generator, rirs: Sequence[np.ndarray] | None = None) -> Augmented:
    """Convolve with a simulated room impulse response; same length and level, no delay."""
    bank = rirs if rirs is not None else simulated_rirs()
    index = int(rng.integers(len(bank)))
    wet = signal.fftconvolve(samples, bank[index])[: len(samples)]
    wet *= _rms(samples) / max(_rms(wet), 1e-9)
    return _f32(wet), {"op": "reverb", "rir": index}


# ----------------------------------------------------------------------------- channels


@functools.lru_cache(maxsize=32)
def _band(low: float | None, high: float | None, order: int = 4) -> np.ndarray:
    if low and high:
        return signal.butter(order, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    if low:
        return signal.butter(order, low, btype="highpass", fs=SAMPLE_RATE, output="sos")
    return signal.butter(order, high, btype="lowpass", fs=SAMPLE_RATE, output="sos")


@_nonempty
def telephone(samples: np.ndarray, rng: np.random.Generator) -> Augmented:
    """Narrow-band telephone channel: 300-3400 Hz, 8 kHz sampling, optional mu-law companding."""
    low, high = float(rng.uniform(200, 400)), float(rng.uniform(3000, 3600))
    out = signal.sosfilt(_band(round(low), round(high)), samples)
    narrow = soxr.resample(_f32(out), SAMPLE_RATE, 8000)
    mulaw = bool(rng.random() < 0.5)
    if mulaw:  # 8-bit mu-law as on G.711 lines
        mu = 255.0
        peak = max(float(np.abs(narrow).max()), 1e-9)
        x = narrow / peak
        coded = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127) / 127
        narrow = np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu * peak
    out = soxr.resample(_f32(narrow), 8000, SAMPLE_RATE)[: len(samples)]
    out = np.pad(out, (0, len(samples) - len(out)))
    return _f32(out), {"op": "telephone", "low_hz": round(low), "high_hz": round(high), "mulaw": mulaw}


@_nonempty
def podcast_band(samples: np.ndarray, rng: np.random.Generator) -> Augmented:
    """A podcast/voice chain: high-pass rumble filter, low-pass 4-7.5 kHz, light compression."""
    low, high = float(rng.uniform(50, 150)), float(rng.uniform(4000, 7500))
    out = signal.sosfilt(_band(round(low), round(high)), samples)
    drive = float(rng.uniform(1.0, 4.0))
    peak = max(float(np.abs(out).max()), 1e-9)
    out = np.tanh(drive * out / peak) / np.tanh(drive) * peak  # soft-knee compression
    return _f32(out), {"op": "podcast_band", "low_hz": round(low), "high_hz": round(high), "drive": round(drive, 2)}


MAX_CODEC_LEVEL = 0.999
"""Highest libsndfile compression level drawn (see `codec`)."""


@_nonempty
def codec(
    samples: np.ndarray, rng: np.random.Generator, kinds: Sequence[str] = ("mp3", "opus")
) -> Augmented:
    """Round trip through a lossy codec at a low bitrate, in memory with libsndfile (mp3 about
    20-40 kbps, opus about 15-35 kbps); decoders drop the encoder delay, so the timeline is kept."""
    import soundfile as sf

    kind = str(rng.choice(list(kinds)))
    # libsndfile's compression level, 1 = lowest bitrate; opus only gets low above about 0.85.
    # Capped below 1: libsndfile's LAME refuses mp3 levels from about 0.9999 up.
    level = float(rng.uniform(0.5, MAX_CODEC_LEVEL) if kind == "mp3" else rng.uniform(0.88, MAX_CODEC_LEVEL))
    format_, subtype = ("MP3", "MPEG_LAYER_III") if kind == "mp3" else ("OGG", "OPUS")
    buffer = io.BytesIO()
    try:
        sf.write(buffer, np.clip(samples, -1, 1), SAMPLE_RATE, format=format_, subtype=subtype, compression_level=level)
    except (sf.LibsndfileError, ValueError, TypeError) as exc:
        raise MissingToolError(f"this libsndfile cannot encode {kind} ({exc}); soundfile >= 0.12 bundles one that can") from exc
    kbps = buffer.tell() * 8 / max(len(samples) / SAMPLE_RATE, 1e-3) / 1000
    buffer.seek(0)
    out, _ = sf.read(buffer, dtype="float32")
    out = out[: len(samples)] if out.ndim == 1 else out[: len(samples), 0]
    out = np.pad(out, (0, len(samples) - len(out)))
    return _f32(out), {"op": "codec", "codec": kind, "level": round(level, 3), "kbps": round(kbps, 1)}


@_nonempty
def gain(samples: np.ndarray, rng: np.random.Generator, low_db: float = -18.0, high_db: float = 6.0) -> Augmented:
    """Scale by a random gain in dB; what would exceed full scale is clipped, as a recorder would."""
    db = float(rng.uniform(low_db, high_db))
    return _f32(np.clip(samples * 10 ** (db / 20), -1.0, 1.0)), {"op": "gain", "db": round(db, 2)}


# ----------------------------------------------------------------------------- chains

TIME_PRESERVING = {
    "pitch": 0.15,
    "reverb": 0.3,
    "noise": 0.45,  # one of coloured noise, babble, music
    "channel": 0.25,  # one of telephone, podcast band
    "codec": 0.1,
    "gain": 0.5,
}
"""Probability of each step of `random_augment`."""


def random_augment_with_info(
    samples: np.ndarray, rng: np.random.Generator, allow_speed: bool = False, probabilities: dict | None = None
) -> tuple[np.ndarray, list[dict]]:
    """Apply a random chain; returns (samples, [description of each applied step]). With
    `allow_speed`, a speed step may come first: scale alignment times by its `time_scale`."""
    p = {**TIME_PRESERVING, **(probabilities or {})}
    applied: list[dict] = []
    out = _f32(samples)
    if len(out) == 0:
        return out, applied

    def step(function, *args):
        nonlocal out
        out, info = function(out, rng, *args)
        applied.append(info)

    if allow_speed and rng.random() < p.get("speed", 0.3):
        step(speed)
    if rng.random() < p["pitch"]:
        step(pitch)
    if rng.random() < p["reverb"]:
        step(reverb)
    if rng.random() < p["noise"]:
        draw = rng.random()
        step(coloured_noise if draw < 0.5 else babble if draw < 0.8 else music)
    if rng.random() < p["channel"]:
        step(telephone if rng.random() < 0.4 else podcast_band)
    if rng.random() < p["codec"]:
        step(codec)
    if rng.random() < p["gain"]:
        step(gain)
    return out, applied


def random_augment(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random time-preserving augmentation chain (the trainers' per-example hook)."""
    return random_augment_with_info(samples, rng)[0]


def time_scale(steps: Sequence[dict]) -> float:
    """The factor to multiply alignment times by after a chain of `steps`."""
    scale = 1.0
    for info in steps:
        scale *= float(info.get("time_scale", 1.0))
    return scale
