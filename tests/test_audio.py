"""Decoding, streaming, resampling and features of archive_search.audio, on audio made in the test."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from archive_search import audio
from archive_search.errors import AudioDecodeError


def tone(seconds: float, rate: int, frequency: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * frequency * t).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 96000])
def test_stream_resamples_to_16k_and_keeps_duration(tmp_path, rate):
    path = tmp_path / f"tone_{rate}.wav"
    sf.write(path, tone(2.5, rate), rate)
    chunks = list(audio.stream_audio(path, chunk_s=1.0))
    samples = np.concatenate([c.samples for c in chunks])
    assert samples.dtype == np.float32
    assert abs(len(samples) / audio.SAMPLE_RATE - 2.5) < 0.01
    starts = [c.start_s for c in chunks]
    assert starts == sorted(starts) and starts[0] == 0.0
    assert all(abs(b.start_s - (a.start_s + a.duration_s)) < 1e-9 for a, b in zip(chunks, chunks[1:]))


def test_stereo_is_mixed_to_mono_and_24bit_reads(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, tone(1.0, 16000, channels=2), 16000, subtype="PCM_24")
    samples = audio.load_audio(path)
    assert samples.ndim == 1 and len(samples) == 16000
    assert np.allclose(samples, tone(1.0, 16000), atol=1e-4)


def test_load_segment_matches_full_decode(tmp_path):
    path = tmp_path / "ramp.flac"
    signal = np.linspace(-0.5, 0.5, 3 * 16000, dtype=np.float32)
    sf.write(path, signal, 16000)
    segment = audio.load_segment(path, 1.0, 1.5)
    assert np.allclose(segment, signal[16000:24000], atol=1e-4)


def mp3_chirp(path, rate: int, channels: int = 1, seconds: float = 4.0):
    """A chirp (100 Hz to 4 kHz) as MP3 (libsndfile); its frames borrow bits from earlier frames."""
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * (100 * t + 3900 / (2 * seconds) * t**2))).astype(np.float32)
    sf.write(path, np.stack([mono] * channels, axis=1) if channels > 1 else mono, rate, format="MP3")
    return path


def test_mp3_regions_print_nothing_on_fd2(tmp_path, capfd):
    path = mp3_chirp(tmp_path / "chirp.mp3", 16000)
    for start in (0.5, 1.1, 1.7, 2.3, 2.9, 3.3):
        audio.load_segment(path, start, start + 0.5)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("rate, channels", [(16000, 1), (44100, 2)])
def test_mp3_region_matches_full_decode(tmp_path, rate, channels):
    path = mp3_chirp(tmp_path / "chirp.mp3", rate, channels)
    full = audio.load_audio(path)
    end = len(full) / audio.SAMPLE_RATE
    for start in (0.0, 0.37, 1.0, 2.513, end - 0.6):
        segment = audio.load_segment(path, start, start + 0.6)
        first = int(start * audio.SAMPLE_RATE)
        reference = full[first : int((start + 0.6) * audio.SAMPLE_RATE)]
        assert len(segment) == len(reference) == int((start + 0.6) * audio.SAMPLE_RATE) - first
        error = np.sqrt(np.mean((segment - reference) ** 2)) / np.sqrt(np.mean(reference**2))
        assert error < 1e-3, (start, error)
    tail = audio.load_segment(path, end - 0.3, end + 1.0)
    assert len(tail) == len(full) - int((end - 0.3) * audio.SAMPLE_RATE)


def test_stderr_of_others_survives_mp3_decoding(capfd):
    with audio._without_libmpg123_messages():
        os.write(2, b"[src/libmpg123/layer3.c:INT123_do_layer3():1774] error: part2_3_length\nkept\n")
    assert capfd.readouterr().err == "kept\n"


def test_non_audio_file_names_the_file(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(AudioDecodeError) as info:
        audio.load_audio(path)
    assert str(path) in str(info.value)


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty.flac"):
        audio.probe(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by scripts/setup.sh")
def test_m4a_decodes_through_ffmpeg(tmp_path):
    wav = tmp_path / "source.wav"
    sf.write(wav, tone(1.5, 44100), 44100)
    m4a = tmp_path / "clip.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), "-c:a", "aac", str(m4a)], check=True)
    samples = np.concatenate([c.samples for c in audio.stream_audio(m4a, chunk_s=0.5)])
    assert abs(len(samples) / audio.SAMPLE_RATE - 1.5) < 0.1
    assert abs(audio.probe(m4a).duration_s - 1.5) < 0.1


def test_log_mel_shape_and_frame_rate():
    config = audio.FeatureConfig(n_mels=40)
    frames = audio.log_mel(tone(1.0, 16000), config)
    assert frames.shape == (16000 // config.hop_samples + 1, 40)
    assert audio.seconds_to_frames(0.5, config) == 50


def test_trim_silence_removes_padding():
    padded = np.concatenate([np.zeros(8000, np.float32), tone(0.5, 16000), np.zeros(8000, np.float32)])
    trimmed = audio.trim_silence(padded)
    assert 0.45 * 16000 < len(trimmed) < 0.7 * 16000
