"""Training-free probe of frame front-ends: acoustic word discrimination by DTW.

The classic acoustic-word-embedding baseline, on the JMCL word-discrimination protocol
(`word_discrimination.py`): aligned words of 0.5-2 s, at most 20 per word, every pair scored,
AP over all pairs. A pair's score is minus its DTW cost over the two words' frame features
(cosine distance between frames, symmetric steps with the diagonal weighted 2, the total
divided by n + m so that long and short words compare). No model is trained or tuned, so the
figure says how much word identity a front-end's frames carry and how well it survives new
speakers: the question of which front-end to build the audio encoders on.

Context: with `context="utterance"` (the default, as the indexer sees audio) a front-end
encodes each whole utterance once and a word takes the frames whose centres fall inside its
aligned span, so frames near the edges have heard the neighbouring words (a whisper frame
has heard the whole utterance). With `context="clip"` each word is encoded alone, as a
spoken query is.

A front-end is any object with `name`, `hop_s`, `offset_s` (centre time of frame 0) and
`frames(samples) -> (T, D)`. `build_frontend(spec)` makes the ones compared in docs/experiments.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from archive_search.audio import SAMPLE_RATE, FeatureConfig, load_audio, log_mel
from archive_search.embedders.whisper_encoder import standardise
from archive_search.errors import EvaluationError
from archive_search.evaluation.metrics import average_precision
from archive_search.evaluation.word_discrimination import WordSegment, word_segments

CONTEXTS = ("utterance", "clip")


class FrameFrontEnd(Protocol):
    name: str
    hop_s: float
    offset_s: float

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """16 kHz mono (S,) float32 -> (T, D) float32; frame t is centred at offset_s + t * hop_s."""
        ...


# --------------------------------------------------------------------------- front-ends


class LogMelFrontEnd:
    """Log-mel frames (25 ms / 10 ms), mean and variance normalised per bin over the input."""

    hop_s = 0.01
    offset_s = 0.0

    def __init__(self, n_mels: int = 80):
        self.config = FeatureConfig(n_mels=n_mels)
        self.name = f"logmel-{n_mels}"

    def frames(self, samples: np.ndarray) -> np.ndarray:
        mel = log_mel(samples, self.config).numpy()
        return (mel - mel.mean(0)) / (mel.std(0) + 1e-5)


class CTCFrontEnd:
    """States of the phoneme-CTC conformer (`embedders/ctc.py`), one per 40 ms.

    `output="hidden"`: the last conformer layer (d_model); `"posterior"`: the phoneme
    posteriorgram (softmax over the 40 CTC labels), the classic query-by-example feature.
    """

    offset_s = 0.0

    def __init__(self, checkpoint: str | Path, output: str = "hidden"):
        import torch

        from archive_search.embedders.ctc import SUBSAMPLING, load_ctc

        if output not in ("hidden", "posterior"):
            raise EvaluationError(f"CTC front-end output must be hidden or posterior, not {output!r}")
        self.model, _ = load_ctc(checkpoint)
        self.model.float()
        self.output = output
        self.hop_s = SUBSAMPLING * 0.01  # two stride-2 convolutions over 10 ms frames; frame i centred at mel frame 4i
        self.name = f"ctc-{output}:{Path(checkpoint).parent.name}/{Path(checkpoint).name}"
        self._torch = torch

    def frames(self, samples: np.ndarray) -> np.ndarray:
        from archive_search.embedders.ctc import fbank_batch

        feats, lengths = fbank_batch([np.asarray(samples, dtype=np.float32)], self.model.dims.n_mels)
        with self._torch.no_grad():
            out = self.model(feats, lengths)
        values = out.hidden if self.output == "hidden" else out.logits.softmax(-1)
        return values[0, : int(out.lengths[0])].numpy()


class WhisperFrontEnd:
    """whisper tiny.en encoder states (`embedders/whisper_encoder.py`), one per 20 ms."""

    offset_s = 0.0

    def __init__(self, threads: int = 1, pad: bool = False):
        from archive_search.embedders.whisper_encoder import HOP_S, WhisperEncoder

        self.encoder = WhisperEncoder(threads=threads, pad=pad)
        self.hop_s = HOP_S
        self.name = "whisper-tiny.en" + (" (padded to 30 s)" if pad else "")

    def frames(self, samples: np.ndarray) -> np.ndarray:
        return self.encoder.frames(samples)


class GoogleSpeechEmbeddingFrontEnd:
    """Google's speech embedding (`embedders/frontends.py`): 96-d frames every 80 ms, each from
    a 0.76 s mel window centred on it, so a frame hears ~0.38 s either side of its time."""

    name = "google-speech-embedding"

    def __init__(self, threads: int = 1):
        from archive_search.embedders.frontends import GSE_FRAME_S, SpeechEmbedding, gse_frame_times

        self.model = SpeechEmbedding(threads=threads)
        self.hop_s = GSE_FRAME_S
        self.offset_s = float(gse_frame_times(1)[0])

    def frames(self, samples: np.ndarray) -> np.ndarray:
        return self.model([np.asarray(samples, dtype=np.float32)])[0].frames


def build_frontend(spec: str, threads: int = 1) -> FrameFrontEnd:
    """`logmel[=N_MELS]`, `ctc=CHECKPOINT`, `ctc-post=CHECKPOINT`, `whisper`, `whisper-pad`, `gse`."""
    kind, _, argument = spec.partition("=")
    kind = kind.strip().lower()
    if kind == "logmel":
        return LogMelFrontEnd(int(argument) if argument else 80)
    if kind in ("ctc", "ctc-post"):
        if not argument:
            raise EvaluationError(f"front-end {spec!r}: give the checkpoint, e.g. {kind}=work/kws/ctc-300.pt")
        return CTCFrontEnd(argument, "hidden" if kind == "ctc" else "posterior")
    if kind in ("whisper", "whisper-pad"):
        return WhisperFrontEnd(threads, pad=kind == "whisper-pad")
    if kind == "gse":
        return GoogleSpeechEmbeddingFrontEnd(threads)
    raise EvaluationError(f"unknown front-end {spec!r} (logmel, ctc=PATH, ctc-post=PATH, whisper, whisper-pad, gse)")


# --------------------------------------------------------------------------- DTW


def _dtw_kernel():
    """Numba-compiled DTW over one row of a distance matrix (compiled on first use)."""
    import numba

    @numba.njit(cache=False, nogil=True)
    def costs(distance, starts, lengths):  # pragma: no cover - compiled
        # distance (n, total): frame distances from one word to the concatenated frames of others.
        n = distance.shape[0]
        out = np.empty(starts.size, dtype=np.float64)
        previous = np.empty(distance.shape[1] + 1, dtype=np.float64)
        current = np.empty(distance.shape[1] + 1, dtype=np.float64)
        for k in range(starts.size):
            first, m = starts[k], lengths[k]
            # Row 0: only horizontal steps.
            previous[0] = 2.0 * distance[0, first]
            for j in range(1, m):
                previous[j] = previous[j - 1] + distance[0, first + j]
            for i in range(1, n):
                current[0] = previous[0] + distance[i, first]
                for j in range(1, m):
                    d = distance[i, first + j]
                    best = previous[j - 1] + 2.0 * d
                    if previous[j] + d < best:
                        best = previous[j] + d
                    if current[j - 1] + d < best:
                        best = current[j - 1] + d
                    current[j] = best
                previous, current = current, previous
            out[k] = previous[m - 1] / (n + m)
        return out

    return costs


_KERNEL = None


def dtw_pair_costs(features: Sequence[np.ndarray]) -> np.ndarray:
    """Length-normalised DTW cost of every pair (i < j), in `np.triu_indices(N, 1)` order.

    Frames are compared by cosine distance (1 - cos), so the cost is in [0, 2]. The distances
    of one word to all later words come from one matrix product; DTW then runs in numba.
    """
    global _KERNEL
    if _KERNEL is None:
        _KERNEL = _dtw_kernel()
    if any(f.ndim != 2 or f.shape[0] == 0 for f in features):
        raise EvaluationError("every word needs at least one frame of features")
    units = [np.asarray(f, dtype=np.float32) / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-8) for f in features]
    lengths = np.array([u.shape[0] for u in units], dtype=np.int64)
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    stacked = np.concatenate(units, axis=0)
    parts = []
    for i in range(len(units) - 1):
        tail = stacked[starts[i + 1] :]
        distance = np.ascontiguousarray(1.0 - units[i] @ tail.T, dtype=np.float64)
        parts.append(_KERNEL(distance, starts[i + 1 :] - starts[i + 1], lengths[i + 1 :]))
    return np.concatenate(parts) if parts else np.zeros(0)


# --------------------------------------------------------------------------- protocol


def frame_slice(start: float, end: float, hop_s: float, offset_s: float, n_frames: int) -> slice:
    """The frames whose centres lie in [start, end]; the nearest frame when none does."""
    first = max(0, math.ceil((start - offset_s) / hop_s - 1e-9))
    last = min(n_frames - 1, math.floor((end - offset_s) / hop_s + 1e-9))
    if last < first:
        nearest = min(n_frames - 1, max(0, int(round((0.5 * (start + end) - offset_s) / hop_s))))
        return slice(nearest, nearest + 1)
    return slice(first, last + 1)


@dataclass
class FrontEndResult:
    """AP of one front-end over all word pairs, the pair counts, and what encoding cost."""

    frontend: str
    context: str
    normalised: bool
    n_segments: int
    n_words: int
    n_positive: int
    n_negative: int
    ap: float
    mean_cost_positive: float
    mean_cost_negative: float
    dim: int
    hop_s: float
    frames_per_word: float
    audio_seconds: float
    encode_cpu_seconds: float
    dtw_cpu_seconds: float

    @property
    def speed(self) -> float:
        """Audio seconds encoded per CPU second."""
        return self.audio_seconds / self.encode_cpu_seconds if self.encode_cpu_seconds > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "speed": self.speed}


@dataclass
class WordCorpus:
    """Word segments and the utterance audio they were cut from (id -> samples)."""

    segments: list[WordSegment]
    utterances: dict[str, np.ndarray]


def load_word_corpus(utterances: Iterable, root: str | Path, max_per_word: int | None = 20,
                     max_segments: int | None = None, seed: int = 0) -> WordCorpus:  # fmt: skip
    """The JMCL protocol's word segments (same selection as `archive-eval words`) and their utterances."""
    utterances = list(utterances)
    segments = word_segments(utterances, root, max_per_word=max_per_word, max_segments=max_segments, seed=seed)
    needed = {s.source for s in segments}
    audio = {u.id: load_audio(u.audio_path(root)) for u in utterances if u.id in needed}
    return WordCorpus(segments, audio)


