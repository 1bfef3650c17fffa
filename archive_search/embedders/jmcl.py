"""JMCL acoustic word embeddings: an audio and a text encoder sharing one unit-vector space.

Gundluru et al., "Joint Multimodal Contrastive Learning for Robust Spoken Term Detection and
Keyword Spotting" (see /work/shared/papers/jmcl.md, Section III): a BiLSTM over log-mel frames
and a BiLSTM over phoneme embeddings, each followed by a linear projection to the shared space,
unit-normalised, with a learnable log temperature for the CLAP loss.

Configs:
- ``paper``: exactly as published (128-bin log-mel 25/10 ms; 3-layer BiLSTM, hidden 256 -> 512
  for audio and text).
- ``fast``: a strided convolutional front-end (40 ms frames) computed once over a whole chunk
  and sliced per window, a 2-layer BiLSTM with hidden 128 and 256-d embeddings: overlapping
  windows share their frame features and the LSTM runs over 4x fewer frames, which keeps
  indexing above 50x real time on 2 cores (``paper`` is 20x slower). docs/experiments.md
  measures what this costs in accuracy.
- ``gse``: a pre-trained front-end: the audio BiLSTM of ``fast`` reads Google's speech
  embedding (frozen, trained on real speech; 96-d every 80 ms, embedders/frontends.py) instead
  of log-mel, computed once over a whole chunk and sliced per window like ``fast``'s frames.
- ``whisper`` (the shipped default): the same, reading whisper tiny.en's encoder states
  (frozen, 384-d every 20 ms, embedders/whisper_encoder.py), standardised over each encoder
  input (a chunk, an utterance or a query clip) because they carry a large per-input offset;
  one stride-2 convolution brings them to ``fast``'s 40 ms frames.
- ``tiny``: a few thousand weights for tests.

Pooling: the final forward and backward states of the last BiLSTM layer, concatenated (the usual
recurrent AWE read-out; the paper does not name one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from archive_search.audio import SAMPLE_RATE, FeatureConfig, log_mel
from archive_search.embedders.checkpoint import build_dims, read_checkpoint, save_checkpoint
from archive_search.embedders.frontends import GSE_DIM, GSE_FRAME_S
from archive_search.embedders.whisper_encoder import HOP_S as WHISPER_FRAME_S
from archive_search.embedders.whisper_encoder import WHISPER_DIM, standardise
from archive_search.embedders.phonemes import PAD_ID, VOCAB_SIZE, encode, pad_batch
from archive_search.errors import CheckpointError

CHECKPOINT_KIND = "jmcl"
AUDIO_FRONTENDS = ("logmel", "gse", "whisper")
PRETRAINED_DIM = {"gse": GSE_DIM, "whisper": WHISPER_DIM}
PRETRAINED_FRAME_S = {"gse": GSE_FRAME_S, "whisper": WHISPER_FRAME_S}
"""Seconds between the frames of each pre-trained front-end."""
MAX_WINDOWS_PER_BATCH = 1024
"""Windows run through the LSTM at once; bounds inference memory on long chunks."""


@dataclass(frozen=True)
class JMCLDims:
    """Everything that defines a JMCL model's shape; stored in every checkpoint."""

    config: str = "fast"
    audio_frontend: str = "logmel"
    """What the audio encoder reads: "logmel" (computed here), "gse" (Google's speech embedding)
    or "whisper" (whisper tiny.en's encoder states)."""
    sample_rate: int = SAMPLE_RATE
    n_mels: int = 64
    """Log-mel bins ("logmel" front-end only)."""
    window_s: float = 0.025
    hop_s: float = 0.010
    frontend_channels: int = 128
    """Channels of the strided conv front-end; 0 feeds log-mel straight into the LSTM (paper)."""
    frontend_stride: int = 4
    """Total time stride of the front-end (a power of two; 1 with no front-end)."""
    audio_layers: int = 2
    audio_hidden: int = 128
    text_vocab: int = VOCAB_SIZE
    phone_dim: int = 64
    text_layers: int = 2
    text_hidden: int = 128
    embed_dim: int = 256
    dropout: float = 0.1

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(self.sample_rate, self.n_mels, self.window_s, self.hop_s)

    @property
    def feature_dim(self) -> int:
        """Width of one input frame: log-mel bins, or the pre-trained front-end's dims."""
        return PRETRAINED_DIM.get(self.audio_frontend, self.n_mels)

    @property
    def frame_period_s(self) -> float:
        """Seconds between the frames the audio LSTM reads."""
        return PRETRAINED_FRAME_S.get(self.audio_frontend, self.hop_s) * self.frontend_stride


