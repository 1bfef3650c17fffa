"""The engine's second stage: ParallelKWS for text queries, frame DTW for query by example.

Text query: every candidate region is scored by ParallelKWS against the query's words; the
sigmoid output is the hit's probability. Or, with `text_scoring="tts"` (slower, better on the
real development sets, docs/experiments.md), the words are spoken by several TTS voices
(espeak-ng, flite) and each region's score is its mean DTW score against the clips, as for a spoken query;
with a ParallelKWS on whisper frames (`kws-whisper.pt`) that score is mixed with the
model's probability, both from the one whisper encoding of the regions.

Query by example: ParallelKWS needs graphemes, and a spoken clip has none (a CTC phoneme
decoding cannot be fed to a grapheme encoder). So a clip is compared with each region by
subsequence DTW over frame states (unit-normalised, cosine distance): the clip must align, in
order, with some stretch of the region; free start and end inside the region. The score is the
mean cosine similarity along the best path, clipped to [0, 1]. The frames: whisper tiny.en's
encoder states (20 ms; the default for the shipped "gse" model: on two real development sets
they ranked spoken queries far better than the speech embedding's, docs/experiments.md), the
conformer's states (40 ms; the paper path's default), Google's speech embedding frames
(80 ms) or pooled log-mel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from archive_search.embedders.ctc import CTCConformer, CTCDims, fbank_batch, load_ctc
from archive_search.embedders.parallelkws import KWSDims, ParallelKWS, load_kws, pad_frontend, read_kws_dims
from archive_search.embedders.speech_synthesis import QueryVoice, speak_as
from archive_search.embedders.whisper_encoder import kws_frames, standardise
from archive_search.errors import CheckpointError, QueryError

QBE_FEATURES = ("whisper", "conformer", "gse", "fbank")

TEXT_SCORINGS = ("parallelkws", "tts")
"""How a text query is scored: ParallelKWS, or query by example on the words spoken by TTS voices."""

TTS_VOICES = (QueryVoice("espeak-ng", "en-us", 150), QueryVoice("flite", "slt"), QueryVoice("flite", "awb"))
"""The voices that speak a text query with text_scoring="tts": three beat one and two on both real
development sets, and a fourth added little (docs/experiments.md). Each clip takes ~1.5 s of the
30 s whisper input that the regions share."""

TTS_TEXT_WEIGHT = 0.75
"""`text_weight` with text_scoring="tts": the spoken query's DTW score against the JMCL similarity
(0.75 beat 0.25, 0.5 and 1 on both development sets, docs/experiments.md)."""

TEXT_WEIGHT = 0.1
"""`text_weight` with ParallelKWS scoring. It depends on how good the JMCL retrieval is: 0.25 beat
JMCL alone and the probability alone beside the log-mel `fast` JMCL; beside the shipped
whisper-frame JMCL, 0.1 has the best mean text MAP over the real and the synthetic development
archives (0, JMCL alone, leads on the real one by 0.02 and trails on the synthetic one by 0.03;
0.25 and 0.5 are worse on both; docs/experiments.md)."""

TTS_KWS_WEIGHT = 0.1
"""`tts_kws_weight`: with text_scoring="tts" and a whisper-front-end ParallelKWS, the share of its
probability in the second-stage score against the voices' DTW score (best mean text MAP over the
real and synthetic development archives, docs/experiments.md)."""

MAX_BATCH_SECONDS = 120.0
"""Audio seconds scored in one forward pass; bounds memory for many long regions."""


@dataclass
class KWSReranker:
    """Implements `embedders.base.Reranker` with a ParallelKWS model and its conformer."""

    model: ParallelKWS
    name: str = "parallelkws"
    device: str = "cpu"
    qbe_features: str | None = None
    """Frames that query-by-example DTW compares: "whisper" encoder states, "conformer" states,
    "gse" frames or normalised "fbank"; default: "conformer" for a conformer-front-end model,
    else "whisper"."""
    frontend: object | None = None
    """For a "gse" or "whisper" model: callable clips -> [GSEFrames or WhisperFrames] (default:
    frontends.SpeechEmbedding, or whisper_encoder.WhisperKWSFrontend on `whisper`)."""
    whisper: object | None = None
    """For "whisper" frames: a `WhisperEncoder` (default: the bundled tiny.en, made on first use)."""
    text_weight: float = TEXT_WEIGHT
    """How much the engine ranks text hits by this score against the JMCL retrieval similarity
    (weight * probability + (1 - weight) * similarity)."""
    audio_weight: float = 1.0
    """The same for query by example: whisper-frame DTW alone beat JMCL alone and the 0.5 and
    0.75 mixes on both real development sets (docs/experiments.md)."""
    text_scoring: str = "parallelkws"
    """"parallelkws", or "tts": the query's words spoken by `tts_voices`, then scored as
    spoken queries (use `text_weight=TTS_TEXT_WEIGHT` with it; `load_reranker` does)."""
    tts_voices: tuple[QueryVoice, ...] = TTS_VOICES
    tts_kws_weight: float = TTS_KWS_WEIGHT
    """With text_scoring="tts" and a "whisper" model: a region's second-stage score is
    tts_kws_weight x ParallelKWS probability + (1 - tts_kws_weight) x the voices' DTW score."""

    def __post_init__(self) -> None:
        self.model.to(self.device).eval()
        uses_conformer = self.model.dims.uses_conformer
        if self.qbe_features is None:
            self.qbe_features = "conformer" if uses_conformer else "whisper"
        if self.qbe_features not in QBE_FEATURES:
            raise CheckpointError(f"unknown query-by-example frames {self.qbe_features!r}; one of {', '.join(QBE_FEATURES)}")
        if self.qbe_features == "conformer" and not uses_conformer:
            raise CheckpointError("query-by-example on conformer states needs a conformer-front-end model")
        if self.qbe_features == "gse" and self.model.dims.frontend != "gse":
            raise CheckpointError("query-by-example on speech-embedding frames needs a gse-front-end model")
        if self.text_scoring not in TEXT_SCORINGS:
            raise CheckpointError(f"unknown text scoring {self.text_scoring!r}; one of {', '.join(TEXT_SCORINGS)}")

    def _frontend(self):
        """The model's pre-trained front-end, made on first use: a missing openwakeword wheel
        then fails the search that needs it (MissingToolError with the install command), not
        indexing. A whisper model shares the query-by-example encoder."""
        if self.frontend is None:
            if self.model.dims.frontend == "whisper":
                from archive_search.embedders.whisper_encoder import WhisperKWSFrontend

                self.frontend = WhisperKWSFrontend(encoder=self._whisper(), packed=True)
            else:
                from archive_search.embedders.frontends import SpeechEmbedding

                self.frontend = SpeechEmbedding(threads=torch.get_num_threads())
        return self.frontend

    def _whisper(self):
        """whisper tiny.en's encoder, made on first use (query by example only)."""
        if self.whisper is None:
            from archive_search.embedders.whisper_encoder import WhisperEncoder

            self.whisper = WhisperEncoder(threads=torch.get_num_threads(), pad=True)
        return self.whisper

    @property
    def speech(self) -> CTCConformer | None:
        return self.model.speech

    @property
    def n_mels(self) -> int:
        return self.speech.dims.n_mels if self.speech is not None else CTCDims().n_mels

    def _forward(self, batch: list[np.ndarray], text: torch.Tensor, text_lengths: torch.Tensor, outputs=None):
        """outputs: the batch's front-end frames when already computed."""
        if self.model.dims.uses_conformer:
            feats, lengths = fbank_batch(batch, self.n_mels)
            return self.model(feats.to(self.device), lengths.to(self.device), text, text_lengths)
        outputs = outputs if outputs is not None else self._frontend()(batch)
        frames, lengths, mel, mel_lengths = pad_frontend([o.frames for o in outputs], [o.mel for o in outputs])
        d = self.device
        return self.model(frames.to(d), lengths.to(d), text, text_lengths, mel.to(d), mel_lengths.to(d))

    @torch.no_grad()
    def score_text(self, regions: Sequence[np.ndarray], phonemes: Sequence[str], words: str) -> np.ndarray:
        """Regions (each (S_i,) float32 16 kHz) against one text query -> (N,) scores in [0, 1].

        ParallelKWS reads the words' graphemes (its text encoder is g2p_en's); `phonemes` are
        accepted for the protocol and not used. With text_scoring="tts" the words are spoken
        by each of `tts_voices` and a region's score is its mean DTW score against the clips,
        mixed with the ParallelKWS probability (`tts_kws_weight`) for a "whisper" model.
        """
        if len(regions) == 0:
            return np.zeros(0, dtype=np.float32)
        if self.text_scoring != "tts":
            return self._probability(regions, words)
        clips = [speak_as(words, voice) for voice in self.tts_voices]
        if self.model.dims.frontend != "whisper" or self.qbe_features != "whisper" or self.tts_kws_weight == 0:
            return self._score_spoken(regions, clips)
        # one whisper input holds the voices' clips and the regions; the DTW and ParallelKWS
        # both read the regions' states from it
        states = self._whisper().frames_packed([*clips, *regions])
        unit = [whisper_unit_rows(f) for f in states]
        spoken = _mean_dtw(unit[: len(clips)], unit[len(clips) :])
        frames = [kws_frames(region, f) for region, f in zip(regions, states[len(clips) :])]
        probability = self._probability(regions, words, frames)
        return (self.tts_kws_weight * probability + (1 - self.tts_kws_weight) * spoken).astype(np.float32)

    def encode_ahead(self, regions: Sequence[np.ndarray]) -> None:
        """Encode regions that many `score_text` calls will score (an evaluation's trials)
        in one go, when the model's front-end can keep them (a "whisper" model)."""
        if self.text_scoring == "parallelkws" and not self.model.dims.uses_conformer:
            frontend = self._frontend()
            if hasattr(frontend, "encode_ahead"):
                frontend.encode_ahead(regions)

    @torch.no_grad()
    def _probability(self, regions: Sequence[np.ndarray], words: str, frames: Sequence | None = None) -> np.ndarray:
        """(N,) ParallelKWS probability of `words` in each region; `frames`: the regions'
        front-end outputs when already computed."""
        states = self.model.g2p_states(words).to(self.device)
        scores, first = [], 0
        for batch in _batches(regions):
            text = states.unsqueeze(0).expand(len(batch), -1, -1)
            text_lengths = torch.full((len(batch),), states.shape[0], dtype=torch.long)
            outputs = frames[first : first + len(batch)] if frames is not None else None
            output = self._forward(batch, text, text_lengths.to(self.device), outputs)
            scores.append(torch.sigmoid(output.logits).cpu().numpy())
            first += len(batch)
        return np.concatenate(scores).astype(np.float32)

    @torch.no_grad()
    def frame_states(self, clips: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Clips -> unit-normalised frames for DTW, one (T_i, D) array per clip: whisper encoder
        states (20 ms), conformer states (40 ms), speech embedding frames ("gse", 80 ms) or, with
        qbe_features="fbank", the normalised log-mel frames averaged over 4 (40 ms too)."""
        result = []
        if self.qbe_features == "whisper":
            # whisper's states carry a large per-input offset, so each clip is standardised over
            # its own frames first (raw states ranked dev queries far worse, docs/experiments.md)
            return [whisper_unit_rows(f) for f in self._whisper().frames_packed(list(clips))]
        if self.qbe_features == "gse":
            return [unit_rows(out.frames) for out in self._frontend()(list(clips))]
        for batch in _batches(clips):
            feats, lengths = fbank_batch(batch, self.n_mels)
            if self.qbe_features == "fbank":
                pooled = torch.nn.functional.avg_pool1d(feats.transpose(1, 2), 4, 4, ceil_mode=True).transpose(1, 2)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                result += [pooled[row, : int((lengths[row] + 3) // 4)] for row in range(len(batch))]
                continue
            out = self.speech(feats.to(self.device), lengths.to(self.device))
            hidden = torch.nn.functional.normalize(out.hidden, dim=-1).cpu().numpy()
            result += [hidden[row, : int(out.lengths[row])] for row in range(len(batch))]
        return result

    @torch.no_grad()
    def score_audio(self, regions: Sequence[np.ndarray], query: np.ndarray) -> np.ndarray:
        """Regions against one spoken query clip -> (N,) scores in [0, 1] (subsequence DTW)."""
        if len(regions) == 0:
            return np.zeros(0, dtype=np.float32)
        if len(query) == 0:
            raise QueryError("the query clip holds no audio")
        return self._score_spoken(regions, [query])

    def _score_spoken(self, regions: Sequence[np.ndarray], queries: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) mean subsequence-DTW score of each region against the query clips."""
        # one call: whisper encodes the queries and the regions packed into one canonical input
        states = self.frame_states([*queries, *regions])
        return _mean_dtw(states[: len(queries)], states[len(queries) :])


def _mean_dtw(query_states: Sequence[np.ndarray], region_states: Sequence[np.ndarray]) -> np.ndarray:
    """(N,) mean subsequence-DTW similarity of each region's unit frames against the queries'."""
    scores = [[subsequence_dtw_similarity(q, r) for r in region_states] for q in query_states]
    return np.mean(scores, axis=0).astype(np.float32)


def whisper_unit_rows(states: np.ndarray) -> np.ndarray:
    """One clip's whisper states (T, D) -> DTW frames: standardised over the clip (its states
    carry a large per-input offset; raw states ranked dev queries far worse, docs/experiments.md),
    then unit rows."""
    return unit_rows(standardise(states) if len(states) > 1 else states)


def unit_rows(frames: np.ndarray) -> np.ndarray:
    """Each frame (row) scaled to unit length; all-zero rows stay zero."""
    return frames / np.maximum(np.linalg.norm(frames, axis=1, keepdims=True), 1e-8)


def subsequence_dtw_similarity(query: np.ndarray, region: np.ndarray) -> float:
    """Mean cosine similarity along the best subsequence alignment of `query` (Q, D) inside
    `region` (R, D), both unit-normalised; clipped to [0, 1]. A region shorter than the query
    is aligned whole the other way round."""
    if len(region) == 0 or len(query) == 0:
        return 0.0
    return float(np.clip(subsequence_dtw_path(query, region).mean(), 0.0, 1.0))


def subsequence_dtw_path(query: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Cosine similarity at each step of the best subsequence alignment (as in
    `subsequence_dtw_similarity`; both non-empty), in path order from the start."""
    import librosa

    if len(region) < len(query):
        query, region = region, query
    cost = np.clip(1.0 - query @ region.T, 0.0, 2.0)  # (Q, R) cosine distances
    # subseq: free start and end in the region; the path backtracks from the cheapest end.
    _, path = librosa.sequence.dtw(C=cost, subseq=True, backtrack=True)
    return 1.0 - cost[path[::-1, 0], path[::-1, 1]]


def _batches(clips: Sequence[np.ndarray]):
    batch, seconds = [], 0.0
    for clip in clips:
        length = len(clip) / 16_000
        if batch and seconds + length > MAX_BATCH_SECONDS:
            yield batch
            batch, seconds = [], 0.0
        batch.append(np.asarray(clip, dtype=np.float32))
        seconds += length
    if batch:
        yield batch


def load_reranker(ctc_path: str | Path | None, kws_path: str | Path, device: str = "cpu", frontend=None, whisper=None,
                  text_scoring: str = "parallelkws") -> KWSReranker:  # fmt: skip
    """The trained conformer (CTC checkpoint) and ParallelKWS (KWS checkpoint) -> KWSReranker.
    A model on the "gse" or "whisper" front-end loads from its KWS checkpoint alone (ctc_path may be None);
    its query by example runs on whisper frames. `frontend` and `whisper` replace the speech
    embedding and the whisper encoder (tests pass fakes). text_scoring="tts": text queries are
    spoken by TTS voices and scored as spoken queries (`KWSReranker.text_scoring`)."""
    text = {"text_scoring": text_scoring, **({"text_weight": TTS_TEXT_WEIGHT} if text_scoring == "tts" else {})}
    if read_kws_dims(kws_path).uses_conformer:
        if ctc_path is None or not Path(ctc_path).is_file():
            raise CheckpointError(f"{kws_path}: this ParallelKWS runs on the phoneme-CTC conformer; its checkpoint {ctc_path} is missing")
        speech, _ = load_ctc(ctc_path, device)
        model, extra = load_kws(kws_path, speech=speech, device=device)
        name = f"parallelkws-{extra.get('version', Path(kws_path).stem)}"
        reranker = KWSReranker(model, name=name, device=device, whisper=whisper, **text)
    else:
        model, extra = load_kws(kws_path, device=device)
        version = extra.get("version")  # kws-export writes "<front-end>-<weight hash>"
        name = f"parallelkws-{version}" if version else f"parallelkws-{model.dims.frontend}-{Path(kws_path).stem}"
        reranker = KWSReranker(model, name=name, device=device, frontend=frontend, whisper=whisper, **text)
        # The name keys the score calibration, and spoken-query scores depend on the QbE frames.
        reranker.name += f"+qbe-{reranker.qbe_features}"
    if text_scoring == "tts":  # the voices change the scores, so they key the calibration too
        reranker.name += "+text-tts-" + "-".join(voice.name for voice in reranker.tts_voices)
        if model.dims.frontend == "whisper":
            reranker.name += f"+kws{reranker.tts_kws_weight:g}"
    return reranker


def tiny_reranker(seed: int = 0) -> KWSReranker:
    """A tiny random reranker for engine tests (fast, meaningless scores)."""
    torch.manual_seed(seed)
    model = ParallelKWS(KWSDims.tiny(speech=CTCDims.tiny(), time_stride=4))
    return KWSReranker(model, name=f"parallelkws-tiny-{seed}")