@dataclass
class EncodedWords:
    """A front-end's frames for every encoded input (utterance or clip) and where each word lies."""

    frontend: str
    context: str
    hop_s: float
    inputs: list[np.ndarray]
    words: list[tuple[int, slice]]
    """Per word segment: (index into inputs, its frames there)."""
    audio_seconds: float
    cpu_seconds: float

    def features(self, normalise: bool = False) -> list[np.ndarray]:
        """Each word's frames; `normalise` standardises every input over its own frames first."""
        inputs = [standardise(frames) for frames in self.inputs] if normalise else self.inputs
        return [inputs[index][frames] for index, frames in self.words]


def encode_words(corpus: WordCorpus, frontend: FrameFrontEnd, context: str = "utterance") -> EncodedWords:
    """Run the front-end once per utterance (or per word clip) and locate every word's frames."""
    if context not in CONTEXTS:
        raise EvaluationError(f"context must be one of {CONTEXTS}, not {context!r}")
    if context == "clip":
        sources = {index: segment.audio for index, segment in enumerate(corpus.segments)}
        spans = [(index, 0.0, segment.audio.size / SAMPLE_RATE) for index, segment in enumerate(corpus.segments)]
    else:
        sources = corpus.utterances
        spans = [(segment.source, segment.start, segment.end) for segment in corpus.segments]
    inputs, position, cpu, seconds = [], {}, 0.0, 0.0
    for key, samples in sources.items():
        began = time.process_time()
        inputs.append(np.asarray(frontend.frames(samples), dtype=np.float32))
        cpu += time.process_time() - began
        seconds += samples.size / SAMPLE_RATE
        position[key] = len(inputs) - 1
    words = []
    for key, start, end in spans:
        index = position[key]
        words.append((index, frame_slice(start, end, frontend.hop_s, frontend.offset_s, len(inputs[index]))))
    return EncodedWords(frontend.name, context, float(frontend.hop_s), inputs, words, seconds, cpu)


