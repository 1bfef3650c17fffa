"""Test audio and fake models for the evaluation tests: every "word" is a pure tone of its own pitch.

The fakes read pitch the way a real model reads phonetics, so a protocol run on them has a
known right answer (a perfect fake scores EER 0 / AP 1) and a fake that ignores the audio has
a known wrong one. They implement the seams of `archive_search.embedders.base`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from archive_search.data.manifest import AlignedUnit, Utterance
from archive_search.embedders.g2p import pronounce

SR = 16_000
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")
PITCH = {word: 300.0 + 250.0 * i for i, word in enumerate(WORDS)}


def tone(word: str, seconds: float, rng: np.random.Generator | None = None) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    wave = 0.5 * np.sin(2 * np.pi * PITCH[word] * t)
    if rng is not None:
        wave = wave + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def sentence(words: list[str], rng: np.random.Generator, gap: float = 0.25) -> tuple[np.ndarray, list[AlignedUnit]]:
    """Tones separated by silent gaps, with their exact times."""
    pieces, units, now = [np.zeros(int(gap * SR), np.float32)], [], gap
    for word in words:
        seconds = float(rng.uniform(0.5, 0.8))
        pieces.append(tone(word, seconds, rng))
        units.append(AlignedUnit(word, round(now, 4), round(now + seconds, 4)))
        now += seconds
        pieces.append(np.zeros(int(gap * SR), np.float32))
        now += gap
    audio = np.concatenate(pieces)
    return audio, units


def write_corpus(folder: Path, scripts: list[list[str]], seed: int = 0) -> list[Utterance]:
    """Write one wav per script and return manifest utterances with word times."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    utterances = []
    for i, words in enumerate(scripts):
        audio, units = sentence(words, rng)
        path = folder / f"utt{i:02d}.wav"
        sf.write(path, audio, SR)
        utterances.append(Utterance(id=f"utt{i:02d}", audio=path.name, duration=len(audio) / SR, text=" ".join(words), words=units))
    return utterances


def pitch_profile(samples: np.ndarray) -> np.ndarray:
    """Energy near each word's pitch: a (len(WORDS),) vector, unit length unless silent."""
    if samples.size < 64:
        return np.zeros(len(WORDS), np.float32)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size))) ** 2
    freqs = np.fft.rfftfreq(samples.size, 1 / SR)
    energy = np.array([spectrum[np.abs(freqs - PITCH[w]) < 60].sum() for w in WORDS])
    energy = np.where(energy > 1e-3 * samples.size, energy, 0.0)
    norm = np.linalg.norm(energy)
    return (energy / norm if norm > 0 else energy).astype(np.float32)


class ToneAudioEmbedder:
    name = "tone-audio-v1"
    dim = len(WORDS)

    def embed_clips(self, clips):
        return np.stack([pitch_profile(np.asarray(c)) for c in clips])

    def embed_spans(self, samples, spans):
        return np.stack([pitch_profile(samples[int(s * SR) : int(e * SR)]) for s, e in np.asarray(spans)])


class ToneTextEmbedder:
    name = "tone-text-v1"
    dim = len(WORDS)

    def __init__(self, deaf: bool = False):
        self.deaf = deaf  # a broken model: every query gets the same vector
        self.lookup = {tuple(pronounce(w).phonemes): i for i, w in enumerate(WORDS)}

    def embed_phonemes(self, sequences):
        out = np.zeros((len(sequences), self.dim), np.float32)
        for row, phonemes in enumerate(sequences):
            index = 0 if self.deaf else self.lookup.get(tuple(phonemes))
            if index is not None:
                out[row, index] = 1.0
        return out


class ToneReranker:
    """Fraction of a region's pitch energy at the query word's pitch."""

    name = "tone-rerank-v1"

    def __init__(self):
        self.lookup = {tuple(pronounce(w).phonemes): i for i, w in enumerate(WORDS)}

    def score_text(self, regions, phonemes, words):
        index = self.lookup.get(tuple(phonemes))
        profiles = np.stack([pitch_profile(r) for r in regions])
        return profiles[:, index] if index is not None else np.zeros(len(regions))

    def score_audio(self, regions, query):
        target = pitch_profile(query)
        return np.stack([pitch_profile(r) for r in regions]) @ target
