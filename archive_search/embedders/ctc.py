"""Phoneme-CTC conformer: the pre-trained speech embedder of ParallelKWS (parallelkws.md, II-A).

6 conformer layers, dimension 144, 4 heads, convolution kernel 3, on 80-bin log-mel frames
(25 ms window, 10 ms hop). A two-layer strided Conv2d front-end subsamples time by 4 (40 ms
per conformer frame) before the torchaudio Conformer; a linear layer maps each frame to the
project's phoneme inventory (`embedders/phonemes.py`), whose id 0 is the CTC blank.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from archive_search.audio import FeatureConfig, log_mel
from archive_search.embedders.checkpoint import build_dims, read_checkpoint, save_checkpoint
from archive_search.embedders.phonemes import BLANK, PAD_ID, SYMBOLS, VOCAB_SIZE

SUBSAMPLING = 4
"""Fbank frames per conformer frame (two stride-2 convolutions)."""


@dataclass
class CTCDims:
    """Shapes of the conformer; stored in every CTC checkpoint."""

    n_mels: int = 80
    subsample_channels: int = 64
    d_model: int = 144
    n_heads: int = 4
    ffn_dim: int = 576
    n_layers: int = 6
    conv_kernel: int = 3
    dropout: float = 0.1
    vocab_size: int = VOCAB_SIZE

    @classmethod
    def paper(cls) -> "CTCDims":
        """The published configuration (parallelkws.md, following FlexiKWS)."""
        return cls()

    @classmethod
    def fast(cls) -> "CTCDims":
        """The engine's default: 4 layers of dimension 96 and a 32-channel front-end, about
        3x fewer operations than the paper's, so that reranking ~30 regions stays inside the
        query latency budget on 2 CPU cores and training fits this machine."""
        return cls(subsample_channels=32, d_model=96, n_heads=4, ffn_dim=384, n_layers=4)

    @classmethod
    def tiny(cls) -> "CTCDims":
        """A few thousand parameters, for tests."""
        return cls(subsample_channels=4, d_model=16, n_heads=2, ffn_dim=32, n_layers=1, dropout=0.0)

    @property
    def features(self) -> FeatureConfig:
        return FeatureConfig(n_mels=self.n_mels)


def fbank_batch(clips: Sequence[np.ndarray | torch.Tensor], n_mels: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """16 kHz clips -> normalised log-mel frames (B, T, n_mels) zero-padded, and lengths (B,).

    Each clip is normalised by its own per-bin mean and standard deviation, so recording gain
    and channel colour do not reach the model (the same holds for a region or a whole file).
    """
    config = FeatureConfig(n_mels=n_mels)
    frames = []
    for clip in clips:
        mel = log_mel(clip, config)  # (T, n_mels)
        mean = mel.mean(dim=0, keepdim=True)
        std = mel.std(dim=0, keepdim=True) if len(mel) > 1 else torch.ones_like(mean)
        frames.append((mel - mean) / (std + 1e-5))
    lengths = torch.tensor([len(f) for f in frames], dtype=torch.long)
    padded = nn.utils.rnn.pad_sequence(frames, batch_first=True) if frames else torch.zeros(0, 1, n_mels)
    return padded, lengths


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Fbank frame counts -> conformer frame counts (two k3/s2/p1 convolutions: ceil twice)."""
    lengths = (lengths + 1) // 2
    return (lengths + 1) // 2


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) lengths -> (B, width) bool, True on valid positions."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


