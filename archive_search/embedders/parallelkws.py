"""ParallelKWS (parallelkws.md, Section II): text-enrolled keyword detection in a region of audio.

Audio encoder: dual path. (a) the frozen phoneme-CTC conformer (40 ms frames) followed by a
transposed convolution (k5, s4) back to the 10 ms fbank rate; (b) a convolution (k3, s2) and
a transposed convolution (k3, s2) over the fbank. Both are cropped to the fbank length,
concatenated along features and fed to a GRU (d = 128): E_a (B, T_a, d).

Text encoder: g2p_en's pre-trained grapheme encoder (its GRU weights from `checkpoint20.npz`,
frozen) followed by a GRU (d = 128): E_t (B, T_t, d). g2p_en's encoder was trained on single
words, so a phrase is encoded word by word (each word's characters plus `</s>`, from a zero
state) and the per-word hidden states are concatenated in order: T_t = sum(len(word) + 1).

Pattern extractor: cross-attention with text queries (E_cross_t, eq. 2), cross-attention with
audio queries (E_cross_a, eq. 3) and self-attention over [E_a; E_t] (E_self, eq. 4), in
parallel; each is max-pooled over its valid positions, concatenated and fed to one FC layer
and a sigmoid (eqs. 5-6). Padded frames and tokens are masked as keys and in the pooling.

Loss: BCE + lambda * PDA (eqs. 7-12, lambda = 0.3, g = 0.1). The PDA affinity is the
attention map of the text-query cross-attention.

Front-ends (KWSDims.frontend): "conformer" is the paper's path (a), the phoneme-CTC conformer
trained here. "gse" replaces it with Google's pre-trained speech embedding (frontends.py, 96-d
frames every 80 ms, frozen, computed outside the model): path (a) is a k1 convolution over those
frames and path (b) three k3/s2 convolutions over the front-end's own 32-bin log-mel (10 ms ->
80 ms, output frame k centred on mel frame 8k like the embedding frame k), so E_a runs at 80 ms.
"whisper" does the same on whisper tiny.en's encoder states (384-d every 20 ms,
frozen, standardised per clip, as query by example uses them): path (a) a k3/s2 convolution
over the states, path (b) two k3/s2 convolutions over whisper's own 80-bin log-mel, so E_a runs
at 40 ms (output frame k centred on state 2k and mel frame 4k). With either pre-trained
front-end the PDA targets come from word alignments (`alignment_positions`), since there are no
conformer phoneme runs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from archive_search.embedders.checkpoint import build_dims, read_checkpoint, save_checkpoint
from archive_search.embedders.ctc import SUBSAMPLING, CTCConformer, CTCDims, length_mask, subsampled_lengths
from archive_search.embedders.g2p import g2p_model, grapheme_ids, normalise_text
from archive_search.errors import CheckpointError, QueryError

ATTENTION_MODES = ("parallel", "self", "cross")
FRONTENDS = ("conformer", "gse", "whisper")
FROZEN_PREFIXES = ("speech.", "g2p_embedding.", "g2p_gru.")
"""Parameters that are not trained here and not stored in a KWS checkpoint: the conformer
comes from its own CTC checkpoint, the G2P encoder from the g2p_en package."""


@dataclass
class KWSDims:
    """Shapes and training switches of ParallelKWS; stored in every KWS checkpoint."""

    d: int = 128
    path_channels: int = 128
    n_heads: int = 1  # eq. 1 is single-head attention
    attention: str = "parallel"  # ablations: "self" (self-attention only), "cross" (both cross only)
    pda_weight: float = 0.3  # lambda of eq. 12; 0 turns the PDA loss off (ablation)
    pda_g: float = 0.1  # g of eq. 8
    speech: dict | None = None  # CTCDims of the frozen conformer, as a dict
    g2p_dim: int = 256  # hidden size of g2p_en's encoder GRU
    g2p_vocab: int = 29
    time_stride: int = 1  # 1: the paper (E_a at the 10 ms fbank rate); 4: "fast" (40 ms, no upsampling)
    frontend: str = "conformer"  # "conformer" (the paper) | "gse" (Google speech embedding) | "whisper"
    frontend_dim: int = 96  # gse: embedding size (whisper: 384)
    frontend_mels: int = 32  # gse: mel bins of its log-mel (path b; whisper: 80)

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise CheckpointError(f"unknown attention mode {self.attention!r}; expected one of {ATTENTION_MODES}")
        if self.frontend not in FRONTENDS:
            raise CheckpointError(f"unknown front-end {self.frontend!r}; expected one of {FRONTENDS}")
        if self.speech is None:
            self.speech = CTCDims().__dict__.copy()
        if self.time_stride not in (1, SUBSAMPLING):
            raise CheckpointError(f"time_stride must be 1 (paper) or {SUBSAMPLING} (fast), not {self.time_stride}")

    @property
    def speech_dims(self) -> CTCDims:
        return build_dims(CTCDims, self.speech)

    @classmethod
    def paper(cls, speech: CTCDims | None = None) -> "KWSDims":
        return cls(speech=(speech or CTCDims.paper()).__dict__.copy())

    @classmethod
    def fast(cls, speech: CTCDims | None = None) -> "KWSDims":
        """The engine's default: E_a at the conformer's 40 ms rate (see encode_audio)."""
        return cls(speech=(speech or CTCDims.paper()).__dict__.copy(), time_stride=SUBSAMPLING)

    @classmethod
    def gse(cls, **overrides) -> "KWSDims":
        """The paper's sizes on Google's speech embedding instead of the conformer (80 ms frames)."""
        return cls(frontend="gse", **overrides)

    @classmethod
    def whisper(cls, **overrides) -> "KWSDims":
        """The paper's sizes on whisper tiny.en's encoder states (E_a at 40 ms)."""
        from archive_search.embedders.whisper_encoder import WHISPER_DIM, WHISPER_MELS

        return cls(frontend="whisper", frontend_dim=WHISPER_DIM, frontend_mels=WHISPER_MELS, **overrides)

    @property
    def uses_conformer(self) -> bool:
        return self.frontend == "conformer"

    @classmethod
    def tiny(cls, speech: CTCDims | None = None, **overrides) -> "KWSDims":
        return cls(d=16, path_channels=8, speech=(speech or CTCDims.tiny()).__dict__.copy(), **overrides)


@functools.lru_cache(maxsize=1)
def _g2p_weights() -> dict[str, torch.Tensor]:
    model = g2p_model()
    return {
        name: torch.from_numpy(np.asarray(getattr(model, name), dtype=np.float32))
        for name in ("enc_emb", "enc_w_ih", "enc_w_hh", "enc_b_ih", "enc_b_hh")
    }


def text_graphemes(words: str | Sequence[str]) -> list[np.ndarray]:
    """A phrase -> per-word grapheme id arrays, as g2p_en's encoder reads them."""
    if isinstance(words, str):
        words = normalise_text(words)
    words = [w for w in words if w]
    if not words:
        raise QueryError("the keyword text has no pronounceable words")
    return [grapheme_ids(word.lower()) for word in words]


