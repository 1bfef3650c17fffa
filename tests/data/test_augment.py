"""Augmentations: timeline kept (or scaled as reported), seeded, and each does what it says."""

from __future__ import annotations

import numpy as np
import pytest

from archive_search.audio import SAMPLE_RATE
from archive_search.data import augment

N = 2 * SAMPLE_RATE


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SEARCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _speechlike(seed: int = 0) -> np.ndarray:
    """Bursts of harmonic tone (syllables) with silence between: onsets are easy to locate."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / SAMPLE_RATE
    x = np.zeros(N, dtype=np.float32)
    for start in (0.3, 0.8, 1.4):
        span = (t >= start) & (t < start + 0.25)
        x[span] = 0.3 * np.sin(2 * np.pi * 180 * t[span]) + 0.1 * np.sin(2 * np.pi * 2200 * t[span])
    return x + 1e-4 * rng.standard_normal(N).astype(np.float32)


def _envelope(x: np.ndarray, hop: int = 160) -> np.ndarray:
    frames = len(x) // hop
    env = np.sqrt((x[: frames * hop].reshape(frames, hop).astype(np.float64) ** 2).mean(axis=1))
    return env - env.mean()


def _lag(reference: np.ndarray, other: np.ndarray) -> int:
    """Lag (in 10 ms frames) that best aligns the loudness envelopes: pitch and codecs change the
    waveform but must not move the syllables."""
    a, b = _envelope(reference), _envelope(other)
    corr = np.correlate(b, a, mode="full")
    return int(np.argmax(corr)) - (len(a) - 1)


TIME_PRESERVING = [
    augment.pitch, augment.coloured_noise, augment.babble, augment.music, augment.reverb,
    augment.telephone, augment.podcast_band, augment.codec, augment.gain,
]  # fmt: skip


@pytest.mark.parametrize("function", TIME_PRESERVING, ids=lambda f: f.__name__)
def test_time_preserving_is_seeded_and_keeps_the_timeline(function):
    x = _speechlike()
    out, info = function(x, np.random.default_rng(3))
    again, info_again = function(x, np.random.default_rng(3))
    assert out.dtype == np.float32 and out.shape == x.shape and np.isfinite(out).all()
    assert np.array_equal(out, again) and info == info_again
    assert info["op"] == function.__name__ and "time_scale" not in info
    assert not np.allclose(out, x)
    assert abs(_lag(x, out)) <= 1  # within 10 ms: word times stay valid


def test_speed_reports_its_time_scale():
    x = _speechlike()
    out, info = augment.speed(x, np.random.default_rng(0), low=1.2, high=1.2)
    assert info["time_scale"] == pytest.approx(1 / 1.2, rel=1e-4)
    assert len(out) == pytest.approx(N * info["time_scale"], abs=2)
    # the burst at 0.8 s now starts at 0.8 * time_scale
    onset = np.flatnonzero(np.abs(out[int(0.6 * SAMPLE_RATE) :]) > 0.05)[0] / SAMPLE_RATE + 0.6
    assert onset == pytest.approx(0.8 * info["time_scale"], abs=0.01)
    assert augment.time_scale([info, {"op": "gain"}]) == info["time_scale"]


def test_pitch_moves_a_tone_by_the_reported_semitones():
    t = np.arange(N) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    out, info = augment.pitch(tone, np.random.default_rng(4), semitones=4.0)
    middle = out[SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + 8000]
    peak = np.argmax(np.abs(np.fft.rfft(middle))) * SAMPLE_RATE / len(middle)
    assert abs(info["semitones"]) > 0.5
    assert peak == pytest.approx(300 * 2 ** (info["semitones"] / 12), abs=4)


def test_noise_is_mixed_at_the_reported_snr():
    x = _speechlike()
    out, info = augment.coloured_noise(x, np.random.default_rng(1))
    noise = out - x
    snr = 20 * np.log10(np.sqrt(np.mean(x**2)) / np.sqrt(np.mean(noise**2)))
    assert snr == pytest.approx(info["snr_db"], abs=0.05)


def test_telephone_removes_high_frequencies():
    x = augment.coloured_noise(np.zeros(N, np.float32) + 1e-3, np.random.default_rng(0))[0]
    x = np.random.default_rng(2).standard_normal(N).astype(np.float32) * 0.1
    out, _ = augment.telephone(x, np.random.default_rng(0))
    freqs = np.fft.rfftfreq(N, 1 / SAMPLE_RATE)
    power = np.abs(np.fft.rfft(out)) ** 2
    assert power[freqs > 4500].mean() < 1e-3 * power[(freqs > 500) & (freqs < 3000)].mean()


def test_rirs_are_cached_and_start_at_the_direct_path(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SEARCH_CACHE", str(tmp_path))
    rirs = augment.simulated_rirs(count=3, seed=11)
    assert len(rirs) == 3 and all(np.argmax(np.abs(r)) == 0 for r in rirs)
    assert list(tmp_path.glob("rirs-3-11.npz"))
    augment.simulated_rirs.cache_clear()
    assert all(np.array_equal(a, b) for a, b in zip(rirs, augment.simulated_rirs(count=3, seed=11)))


def test_babble_voices_are_cached_and_read_back_without_espeak(tmp_path, monkeypatch):
    monkeypatch.setenv("ARCHIVE_SEARCH_CACHE", str(tmp_path))
    augment.babble_pool.cache_clear()
    clips = augment.babble_pool(count=2)
    assert len(clips) == 2 and all(len(c) > SAMPLE_RATE for c in clips)
    assert list(tmp_path.glob("babble-2.npz"))

    def no_synthesis(count):
        raise AssertionError("the cached voices should be read, not synthesized")

    monkeypatch.setattr(augment, "_synthesize_babble", no_synthesis)
    augment.babble_pool.cache_clear()
    assert all(np.array_equal(a, b) for a, b in zip(clips, augment.babble_pool(count=2)))
    augment.babble_pool.cache_clear()


def test_random_chain_records_its_steps():
    x = _speechlike()
    rng = np.random.default_rng(5)
    seen = set()
    for _ in range(30):
        out, steps = augment.random_augment_with_info(x, rng, allow_speed=True)
        seen.update(step["op"] for step in steps)
        assert len(out) == pytest.approx(N * augment.time_scale(steps), abs=2)
    assert {"speed", "reverb", "gain"} <= seen
    plain = augment.random_augment(x, np.random.default_rng(6))
    assert isinstance(plain, np.ndarray) and plain.shape == x.shape


@pytest.mark.parametrize("function", [augment.speed, *TIME_PRESERVING], ids=lambda f: f.__name__)
def test_empty_and_tiny_inputs(function):
    rng = np.random.default_rng(0)
    empty, info = function(np.zeros(0, np.float32), rng)
    assert len(empty) == 0 and info["skipped"] == "empty"
    tiny, _ = function(np.full(40, 0.1, np.float32), rng)
    assert np.isfinite(tiny).all() and (function is augment.speed or len(tiny) == 40)


def test_codec_survives_its_highest_compression_level():
    """Regression: libsndfile's mp3 encoder refused levels from about 0.9999 up, which killed a
    training run when the draw landed there."""

    class Highest:
        def choice(self, options):
            return options[0]

        def uniform(self, low, high):
            return high

    out, info = augment.codec(_speechlike(), Highest(), kinds=("mp3",))
    assert info["codec"] == "mp3" and info["level"] == round(augment.MAX_CODEC_LEVEL, 3)
    assert out.shape == (N,) and np.isfinite(out).all() and np.abs(out).max() > 0.05
