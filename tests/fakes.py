"""Deterministic stand-ins for the trained models, and audio made in code.

FakeAudioEmbedder is a fixed function of a window's samples (log band energies, centred), so
identical audio gives identical vectors and a copied clip finds its source. OracleTextEmbedder
maps a word to the audio vector of a reference recording of it, which lets text search be
tested end to end without a trained text encoder. FakeReranker scores a region by its best
sub-window's similarity to the query's reference audio.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence

import numpy as np

from archive_search.audio import SAMPLE_RATE
from archive_search.embedders.registry import ModelBundle

N_BANDS = 32
DIM = 2 * N_BANDS
_FFT = 512
_HOP = 160


def band_energies(samples: np.ndarray) -> np.ndarray:
    """Mean power in N_BANDS linear bands up to 4 kHz of a mono 16 kHz signal: (N_BANDS,)."""
    samples = np.asarray(samples, dtype=np.float32)
    if len(samples) < _FFT:
        samples = np.pad(samples, (0, _FFT - len(samples)))
    count = 1 + (len(samples) - _FFT) // _HOP
    frames = np.lib.stride_tricks.as_strided(
        samples, shape=(count, _FFT), strides=(samples.strides[0] * _HOP, samples.strides[0])
    )
    power = np.abs(np.fft.rfft(frames * np.hanning(_FFT), axis=1)) ** 2
    bins = power[:, : _FFT // 4].mean(axis=0)  # 0-4 kHz
    return bins.reshape(N_BANDS, -1).mean(axis=1)


def _half(samples: np.ndarray) -> np.ndarray:
    bands = np.log(band_energies(samples) + 1e-8)
    bands = bands - bands.mean()
    norm = np.linalg.norm(bands)
    return bands / norm if norm > 0 else np.zeros(N_BANDS)


def embed_signal(samples: np.ndarray) -> np.ndarray:
    """Centred log band energies of each half of the signal, concatenated, unit length: (DIM,).

    Two halves make the vector depend on where in a window the sound is, so a window that
    holds a whole word scores above one that holds its last tenth.
    """
    middle = len(samples) // 2
    vector = np.concatenate([_half(samples[:middle]), _half(samples[middle:])])
    norm = np.linalg.norm(vector)
    return (vector / norm if norm > 0 else np.full(DIM, 1 / np.sqrt(DIM))).astype(np.float32)


class FakeAudioEmbedder:
    """Deterministic audio embedder: a fixed function of the samples (see embed_signal)."""

    def __init__(self, name: str = "fake-v1"):
        self.name = name
        self.dim = DIM
        self.calls = 0

    def embed_spans(self, samples: np.ndarray, spans: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self._embed(samples, spans)

    def _embed(self, samples: np.ndarray, spans: np.ndarray) -> np.ndarray:
        out = np.zeros((len(spans), self.dim), np.float32)
        for row, (start, end) in enumerate(np.asarray(spans, dtype=np.float64)):
            a, b = int(round(start * SAMPLE_RATE)), int(round(end * SAMPLE_RATE))
            out[row] = embed_signal(samples[max(0, a) : b])
        return out

    def embed_clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        return np.stack([embed_signal(clip) for clip in clips]).astype(np.float32)


class OracleTextEmbedder:
    """Text -> the audio vector of a reference recording of the words (else a hashed vector)."""

    def __init__(self, audio: FakeAudioEmbedder, lexicon: dict[str, np.ndarray] | None = None):
        self.name = audio.name
        self.dim = audio.dim
        self.audio = audio
        self.lexicon = {}  # phoneme tuple -> reference clip
        for words, clip in (lexicon or {}).items():
            self.add(words, clip)

    def add(self, words: str, clip: np.ndarray) -> None:
        from archive_search.embedders.g2p import pronounce

        self.lexicon[tuple(pronounce(words).phonemes)] = clip

    def embed_phonemes(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        rows = []
        for sequence in sequences:
            clip = self.lexicon.get(tuple(sequence))
            if clip is not None:
                rows.append(embed_signal(clip))
            else:
                seed = int.from_bytes(hashlib.sha256(" ".join(sequence).encode()).digest()[:4], "little")
                vector = np.random.default_rng(seed).standard_normal(self.dim)
                rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows).astype(np.float32)


class FakeReranker:
    """Best cosine similarity of any 0.5 s sub-window (hop 0.05 s) of a region to the query audio."""

    def __init__(self, text: OracleTextEmbedder):
        self.name = "fake-reranker"
        self.text = text
        self.calls = 0

    def _score(self, regions: Sequence[np.ndarray], reference: np.ndarray) -> np.ndarray:
        self.calls += 1
        scores = []
        width, hop = int(0.5 * SAMPLE_RATE), int(0.05 * SAMPLE_RATE)
        for region in regions:
            best = -1.0
            for start in range(0, max(1, len(region) - width + 1), hop):
                best = max(best, float(embed_signal(region[start : start + width]) @ reference))
            scores.append(max(0.0, best))
        return np.array(scores)

    def score_text(self, regions, phonemes, words) -> np.ndarray:
        return self._score(regions, self.text.embed_phonemes([phonemes])[0])

    def score_audio(self, regions, query) -> np.ndarray:
        return self._score(regions, embed_signal(query))


class FakeTranscriber:
    """Hears tone words: each stretch of sound (10 ms frames louder than `LOUD`, gaps under
    0.1 s bridged) is the tone word whose band pattern it is closest to. `spellings` maps a word
    to what it is heard as ("planet" -> "plan it": a mis-transcribed name); the stretch is shared
    evenly by the heard tokens. `calls` counts transcriptions, `seconds` the audio they read."""

    name = "fake-transcriber"
    LOUD = 0.02

    def __init__(self, spellings: dict[str, str] | None = None, vocabulary: Sequence[str] | None = None):
        self.spellings = spellings or {}
        self.vocabulary = list(vocabulary or WORD_BANDS)
        self._references = {word: embed_signal(tone_word(word)) for word in self.vocabulary}
        self.calls = 0
        self.seconds = 0.0

    def transcribe(self, samples: np.ndarray):
        from archive_search.embedders.transcriber import TimedWord

        self.calls += 1
        samples = np.asarray(samples, dtype=np.float32)
        self.seconds += len(samples) / SAMPLE_RATE
        frame = SAMPLE_RATE // 100
        count = len(samples) // frame
        loud = np.sqrt((samples[: count * frame].reshape(count, frame) ** 2).mean(axis=1)) > self.LOUD
        words, first = [], None
        for index in range(count + 11):
            active = index < count and (loud[index] or (first is not None and loud[index : index + 10].any()))
            if active and first is None:
                first = index
            elif not active and first is not None:
                start, end = first / 100, index / 100
                first = None
                if end - start < 0.2:
                    continue
                vector = embed_signal(samples[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)])
                word = max(self.vocabulary, key=lambda w: float(vector @ self._references[w]))
                tokens = self.spellings.get(word, word).split()
                step = (end - start) / len(tokens)
                words += [TimedWord(t, round(start + i * step, 3), round(start + (i + 1) * step, 3), 0.9) for i, t in enumerate(tokens)]
        return words

    def query_likelihood(self, clips, text: str) -> np.ndarray:
        """The engine whisper's verifier columns, faked: log-probability 0 when every word of
        `text` is heard in the clip, -10 when not (so forced minus free is the same)."""
        wanted = text.split()
        out = np.zeros((len(clips), 4))
        for index, clip in enumerate(clips):
            heard = {w.token for w in self.transcribe(clip)}
            out[index] = 0.0 if all(w in heard for w in wanted) else -10.0
        return out


def samples_to_states(samples: np.ndarray) -> np.ndarray:
    """Stand-in whisper encoder states that carry the audio: (S,) with S <= 30 s -> (1500, 384),
    the 320 samples of each 20 ms frame in the first 320 columns, silence after the end."""
    padded = np.zeros(1500 * 320, np.float32)
    padded[: len(samples)] = samples
    return np.pad(padded.reshape(1500, 320), ((0, 0), (0, 64)))


def states_to_samples(states: np.ndarray) -> np.ndarray:
    """The audio held by stand-in states (T, 384) -> (T * 320,)."""
    return np.ascontiguousarray(states[:, :320]).reshape(-1)


class FakeWhisperTranscriber(FakeTranscriber):
    """A FakeTranscriber with the engine whisper's `encode`/`decode` seams: its states hold the
    audio (`samples_to_states`), so what is decoded from them can be checked exactly."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.encoded_s = 0.0
        self.batches = 0

    def encode(self, pieces):
        self.batches += 1
        self.encoded_s += sum(len(piece) for piece in pieces) / SAMPLE_RATE
        return np.stack([samples_to_states(np.asarray(piece, dtype=np.float32)) for piece in pieces])

    def decode(self, states, lengths):
        return [self.transcribe(states_to_samples(s)[:n]) for s, n in zip(states, lengths)]

    def run_batches(self, items, signal):
        from archive_search.embedders.transcriber import DECODE_BATCH

        items = list(items)
        for first in range(0, len(items), DECODE_BATCH):
            batch = items[first : first + DECODE_BATCH]
            states = self.encode([signal(item) for item in batch])
            yield batch, states, self.decode(states, [len(signal(item)) for item in batch])