CONFIGS: dict[str, JMCLDims] = {
    "paper": JMCLDims(
        config="paper", n_mels=128, frontend_channels=0, frontend_stride=1, audio_layers=3, audio_hidden=256,
        phone_dim=128, text_layers=3, text_hidden=256, embed_dim=512,
    ),
    "fast": JMCLDims(),
    "gse": JMCLDims(config="gse", audio_frontend="gse", frontend_channels=0, frontend_stride=1),
    "whisper": JMCLDims(config="whisper", audio_frontend="whisper", frontend_stride=2),
    "tiny": JMCLDims(
        config="tiny", n_mels=16, frontend_channels=16, frontend_stride=4, audio_layers=1, audio_hidden=16,
        phone_dim=8, text_layers=1, text_hidden=16, embed_dim=16, dropout=0.0,
    ),
}  # fmt: skip


def config_dims(name: str) -> JMCLDims:
    """The named config's dims (a key of CONFIGS)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown JMCL config {name!r}; choose one of {sorted(CONFIGS)}")
    return CONFIGS[name]


def _last_states(lstm: nn.LSTM, inputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Run a bidirectional LSTM and concatenate the last layer's final forward/backward states.

    inputs: (B, T, C); lengths: (B,) or None when every row is full length. Returns (B, 2H).
    """
    if lengths is not None and bool((lengths < inputs.shape[1]).any()):
        packed = pack_padded_sequence(inputs, lengths.cpu().clamp(min=1), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = lstm(packed)
    else:
        _, (h_n, _) = lstm(inputs)
    return torch.cat([h_n[-2], h_n[-1]], dim=-1)


class AudioEncoder(nn.Module):
    """Log-mel frames -> (optional strided conv front-end) -> BiLSTM -> linear -> unit vector."""

    def __init__(self, dims: JMCLDims):
        super().__init__()
        self.dims = dims
        # Fixed per-bin (per-dim) normalisation of the input frames, set from training data; a buffer so
        # it travels in the checkpoint and is identical at train and inference time.
        if dims.audio_frontend not in AUDIO_FRONTENDS:
            raise CheckpointError(f"unknown JMCL audio front-end {dims.audio_frontend!r}; expected one of {AUDIO_FRONTENDS}")
        self.register_buffer("feature_mean", torch.zeros(dims.feature_dim))
        self.register_buffer("feature_std", torch.ones(dims.feature_dim))
        convs: list[nn.Module] = []
        if dims.frontend_channels > 0:
            stride = dims.frontend_stride
            if stride < 1 or stride & (stride - 1):
                raise CheckpointError(f"JMCL frontend_stride must be a power of two, got {stride}")
            channels_in = dims.feature_dim
            for step in range(max(1, int(math.log2(stride)))):
                kernel = 5 if step == 0 else 3
                convs.append(nn.Conv1d(channels_in, dims.frontend_channels, kernel, stride=2 if stride > 1 else 1,
                                       padding=kernel // 2))  # fmt: skip
                channels_in = dims.frontend_channels
            lstm_in = dims.frontend_channels
        else:
            if dims.frontend_stride != 1:
                raise CheckpointError("JMCL without a conv front-end must have frontend_stride 1")
            lstm_in = dims.feature_dim
        self.frontend = nn.ModuleList(convs)
        self.lstm = nn.LSTM(
            lstm_in, dims.audio_hidden, num_layers=dims.audio_layers, batch_first=True, bidirectional=True,
            dropout=dims.dropout if dims.audio_layers > 1 else 0.0,
        )  # fmt: skip
        self.project = nn.Linear(2 * dims.audio_hidden, dims.embed_dim)

    def frames(self, mels: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Input frames (B, F, feature_dim) -> LSTM input frames (B, T, C), T = ceil(F / stride).

        With `lengths` (B,) valid mel frames, everything past a row's end is zeroed before each
        convolution, so a padded batch gives each row exactly what it gets alone.
        """
        x = ((mels - self.feature_mean) / self.feature_std).transpose(1, 2)  # (B, n_mels, F)
        for conv in self.frontend:
            if lengths is not None:
                x = x * (torch.arange(x.shape[-1], device=x.device)[None] < lengths[:, None])[:, None]
            x = nn.functional.gelu(conv(x))
            if conv.stride[0] > 1 and lengths is not None:
                lengths = (lengths + conv.stride[0] - 1) // conv.stride[0]
        return x.transpose(1, 2)

    def encode(self, frames: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (B, T, C) with valid lengths (B,) -> unit embeddings (B, D)."""
        pooled = _last_states(self.lstm, frames, lengths)
        return nn.functional.normalize(self.project(pooled), dim=-1)

    def frame_range(self, start_s: float, end_s: float, n_frames: int) -> tuple[int, int]:
        """Frames [i0, i1) of the LSTM input whose centres fall in [start_s, end_s); at least one."""
        period = self.dims.frame_period_s
        i0 = min(max(0, int(round(start_s / period))), max(0, n_frames - 1))
        i1 = n_frames if math.isinf(end_s) else min(max(i0 + 1, int(round(end_s / period))), n_frames)
        return i0, max(i1, i0 + 1)


class TextEncoder(nn.Module):
    """Phoneme ids -> embeddings -> BiLSTM -> linear -> unit vector."""

    def __init__(self, dims: JMCLDims):
        super().__init__()
        self.embedding = nn.Embedding(dims.text_vocab, dims.phone_dim, padding_idx=PAD_ID)
        self.lstm = nn.LSTM(
            dims.phone_dim, dims.text_hidden, num_layers=dims.text_layers, batch_first=True, bidirectional=True,
            dropout=dims.dropout if dims.text_layers > 1 else 0.0,
        )  # fmt: skip
        self.project = nn.Linear(2 * dims.text_hidden, dims.embed_dim)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """ids (B, P) long padded with PAD_ID, lengths (B,) -> unit embeddings (B, D)."""
        pooled = _last_states(self.lstm, self.embedding(ids), lengths)
        return nn.functional.normalize(self.project(pooled), dim=-1)


class JMCL(nn.Module):
    """Both encoders and the learnable log temperature tau of the CLAP loss (eq. 6)."""

    def __init__(self, dims: JMCLDims):
        super().__init__()
        self.dims = dims
        self.audio = AudioEncoder(dims)
        self.text = TextEncoder(dims)
        # CLIP's initialisation, log(1/0.07); exp(tau) scales cosine logits.
        self.log_temperature = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        # The frozen pre-trained front-end ("gse": onnxruntime, "whisper": CTranslate2; not a
        # torch module, not in the state_dict), made on first use in each process: a forked
        # data-loader worker must not reuse its parent's runtime, whose threads did not fork.
        self._pretrained_frontend = None
        self._pretrained_frontend_pid = None

    def logit_scale(self) -> torch.Tensor:
        # Capped at 100 as in CLIP so the logits cannot blow up early in training.
        return self.log_temperature.clamp(max=math.log(100.0)).exp()

    def embed_audio_batch(
        self,
        clips: Sequence[torch.Tensor],
        spans: Sequence[tuple[float, float]] | None = None,
        features: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Differentiable batch embedding (training): each clip (S_i,) with an optional span in
        seconds inside it. Features are computed over the whole clip and then sliced to the span,
        exactly as `JMCLAudioEmbedder.embed_spans` does at indexing time; `features` passes
        `input_features(clips)` computed beforehand (by a data-loader worker). Returns (B, D)."""
        device = self.log_temperature.device
        mels = list(features) if features is not None else self.input_features(clips)
        mel_lengths = torch.tensor([len(m) for m in mels], device=device)
        frames = self.audio.frames(pad_sequence(mels, batch_first=True).to(device), mel_lengths)
        n_frames = [self._n_frames(len(m)) for m in mels]
        pieces = []
        for row, count in enumerate(n_frames):
            start, end = spans[row] if spans is not None else (0.0, math.inf)
            if spans is None:
                i0, i1 = 0, count
            else:
                i0, i1 = self.audio.frame_range(start, end, count)
            pieces.append(frames[row, i0:i1])
        lengths = torch.tensor([len(p) for p in pieces], device=device)
        return self.audio.encode(pad_sequence(pieces, batch_first=True), lengths)

    def input_features(self, clips: Sequence[torch.Tensor | np.ndarray]) -> list[torch.Tensor]:
        """Clips (S_i,) at 16 kHz -> the audio encoder's input frames, one (F_i, feature_dim)
        float32 CPU tensor per clip: log-mel, or a frozen pre-trained front-end's frames (whisper's
        standardised over each clip)."""
        frontend = self.dims.audio_frontend
        if frontend != "logmel":
            arrays = [torch.as_tensor(clip).detach().cpu().float().numpy() for clip in clips]
            if frontend == "gse":
                return [torch.from_numpy(out.frames) for out in self.pretrained_frontend()(arrays)]
            return [torch.from_numpy(whisper_features(self.pretrained_frontend().frames(a))) for a in arrays]
        return [log_mel(torch.as_tensor(clip).cpu(), self.dims.features) for clip in clips]

    def pretrained_frontend(self):
        """The frozen front-end of a "gse" or "whisper" model, made on first use in this process."""
        if self._pretrained_frontend is None or self._pretrained_frontend_pid != os.getpid():
            self._pretrained_frontend_pid = os.getpid()
            if self.dims.audio_frontend == "gse":
                from archive_search.embedders.frontends import SpeechEmbedding

                self._pretrained_frontend = SpeechEmbedding(threads=torch.get_num_threads())
            else:
                from archive_search.embedders.whisper_encoder import WhisperEncoder

                self._pretrained_frontend = WhisperEncoder(threads=torch.get_num_threads())
        return self._pretrained_frontend

    def embed_phoneme_batch(self, sequences: Sequence[Sequence[str]]) -> torch.Tensor:
        """Differentiable text embedding: ARPAbet sequences -> (B, D)."""
        ids, lengths = pad_batch([encode(seq) for seq in sequences])
        return self.text(ids.to(self.log_temperature.device), lengths.clamp(min=1))

    def _n_frames(self, n_mel_frames: int) -> int:
        stride = self.dims.frontend_stride
        return (n_mel_frames + stride - 1) // stride if len(self.audio.frontend) else n_mel_frames


def whisper_features(states: np.ndarray) -> np.ndarray:
    """whisper encoder states of one input (T, 384) -> the "whisper" front-end's frames:
    standardised over the input, float32."""
    return standardise(states).astype(np.float32) if len(states) > 1 else np.zeros_like(states, dtype=np.float32)


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when available, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class JMCLAudioEmbedder:
    """The `AudioEmbedder` seam over a JMCL audio encoder (see embedders/base.py)."""

    def __init__(self, model: JMCL, name: str, device: str | torch.device | None = None):
        self.device = default_device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.dim = model.dims.embed_dim

    @property
    def reads_whisper_states(self) -> bool:
        """True when the front-end is whisper tiny.en's encoder: the indexer can then hand it the
        states the transcriber computed (`embed_whisper_spans`) instead of encoding twice."""
        return self.model.dims.audio_frontend == "whisper"

    @torch.inference_mode()
    def embed_spans(self, samples: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """Windows [start, end) seconds of one 16 kHz signal -> (N, dim) float32 unit vectors.

        Log-mel and the conv front-end run once over `samples`; each window slices its frames,
        and windows with the same frame count share one LSTM batch (no padding needed).
        """
        if len(np.asarray(spans).reshape(-1, 2)) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._embed_input(self.model.input_features([np.asarray(samples, dtype=np.float32)])[0], spans)

    @torch.inference_mode()
    def embed_whisper_spans(self, states: Sequence[np.ndarray], spans: np.ndarray) -> np.ndarray:
        """Windows [start, end) seconds from the first state -> (N, dim) unit vectors, from whisper
        encoder states (T_i, 384) of consecutive whisper inputs, 20 ms apart (each input
        standardised over itself, as `input_features` does for one input)."""
        features = np.concatenate([whisper_features(part) for part in states]) if len(states) else np.zeros((0, WHISPER_DIM), np.float32)
        return self._embed_input(torch.from_numpy(features), spans)

    def _embed_input(self, features: torch.Tensor, spans: np.ndarray) -> np.ndarray:
        """Input frames (F, feature_dim) of one signal and windows (N, 2) seconds -> (N, dim)."""
        spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
        out = np.zeros((len(spans), self.dim), dtype=np.float32)
        if len(spans) == 0:
            return out
        frames = self.model.audio.frames(features.to(self.device)[None])[0]  # (T, C)
        count = frames.shape[0]
        ranges = np.array([self.model.audio.frame_range(s, e, count) for s, e in spans], dtype=np.int64)
        widths = ranges[:, 1] - ranges[:, 0]
        for width in np.unique(widths):
            rows = np.flatnonzero(widths == width)
            for first in range(0, len(rows), MAX_WINDOWS_PER_BATCH):
                batch = rows[first : first + MAX_WINDOWS_PER_BATCH]
                index = torch.as_tensor(ranges[batch, 0, None] + np.arange(width)[None], device=self.device)
                vectors = self.model.audio.encode(frames[index])  # (B, width, C) -> (B, D)
                out[batch] = vectors.float().cpu().numpy()
        return out

    @torch.inference_mode()
    def embed_clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Whole clips (each (S_i,) float32, 16 kHz) -> (N, dim) float32 unit vectors."""
        if len(clips) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for first in range(0, len(clips), 256):
            batch = [torch.as_tensor(np.asarray(c, dtype=np.float32)) for c in clips[first : first + 256]]
            out.append(self.model.embed_audio_batch(batch).float().cpu().numpy())
        return np.concatenate(out)


class JMCLTextEmbedder:
    """The `TextEmbedder` seam over a JMCL text encoder."""

    def __init__(self, model: JMCL, name: str, device: str | torch.device | None = None):
        self.device = default_device(device)
        self.model = model.to(self.device).eval()
        self.name = name
        self.dim = model.dims.embed_dim

    @torch.inference_mode()
    def embed_phonemes(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        """ARPAbet sequences (stress allowed) -> (N, dim) float32 unit vectors."""
        if len(sequences) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.embed_phoneme_batch(sequences).float().cpu().numpy()


def build_model(dims: JMCLDims | str) -> JMCL:
    """A freshly initialised JMCL model for a dims object or config name."""
    return JMCL(config_dims(dims) if isinstance(dims, str) else dims)


def save_jmcl(path: str | Path, model: JMCL, extra: dict | None = None, half: bool = False) -> Path:
    """Write a JMCL checkpoint (dims, state_dict, format version; float16 when `half`)."""
    return save_checkpoint(path, CHECKPOINT_KIND, model.dims, model, extra=extra, half=half)


def read_jmcl(path: str | Path) -> tuple[JMCL, dict]:
    """Load a JMCL model (float32, eval mode) and its checkpoint's `extra` values."""
    payload = read_checkpoint(path, CHECKPOINT_KIND)
    dims = build_dims(JMCLDims, payload["dims"])
    model = JMCL(dims)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the JMCL dims it stores ({exc})") from exc
    return model.eval(), payload.get("extra", {})


def model_name(model: JMCL, tag: str | None = None) -> str:
    """'jmcl-<config>-<hash>': the hash covers dims and weights, so retrained weights get a new name."""
    if tag is None:
        fields = dataclasses.asdict(model.dims)
        if fields["audio_frontend"] == "logmel":
            # Added after the first checkpoints shipped: left out at its old implicit value, so a
            # log-mel model keeps its name (indexes and calibration.json are keyed by it).
            del fields["audio_frontend"]
        digest = hashlib.sha256(repr(fields).encode())
        for key, tensor in sorted(model.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().to(torch.float16).cpu().numpy().tobytes())
        tag = digest.hexdigest()[:10]
    return f"jmcl-{model.dims.config}-{tag}"


def load_jmcl(path: str | Path, device: str | torch.device | None = None) -> tuple[JMCLAudioEmbedder, JMCLTextEmbedder]:
    """The audio and text embedders of a JMCL checkpoint; CUDA when available unless `device`."""
    model, _ = read_jmcl(path)
    name = model_name(model)
    return JMCLAudioEmbedder(model, name, device), JMCLTextEmbedder(model, name, device)


def tiny_jmcl(seed: int = 0, device: str | torch.device | None = "cpu") -> tuple[JMCLAudioEmbedder, JMCLTextEmbedder]:
    """A random tiny JMCL pair for engine tests: deterministic for a seed, a few thousand weights."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = build_model("tiny")
    finally:
        torch.random.set_rng_state(generator_state)
    name = model_name(model, tag=f"seed{seed}")
    return JMCLAudioEmbedder(model, name, device), JMCLTextEmbedder(model, name, device)