class ParallelKWS(nn.Module):
    def __init__(self, dims: KWSDims):
        super().__init__()
        self.dims = dims
        speech_dims = dims.speech_dims
        c, d = dims.path_channels, dims.d
        if not dims.uses_conformer:
            self.speech = None  # the pre-trained front-end runs outside the model (frontends.py)
            # The embedding's values are large (std ~17 on speech); normalise each frame before
            # the k1 convolution so the GRU does not start saturated.
            self.frontend_norm = nn.LayerNorm(dims.frontend_dim)
            self.fbank_down = nn.Conv1d(dims.frontend_mels, c, kernel_size=3, stride=2, padding=1)
            if dims.frontend == "whisper":  # 20 ms states and 10 ms mel both to 40 ms
                self.speech_up = nn.Conv1d(dims.frontend_dim, c, kernel_size=3, stride=2, padding=1)
            else:  # 80 ms embedding frames; the mel needs a third halving
                self.speech_up = nn.Conv1d(dims.frontend_dim, c, kernel_size=1)
                self.fbank_mid = nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1)
            self.fbank_up = nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1)
        elif dims.time_stride == 1:
            self.speech = CTCConformer(speech_dims)
            self.speech.requires_grad_(False)
            self.speech_up = nn.ConvTranspose1d(speech_dims.d_model, c, kernel_size=5, stride=SUBSAMPLING)
            self.fbank_down = nn.Conv1d(speech_dims.n_mels, c, kernel_size=3, stride=2, padding=1)
            self.fbank_up = nn.ConvTranspose1d(c, c, kernel_size=3, stride=2, padding=1, output_padding=1)
        else:
            self.speech = CTCConformer(speech_dims)
            self.speech.requires_grad_(False)
            # "fast": the same two paths without returning to 10 ms: the conformer states pass
            # through a k1 convolution, the fbank through two k3/s2 convolutions (40 ms). The GRU
            # and the attention then see 4x fewer frames, which keeps reranking inside the
            # engine's query latency budget on 2 CPU cores.
            self.speech_up = nn.Conv1d(speech_dims.d_model, c, kernel_size=1)
            self.fbank_down = nn.Conv1d(speech_dims.n_mels, c, kernel_size=3, stride=2, padding=1)
            self.fbank_up = nn.Conv1d(c, c, kernel_size=3, stride=2, padding=1)
        self.audio_gru = nn.GRU(2 * c, d, batch_first=True)

        # g2p_en's grapheme encoder: torch's GRU uses the same (r, z, n) gate order and the
        # same n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) as g2p_en's numpy grucell.
        self.g2p_embedding = nn.Embedding(dims.g2p_vocab, dims.g2p_dim)
        self.g2p_gru = nn.GRU(dims.g2p_dim, dims.g2p_dim, batch_first=True)
        self.load_g2p_weights()
        self.text_gru = nn.GRU(dims.g2p_dim, d, batch_first=True)

        self.cross_t = nn.MultiheadAttention(d, dims.n_heads, batch_first=True)
        self.cross_a = nn.MultiheadAttention(d, dims.n_heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(d, dims.n_heads, batch_first=True)
        pooled = {"parallel": 3, "self": 1, "cross": 2}[dims.attention]
        self.fc = nn.Linear(pooled * d, 1)
        self._text_cache: dict[tuple, torch.Tensor] = {}

    def load_g2p_weights(self) -> None:
        weights = _g2p_weights()
        with torch.no_grad():
            self.g2p_embedding.weight.copy_(weights["enc_emb"])
            self.g2p_gru.weight_ih_l0.copy_(weights["enc_w_ih"])
            self.g2p_gru.weight_hh_l0.copy_(weights["enc_w_hh"])
            self.g2p_gru.bias_ih_l0.copy_(weights["enc_b_ih"])
            self.g2p_gru.bias_hh_l0.copy_(weights["enc_b_hh"])
        self.g2p_embedding.requires_grad_(False)
        self.g2p_gru.requires_grad_(False)

    def train(self, mode: bool = True) -> "ParallelKWS":
        super().train(mode)
        if self.speech is not None:
            self.speech.eval()  # frozen: dropout off even while the rest trains
        return self

    # ---- text side -------------------------------------------------------------------------
    @torch.no_grad()
    def g2p_states(self, words: str | Sequence[str]) -> torch.Tensor:
        """A phrase -> frozen G2P encoder states (T_t, g2p_dim), words concatenated. Each word
        is encoded from a zero state, so its states are cached per word."""
        states = []
        for ids in text_graphemes(words):
            key = tuple(int(i) for i in ids)
            cached = self._text_cache.get(key)
            if cached is None:
                tokens = torch.as_tensor(ids, device=self.g2p_embedding.weight.device).unsqueeze(0)
                cached = self.g2p_gru(self.g2p_embedding(tokens))[0][0]
                if len(self._text_cache) > 50_000:
                    self._text_cache.clear()
                self._text_cache[key] = cached
            states.append(cached)
        return torch.cat(states)

    def text_batch(self, texts: Sequence[str | Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Phrases -> padded G2P states (B, T_t, g2p_dim) and lengths (B,)."""
        states = [self.g2p_states(text) for text in texts]
        lengths = torch.tensor([len(s) for s in states], dtype=torch.long, device=states[0].device)
        return nn.utils.rnn.pad_sequence(states, batch_first=True), lengths

    # ---- audio side ------------------------------------------------------------------------
    def audio_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Input frame counts (fbank; gse: embedding frames; whisper: states) -> E_a frame counts."""
        if self.dims.frontend == "whisper":
            return (lengths + 1) // 2
        if not self.dims.uses_conformer or self.dims.time_stride == 1:
            return lengths
        return subsampled_lengths(lengths).clamp(min=1)

    def encode_frontend(
        self, frames: torch.Tensor, lengths: torch.Tensor, mel: torch.Tensor, mel_lengths: torch.Tensor
    ) -> torch.Tensor:
        """gse: frames (B, T, frontend_dim) every 80 ms, mel (B, M, frontend_mels) every 10 ms
        -> E_a (B, T, d). Mel path output k is centred on mel frame 8k, as embedding frame k.
        whisper: frames (B, T, 384) every 20 ms, mel (B, M, 80) -> E_a (B, ceil(T/2), d)."""
        x = self._fbank_down(normalise_clips(mel, mel_lengths), mel_lengths)  # (B, c, ceil(M/2))
        if self.dims.frontend == "whisper":
            # the states carry a large per-input offset (as for query by example): standardise
            # per clip; zero the padding again after the LayerNorm so the k3 convolution reads
            # the same zeros at a clip's end whether or not it is padded in a batch
            valid = length_mask(lengths, frames.shape[1]).unsqueeze(-1).to(frames.dtype)
            speech = self.speech_up((self.frontend_norm(normalise_clips(frames, lengths)) * valid).transpose(1, 2))
            time = speech.shape[-1]
        else:
            speech = self.speech_up(self.frontend_norm(frames).transpose(1, 2))  # (B, c, T)
            x = F.relu(self.fbank_mid(x))
            x = x * length_mask((mel_lengths + 3) // 4, x.shape[-1]).unsqueeze(1).to(x.dtype)
            time = frames.shape[1]
        x = self.fbank_up(x)  # (B, c, ceil(M/8)) gse, (B, c, ceil(M/4)) whisper
        x = F.pad(x, (0, max(0, time - x.shape[-1])))[..., :time]
        both = torch.cat([speech, x], dim=1).transpose(1, 2)  # (B, T, 2c)
        audio, _ = self.audio_gru(both)
        return audio

    def encode_audio(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, n_mels) -> E_a (B, T_a, d) and greedy conformer phoneme ids (B, T_a);
        T_a = T (paper) or ceil(T / 4) (fast)."""
        with torch.no_grad():
            out = self.speech(feats, lengths)
            predictions = out.logits.argmax(-1)  # (B, T')
        if self.dims.time_stride != 1:
            speech = self.speech_up(out.hidden.transpose(1, 2))
            fbank = self.fbank_up(self._fbank_down(feats, lengths))
            width = min(speech.shape[-1], fbank.shape[-1])
            both = torch.cat([speech[..., :width], fbank[..., :width]], dim=1).transpose(1, 2)
            audio, _ = self.audio_gru(both)
            return audio, predictions[:, :width]
        time = feats.shape[1]
        speech = self.speech_up(out.hidden.transpose(1, 2))[..., :time]  # (B, c, <=T)
        fbank = self.fbank_up(self._fbank_down(feats, lengths))[..., :time]
        width = min(speech.shape[-1], fbank.shape[-1])
        both = torch.cat([speech[..., :width], fbank[..., :width]], dim=1).transpose(1, 2)  # (B, T, 2c)
        if width < time:
            both = F.pad(both, (0, 0, 0, time - width))
        # A forward GRU never lets padding at the end reach valid frames, so no packing is needed.
        audio, _ = self.audio_gru(both)
        frame_predictions = predictions.repeat_interleave(SUBSAMPLING, dim=1)[:, :time]
        return audio, frame_predictions

    def _fbank_down(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, n_mels) -> (B, c, ceil(T/2)), zero past each clip's end so that the next
        convolution sees the same zeros whether or not the clip is padded in a batch."""
        x = F.relu(self.fbank_down(feats.transpose(1, 2)))
        return x * length_mask((lengths + 1) // 2, x.shape[-1]).unsqueeze(1).to(x.dtype)

    def encode_text(self, g2p_states: torch.Tensor) -> torch.Tensor:
        """(B, T_t, g2p_dim) -> E_t (B, T_t, d)."""
        text, _ = self.text_gru(g2p_states)
        return text

    # ---- pattern extractor -----------------------------------------------------------------
    def forward(
        self,
        feats: torch.Tensor,
        lengths: torch.Tensor,
        g2p_states: torch.Tensor,
        text_lengths: torch.Tensor,
        mel: torch.Tensor | None = None,
        mel_lengths: torch.Tensor | None = None,
        audio_index: torch.Tensor | None = None,
    ) -> "KWSOutput":
        """feats (B, T, n_mels) fbank (conformer) or (B, T, frontend_dim) front-end frames (gse,
        whisper), lengths (B,), g2p_states (B, T_t, g2p_dim), text_lengths (B,); gse and whisper
        also take their log-mel (B, M, frontend_mels) and mel_lengths (B,). audio_index (B_t,): when given, the
        audio holds R distinct clips and text row b is paired with clip audio_index[b] (one
        clip shown with several texts is encoded once)."""
        if self.dims.uses_conformer:
            audio, frame_predictions = self.encode_audio(feats, lengths)
        else:
            if mel is None or mel_lengths is None:
                raise QueryError(f"the {self.dims.frontend} front-end needs its log-mel as well as its frames")
            audio, frame_predictions = self.encode_frontend(feats, lengths, mel, mel_lengths), None
        lengths = self.audio_lengths(lengths).clamp(max=audio.shape[1])
        if audio_index is not None:
            audio, lengths = audio[audio_index], lengths[audio_index]
            frame_predictions = frame_predictions[audio_index] if frame_predictions is not None else None
        text = self.encode_text(g2p_states)
        audio_valid = length_mask(lengths, audio.shape[1])
        text_valid = length_mask(text_lengths, text.shape[1])
        pooled, affinity = [], None
        if self.dims.attention in ("parallel", "cross"):
            cross_t, affinity = self.cross_t(text, audio, audio, key_padding_mask=~audio_valid, need_weights=True)
            cross_a, _ = self.cross_a(audio, text, text, key_padding_mask=~text_valid, need_weights=False)
            pooled += [masked_max(cross_t, text_valid), masked_max(cross_a, audio_valid)]
        if self.dims.attention in ("parallel", "self"):
            joint = torch.cat([audio, text], dim=1)
            joint_valid = torch.cat([audio_valid, text_valid], dim=1)
            self_out, _ = self.self_attn(joint, joint, joint, key_padding_mask=~joint_valid, need_weights=False)
            pooled.append(masked_max(self_out, joint_valid))
        logits = self.fc(torch.cat(pooled, dim=-1)).squeeze(-1)
        return KWSOutput(logits, affinity, frame_predictions, lengths, text_lengths)

    def loss(
        self,
        output: "KWSOutput",
        labels: torch.Tensor,
        generator: torch.Generator | None = None,
        positions: torch.Tensor | None = None,
    ) -> dict:
        """Total = BCE + lambda * PDA (eq. 12). Returns the three terms as tensors.

        positions (B, T_a): each frame's 1-based text position c_i (`alignment_positions`),
        needed by the gse and whisper front-ends; the conformer path takes c_i from its phoneme runs (eq. 7)."""
        detection = F.binary_cross_entropy_with_logits(output.logits, labels.float())
        if self.dims.pda_weight > 0 and output.affinity is not None:
            if positions is None and output.frame_predictions is None:
                raise QueryError("the PDA loss needs frame positions when the front-end gives no phoneme runs")
            targets = pda_target_batch(
                output.frame_predictions, output.audio_lengths, output.text_lengths, labels, self.dims.pda_g, generator,
                positions=positions,
            )
            pda = pda_loss(output.affinity, targets, output.audio_lengths, output.text_lengths)
        else:
            pda = torch.zeros((), device=output.logits.device)
        return {"loss": detection + self.dims.pda_weight * pda, "bce": detection, "pda": pda}


@dataclass
class KWSOutput:
    logits: torch.Tensor  # (B,)
    affinity: torch.Tensor | None  # (B, T_t, T_a) text-query attention map (heads averaged)
    frame_predictions: torch.Tensor | None  # (B, T_a) greedy conformer phoneme ids at E_a's rate; None for gse/whisper
    audio_lengths: torch.Tensor  # (B,)
    text_lengths: torch.Tensor  # (B,)


def pad_frontend(frames: Sequence[np.ndarray], mels: Sequence[np.ndarray]) -> tuple[torch.Tensor, ...]:
    """Per-clip front-end outputs ((T_i, D) frames, (M_i, n_mels) log-mel) -> padded
    frames (B, T, D), lengths (B,), mel (B, M, n_mels), mel_lengths (B,)."""
    as_tensors = lambda xs: [torch.as_tensor(np.asarray(x, dtype=np.float32)) for x in xs]  # noqa: E731
    f, m = as_tensors(frames), as_tensors(mels)
    return (
        nn.utils.rnn.pad_sequence(f, batch_first=True),
        torch.tensor([len(x) for x in f], dtype=torch.long),
        nn.utils.rnn.pad_sequence(m, batch_first=True),
        torch.tensor([len(x) for x in m], dtype=torch.long),
    )


def normalise_clips(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-clip mean/std normalisation of (B, T, F) over each clip's valid frames (as the
    conformer's fbank); padding stays zero."""
    valid = length_mask(lengths, x.shape[1]).unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    count = valid.sum(1, keepdim=True).clamp(min=1)
    mean = (x * valid).sum(1, keepdim=True) / count
    std = ((((x - mean) * valid) ** 2).sum(1, keepdim=True) / count).sqrt().clamp(min=1e-3)
    return (x - mean) / std * valid


def masked_max(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Max over time of (B, T, D) where valid (B, T) is True -> (B, D)."""
    return x.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)


def group_indices(predictions: torch.Tensor) -> torch.Tensor:
    """Eq. 7: frame predictions (T_a,) -> 1-based run index c_i of consecutive equal predictions."""
    if len(predictions) == 0:
        return predictions.new_zeros(0)
    changes = (predictions[1:] != predictions[:-1]).long()
    return torch.cat([predictions.new_ones(1), 1 + torch.cumsum(changes, 0)])


def pda_targets(predictions: torch.Tensor, text_length: int, g: float = 0.1) -> torch.Tensor:
    """Eqs. 7-9 for one positive pair: (T_a,) frame predictions -> T (T_a, T_t), columns sum to 1."""
    return pda_targets_from_positions(group_indices(predictions).float(), text_length, g)


def pda_targets_from_positions(c: torch.Tensor, text_length: int, g: float = 0.1) -> torch.Tensor:
    """Eqs. 8-9 given each frame's (possibly fractional) 1-based position c_i (T_a,)."""
    c = c.float()
    j = torch.arange(1, text_length + 1, dtype=torch.float32, device=c.device)
    d = j[None, :] - c[:, None]  # eq. 8's d_ij = j - c_i
    x = -((d / text_length) ** 2) / (2 * g**2)
    return torch.softmax(x, dim=0)  # eq. 9: normalised over the audio frames i


def pda_target_batch(
    frame_predictions: torch.Tensor,
    audio_lengths: torch.Tensor,
    text_lengths: torch.Tensor,
    labels: torch.Tensor,
    g: float = 0.1,
    generator: torch.Generator | None = None,
    positions: torch.Tensor | None = None,
) -> torch.Tensor:
    """Targets (B, T_a, T_t), zero on padding. Negatives get softmax-normalised N(0, 1) noise
    over the valid frames (following CMCD, ref. [13] of the paper). Positives: from the frame
    predictions' runs (eq. 7) or, when given, from positions (B, T_a) directly."""
    source = positions if positions is not None else frame_predictions
    batch, width = source.shape
    text_width = int(text_lengths.max())
    targets = torch.zeros(batch, width, text_width, device=source.device)
    for row in range(batch):
        ta, tt = int(audio_lengths[row]), int(text_lengths[row])
        if labels[row] > 0.5 and positions is not None:
            targets[row, :ta, :tt] = pda_targets_from_positions(positions[row, :ta], tt, g)
        elif labels[row] > 0.5:
            targets[row, :ta, :tt] = pda_targets(frame_predictions[row, :ta], tt, g)
        else:
            noise = torch.randn(ta, tt, generator=generator).to(targets.device)
            targets[row, :ta, :tt] = torch.softmax(noise, dim=0)
    return targets


def pda_loss(affinity: torch.Tensor, targets: torch.Tensor, audio_lengths: torch.Tensor, text_lengths: torch.Tensor) -> torch.Tensor:
    """Eq. 10: ||A - T||^2 per pair, summed over the valid (frame, token) cells and divided by
    the pair's token count (each token's row of A is one distribution over frames), then
    averaged over the batch. affinity (B, T_t, T_a), targets (B, T_a, T_t)."""
    a = affinity.transpose(1, 2)  # (B, T_a, T_t)
    valid = length_mask(audio_lengths, a.shape[1]).unsqueeze(-1) & length_mask(text_lengths, a.shape[2]).unsqueeze(1)
    squared = ((a - targets[:, : a.shape[1], : a.shape[2]]) ** 2) * valid
    return (squared.sum(dim=(1, 2)) / text_lengths.float()).mean()


def alignment_positions(
    frame_times: np.ndarray, word_spans: Sequence[tuple[float, float]], word_tokens: Sequence[int]
) -> np.ndarray:
    """PDA's c_i from word alignments (the gse front-end has no phoneme runs): each frame's
    1-based position in the keyword's token sequence. Inside word w (tokens a_w ... a_w + n_w - 1,
    its characters and `</s>`) time maps linearly onto its tokens; gaps between words
    interpolate; before and after the keyword the keyword's mean token rate extrapolates, so
    frames of other words sit far from every token. frame_times (T_a,) and word_spans in
    seconds on the same clock -> (T_a,) float32."""
    knots_t, knots_p, position = [], [], 0.0
    for (start, end), n in zip(word_spans, word_tokens):
        end = max(end, start + 1e-3)
        if knots_t and start <= knots_t[-1]:
            start = knots_t[-1] + 1e-4
            end = max(end, start + 1e-3)
        knots_t += [start, end]
        knots_p += [position, position + n]
        position += n
    t = np.asarray(frame_times, dtype=np.float64)
    rate = position / max(knots_t[-1] - knots_t[0], 1e-3)  # tokens per second
    p = np.interp(t, knots_t, knots_p)
    p = np.where(t < knots_t[0], (t - knots_t[0]) * rate, p)
    p = np.where(t > knots_t[-1], position + (t - knots_t[-1]) * rate, p)
    return (p + 0.5).astype(np.float32)  # the middle of token j (1-based) sits at position j - 0.5


def trainable_state(model: ParallelKWS) -> nn.Module:
    """A view of `model` without the frozen conformer and G2P encoder, for saving."""
    view = nn.Module()
    for name, child in model.named_children():
        if not any(prefix.startswith(name + ".") for prefix in FROZEN_PREFIXES):
            view.add_module(name, child)
    return view


def save_kws(path: str | Path, model: ParallelKWS, extra: dict | None = None, half: bool = False) -> Path:
    """Save the trained parts; the conformer lives in its own CTC checkpoint."""
    return save_checkpoint(path, "kws", model.dims, trainable_state(model), extra, half=half)


def read_kws_dims(path: str | Path) -> KWSDims:
    """The dims stored in a KWS checkpoint (to tell whether it needs a conformer checkpoint)."""
    return build_dims(KWSDims, read_checkpoint(path, "kws")["dims"])


def load_kws(path: str | Path, speech: CTCConformer | None = None, device: str = "cpu") -> tuple[ParallelKWS, dict]:
    """Load a KWS checkpoint; `speech` is the trained conformer it was trained on (the gse
    front-end needs none)."""
    payload = read_checkpoint(path, "kws")
    dims = build_dims(KWSDims, payload["dims"])
    model = ParallelKWS(dims)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    bad = [k for k in missing if not k.startswith(FROZEN_PREFIXES)] + list(unexpected)
    if bad:
        raise CheckpointError(f"{path}: KWS checkpoint does not match the model: {bad[:5]}")
    if speech is not None and dims.uses_conformer:
        if speech.dims.__dict__ != dims.speech_dims.__dict__:
            raise CheckpointError(f"{path}: trained on a conformer with dims {dims.speech}, given {speech.dims.__dict__}")
        model.speech.load_state_dict(speech.state_dict())
    return model.to(device).eval(), payload["extra"]