class FakeWhisperEmbedder(FakeAudioEmbedder):
    """A FakeAudioEmbedder that also embeds from stand-in whisper states (`reads_whisper_states`)."""

    reads_whisper_states = True

    def embed_whisper_spans(self, states, spans):
        return self._embed(np.concatenate([states_to_samples(part) for part in states]), spans)


def fake_bundle(lexicon: dict[str, np.ndarray] | None = None, name: str = "fake-v1", reranker: bool = True,
                transcriber: FakeTranscriber | None = None) -> ModelBundle:  # fmt: skip
    """Fake models; with `transcriber`, indexes keep transcripts and text search fuses channels."""
    audio = FakeAudioEmbedder(name)
    text = OracleTextEmbedder(audio, lexicon)
    factory = (lambda: transcriber) if transcriber is not None else None
    return ModelBundle(name, audio, text, FakeReranker(text) if reranker else None, transcriber_factory=factory)


# -- audio made in code ---------------------------------------------------------------
WORD_BANDS = {
    "apple": (3, 17),
    "river": (5, 23),
    "market": (8, 28),
    "window": (11, 20),
    "garden": (14, 30),
    "silver": (6, 12),
    "planet": (19, 26),
    "coffee": (9, 25),
}
"""Each made-up 'word' is two tones in distinct 125 Hz bands."""