class ConvSubsampling(nn.Module):
    """(B, T, n_mels) -> (B, ceil(ceil(T/2)/2), d_model): two 3x3 stride-2 convolutions."""

    def __init__(self, n_mels: int, channels: int, d_model: int):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        freq = (((n_mels + 1) // 2) + 1) // 2
        self.proj = nn.Linear(channels * freq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x.unsqueeze(1)))  # (B, C, ceil(T/2), F/2)
        # Zero past each clip's end: the second convolution must see the zeros it would see
        # at the end of an unpadded clip, not ReLU(bias) from the batch's padding.
        x = x * length_mask((lengths + 1) // 2, x.shape[2])[:, None, :, None].to(x.dtype)
        x = torch.relu(self.conv2(x))  # (B, C, T', F')
        batch, channels, time, freq = x.shape
        return self.proj(x.permute(0, 2, 1, 3).reshape(batch, time, channels * freq))


class FrameMask(nn.Module):
    """Zeroes padded frames of (B, C, T) before the conformer's depthwise convolution, which
    torchaudio does not mask; otherwise a clip's last frames depend on its batch's padding."""

    def __init__(self):
        super().__init__()
        self.valid: torch.Tensor | None = None  # (B, T) bool, set by CTCConformer.forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.valid is None or self.valid.shape[1] != x.shape[-1]:
            return x
        return x * self.valid[:, None, :].to(x.dtype)


@dataclass
class CTCOutput:
    hidden: torch.Tensor  # (B, T', d_model) conformer states
    logits: torch.Tensor  # (B, T', vocab)
    lengths: torch.Tensor  # (B,) valid conformer frames


class CTCConformer(nn.Module):
    """Conformer acoustic model trained with phoneme CTC."""

    def __init__(self, dims: CTCDims):
        super().__init__()
        self.dims = dims
        self.subsampling = ConvSubsampling(dims.n_mels, dims.subsample_channels, dims.d_model)
        self.dropout = nn.Dropout(dims.dropout)
        self.conformer = torchaudio.models.Conformer(
            input_dim=dims.d_model,
            num_heads=dims.n_heads,
            ffn_dim=dims.ffn_dim,
            num_layers=dims.n_layers,
            depthwise_conv_kernel_size=dims.conv_kernel,
            dropout=dims.dropout,
        )
        self.head = nn.Linear(dims.d_model, dims.vocab_size)
        self.frame_masks = []
        for layer in self.conformer.conformer_layers:
            steps = list(layer.conv_module.sequential)  # pointwise, GLU, depthwise, norm, ...
            mask = FrameMask()
            layer.conv_module.sequential = nn.Sequential(*steps[:2], mask, *steps[2:])
            self.frame_masks.append(mask)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> CTCOutput:
        """feats (B, T, n_mels), lengths (B,) -> CTCOutput with T' = ceil(T / 4)."""
        x = self.dropout(self.subsampling(feats, lengths))
        out_lengths = subsampled_lengths(lengths).clamp(min=1, max=x.shape[1])
        valid = length_mask(out_lengths, x.shape[1])
        for mask in self.frame_masks:
            mask.valid = valid
        hidden, _ = self.conformer(x, out_lengths)
        for mask in self.frame_masks:
            mask.valid = None
        # Padded frames carry garbage after attention; zero them so pooling/DTW never see them.
        hidden = hidden * length_mask(out_lengths, hidden.shape[1]).unsqueeze(-1)
        return CTCOutput(hidden, self.head(hidden), out_lengths)

    def loss(self, feats: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """Mean CTC loss per target phoneme. targets (B, P) ids padded with PAD_ID (= blank)."""
        out = self(feats, lengths)
        log_probs = out.logits.log_softmax(-1).transpose(0, 1)  # (T', B, V)
        return F.ctc_loss(log_probs, targets, out.lengths, target_lengths, blank=PAD_ID, reduction="mean", zero_infinity=True)

    @torch.no_grad()
    def frame_predictions(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy frame-level phoneme ids (B, T') (blank = 0, padding = 0) and their lengths."""
        out = self(feats, lengths)
        predictions = out.logits.argmax(-1)
        predictions = predictions.masked_fill(~length_mask(out.lengths, predictions.shape[1]), PAD_ID)
        return predictions, out.lengths


def collapse(frame_ids: Sequence[int]) -> list[int]:
    """CTC greedy rule: merge repeats, then drop blanks."""
    result, previous = [], None
    for index in frame_ids:
        index = int(index)
        if index != previous and index != PAD_ID:
            result.append(index)
        previous = index
    return result


def greedy_decode(model: CTCConformer, clips: Sequence[np.ndarray]) -> list[list[str]]:
    """Clips -> greedy phoneme strings (stress-free ARPAbet)."""
    feats, lengths = fbank_batch(clips, model.dims.n_mels)
    was_training = model.training
    model.eval()
    predictions, out_lengths = model.frame_predictions(feats, lengths)
    model.train(was_training)
    return [
        [SYMBOLS[i] for i in collapse(predictions[row, : out_lengths[row]].tolist())]
        for row in range(len(clips))
    ]


def phoneme_error_rate(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Total edit distance / total reference length."""
    errors = sum(edit_distance(h, r) for h, r in zip(hypotheses, references))
    total = sum(len(r) for r in references)
    return errors / max(total, 1)


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def save_ctc(path: str | Path, model: CTCConformer, extra: dict | None = None, half: bool = False) -> Path:
    return save_checkpoint(path, "ctc", model.dims, model, extra, half=half)


def load_ctc(path: str | Path, device: str = "cpu") -> tuple[CTCConformer, dict]:
    """Load a CTC checkpoint -> (model in eval mode, extra)."""
    payload = read_checkpoint(path, "ctc")
    model = CTCConformer(build_dims(CTCDims, payload["dims"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), payload["extra"]


assert SYMBOLS[PAD_ID] == BLANK