def score_encoded(corpus: WordCorpus, encoded: EncodedWords, normalise: bool = False) -> FrontEndResult:
    """DTW cost of every pair of words, AP with same-word pairs as positives."""
    if len(corpus.segments) < 2:
        raise EvaluationError(f"word discrimination needs at least 2 segments, got {len(corpus.segments)}")
    features = encoded.features(normalise)
    began = time.process_time()
    cost = dtw_pair_costs(features)
    dtw_cpu = time.process_time() - began
    words = np.array([s.word for s in corpus.segments])
    upper = np.triu_indices(len(words), k=1)
    same = (words[:, None] == words[None, :])[upper]
    if not same.any() or same.all():
        raise EvaluationError("word discrimination needs same-word and different-word pairs")
    return FrontEndResult(
        frontend=encoded.frontend,
        context=encoded.context,
        normalised=normalise,
        n_segments=len(words),
        n_words=len(set(words.tolist())),
        n_positive=int(same.sum()),
        n_negative=int((~same).sum()),
        ap=average_precision(same, -cost),
        mean_cost_positive=float(cost[same].mean()),
        mean_cost_negative=float(cost[~same].mean()),
        dim=int(features[0].shape[1]),
        hop_s=encoded.hop_s,
        frames_per_word=float(np.mean([len(f) for f in features])),
        audio_seconds=encoded.audio_seconds,
        encode_cpu_seconds=encoded.cpu_seconds,
        dtw_cpu_seconds=dtw_cpu,
    )


