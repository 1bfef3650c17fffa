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

    def __post_init__(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise CheckpointError(f"unknown attention mode {self.attention!r}; expected one of {ATTENTION_MODES}")
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
        self.speech = CTCConformer(speech_dims)
        self.speech.requires_grad_(False)
        c, d = dims.path_channels, dims.d
        if dims.time_stride == 1:
            self.speech_up = nn.ConvTranspose1d(speech_dims.d_model, c, kernel_size=5, stride=SUBSAMPLING)
            self.fbank_down = nn.Conv1d(speech_dims.n_mels, c, kernel_size=3, stride=2, padding=1)
            self.fbank_up = nn.ConvTranspose1d(c, c, kernel_size=3, stride=2, padding=1, output_padding=1)
        else:
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
        self.speech.eval()  # frozen: dropout off even while the rest trains
        return self

    # ---- text side -------------------------------------------------------------------------
    @torch.no_grad()
    def g2p_states(self, words: str | Sequence[str]) -> torch.Tensor:
        """A phrase -> frozen G2P encoder states (T_t, g2p_dim), words concatenated. Cached."""
        key = tuple(words) if not isinstance(words, str) else (words,)
        cached = self._text_cache.get(key)
        if cached is not None:
            return cached
        states = []
        for ids in text_graphemes(words):
            tokens = torch.as_tensor(ids, device=self.g2p_embedding.weight.device).unsqueeze(0)
            output, _ = self.g2p_gru(self.g2p_embedding(tokens))
            states.append(output[0])
        result = torch.cat(states)
        if len(self._text_cache) > 4096:
            self._text_cache.clear()
        self._text_cache[key] = result
        return result

    def text_batch(self, texts: Sequence[str | Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Phrases -> padded G2P states (B, T_t, g2p_dim) and lengths (B,)."""
        states = [self.g2p_states(text) for text in texts]
        lengths = torch.tensor([len(s) for s in states], dtype=torch.long, device=states[0].device)
        return nn.utils.rnn.pad_sequence(states, batch_first=True), lengths

    # ---- audio side ------------------------------------------------------------------------
    def audio_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Fbank frame counts -> E_a frame counts."""
        return lengths if self.dims.time_stride == 1 else subsampled_lengths(lengths).clamp(min=1)

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
        self, feats: torch.Tensor, lengths: torch.Tensor, g2p_states: torch.Tensor, text_lengths: torch.Tensor
    ) -> "KWSOutput":
        """feats (B, T, n_mels), lengths (B,), g2p_states (B, T_t, g2p_dim), text_lengths (B,)."""
        audio, frame_predictions = self.encode_audio(feats, lengths)
        lengths = self.audio_lengths(lengths).clamp(max=audio.shape[1])
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

    def loss(self, output: "KWSOutput", labels: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """Total = BCE + lambda * PDA (eq. 12). Returns the three terms as tensors."""
        detection = F.binary_cross_entropy_with_logits(output.logits, labels.float())
        if self.dims.pda_weight > 0 and output.affinity is not None:
            targets = pda_target_batch(
                output.frame_predictions, output.audio_lengths, output.text_lengths, labels, self.dims.pda_g, generator
            )
            pda = pda_loss(output.affinity, targets, output.audio_lengths, output.text_lengths)
        else:
            pda = torch.zeros((), device=output.logits.device)
        return {"loss": detection + self.dims.pda_weight * pda, "bce": detection, "pda": pda}


@dataclass
class KWSOutput:
    logits: torch.Tensor  # (B,)
    affinity: torch.Tensor | None  # (B, T_t, T_a) text-query attention map (heads averaged)
    frame_predictions: torch.Tensor  # (B, T_a) greedy conformer phoneme ids at the fbank rate
    audio_lengths: torch.Tensor  # (B,)
    text_lengths: torch.Tensor  # (B,)


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
    c = group_indices(predictions).float()  # (T_a,)
    j = torch.arange(1, text_length + 1, dtype=torch.float32, device=predictions.device)
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
) -> torch.Tensor:
    """Targets (B, T_a, T_t), zero on padding. Negatives get softmax-normalised N(0, 1) noise
    over the valid frames (following CMCD, ref. [13] of the paper)."""
    batch, width = frame_predictions.shape
    text_width = int(text_lengths.max())
    targets = torch.zeros(batch, width, text_width, device=frame_predictions.device)
    for row in range(batch):
        ta, tt = int(audio_lengths[row]), int(text_lengths[row])
        if labels[row] > 0.5:
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


def load_kws(path: str | Path, speech: CTCConformer | None = None, device: str = "cpu") -> tuple[ParallelKWS, dict]:
    """Load a KWS checkpoint; `speech` is the trained conformer it was trained on."""
    payload = read_checkpoint(path, "kws")
    dims = build_dims(KWSDims, payload["dims"])
    model = ParallelKWS(dims)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    bad = [k for k in missing if not k.startswith(FROZEN_PREFIXES)] + list(unexpected)
    if bad:
        raise CheckpointError(f"{path}: KWS checkpoint does not match the model: {bad[:5]}")
    if speech is not None:
        if speech.dims.__dict__ != dims.speech_dims.__dict__:
            raise CheckpointError(f"{path}: trained on a conformer with dims {dims.speech}, given {speech.dims.__dict__}")
        model.speech.load_state_dict(speech.state_dict())
    return model.to(device).eval(), payload["extra"]