def tone_word(word: str, duration: float = 0.45) -> np.ndarray:
    """A 'spoken word': two tones at its bands' centres, with 20 ms fades."""
    t = np.arange(int(duration * SAMPLE_RATE)) / SAMPLE_RATE
    signal = sum(np.sin(2 * np.pi * (band + 0.5) * 125.0 * t) for band in WORD_BANDS[word])
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    return (0.3 * signal * fade).astype(np.float32)


def episode(words: Sequence[str], gap: float = 0.4, seed: int = 0, lead: float = 0.3) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """Words separated by quiet noise: samples and [(word, start, end)]."""
    rng = np.random.default_rng(seed)
    parts, times, position = [], [], 0.0
    pad = np.zeros(int(lead * SAMPLE_RATE), np.float32)
    parts.append(pad)
    position += lead
    for word in words:
        clip = tone_word(word)
        times.append((word, position, position + len(clip) / SAMPLE_RATE))
        parts.append(clip)
        parts.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
        position += len(clip) / SAMPLE_RATE + gap
    samples = np.concatenate(parts)
    samples += rng.normal(0, 0.003, len(samples)).astype(np.float32)
    return samples.astype(np.float32), times


def write_wav(path, samples: np.ndarray, sample_rate: int = SAMPLE_RATE, subtype: str = "PCM_16") -> None:
    import soundfile as sf

    sf.write(os.fsencode(path), samples, sample_rate, subtype=subtype)


def write_episodes(folder, count: int = 4, words_per_episode: int = 5) -> dict[str, list[tuple[str, float, float]]]:
    """Write `count` tone-word episodes as wav under `folder` (some in a subfolder); returns
    each file's absolute path -> [(word, start, end)]."""
    import os
    from pathlib import Path

    folder = Path(folder)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    words = list(WORD_BANDS)
    truth = {}
    for i in range(count):
        samples, times = episode([words[(i + j) % len(words)] for j in range(words_per_episode)], seed=i)
        path = folder / ("sub" if i % 2 else ".") / f"episode{i}.wav"
        write_wav(path, samples)
        truth[os.path.abspath(os.path.normpath(path))] = times
    return truth


def lexicon() -> dict[str, np.ndarray]:
    return {word: tone_word(word) for word in WORD_BANDS}