def dtw_word_discrimination(corpus: WordCorpus, frontend: FrameFrontEnd, context: str = "utterance",
                            normalise: bool = False) -> FrontEndResult:  # fmt: skip
    """Score one front-end: encode (`encode_words`), then DTW and AP (`score_encoded`)."""
    return score_encoded(corpus, encode_words(corpus, frontend, context), normalise)


def embedding_word_discrimination(corpus: WordCorpus, audio, context: str = "utterance") -> FrontEndResult:
    """The same pairs scored by cosine between pooled embeddings of an `AudioEmbedder` (e.g. JMCL).

    Utterance context: `embed_spans` over the whole utterance (as the indexer embeds windows);
    clip context: `embed_clips` on each word alone (as the JMCL protocol and a spoken query do).
    """
    if context not in CONTEXTS:
        raise EvaluationError(f"context must be one of {CONTEXTS}, not {context!r}")
    if len(corpus.segments) < 2:
        raise EvaluationError(f"word discrimination needs at least 2 segments, got {len(corpus.segments)}")
    began = time.process_time()
    if context == "clip":
        vectors = audio.embed_clips([s.audio for s in corpus.segments])
        seconds = sum(s.audio.size for s in corpus.segments) / SAMPLE_RATE
    else:
        by_source: dict[str, list[int]] = {}
        for index, segment in enumerate(corpus.segments):
            by_source.setdefault(segment.source, []).append(index)
        vectors = np.zeros((len(corpus.segments), audio.dim), dtype=np.float32)
        for source, indices in by_source.items():
            spans = np.array([[corpus.segments[i].start, corpus.segments[i].end] for i in indices], dtype=np.float64)
            vectors[indices] = audio.embed_spans(corpus.utterances[source], spans)
        seconds = sum(corpus.utterances[s].size for s in by_source) / SAMPLE_RATE
    encode_cpu = time.process_time() - began
    vectors = np.asarray(vectors, dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    words = np.array([s.word for s in corpus.segments])
    upper = np.triu_indices(len(words), k=1)
    same = (words[:, None] == words[None, :])[upper]
    similarity = (vectors @ vectors.T)[upper]
    return FrontEndResult(
        frontend=f"{audio.name} (pooled, cosine)",
        context=context,
        normalised=False,
        n_segments=len(words),
        n_words=len(set(words.tolist())),
        n_positive=int(same.sum()),
        n_negative=int((~same).sum()),
        ap=average_precision(same, similarity),
        mean_cost_positive=float(1.0 - similarity[same].mean()),
        mean_cost_negative=float(1.0 - similarity[~same].mean()),
        dim=int(vectors.shape[1]),
        hop_s=float("nan"),
        frames_per_word=1.0,
        audio_seconds=seconds,
        encode_cpu_seconds=encode_cpu,
        dtw_cpu_seconds=0.0,
    )
