"""JMCL losses (jmcl.md, Section III): symmetric CLAP loss (eqs 6-9), DWD loss (eqs 10-13), total (eq 14).

Batches are N distinct words (classes) x M spoken instances each. Audio embeddings come as
(N, M, D) and the words' text embeddings as (N, D); all are unit vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

ALPHA_AT = 0.1
"""alpha1 of eq. 14, the weight of the audio-text (CLAP) loss; the paper's choice (Table III)."""
ALPHA_AA = 1.0
"""alpha2 of eq. 14, the weight of the audio-audio (DWD) loss."""


def clap_loss(audio: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric audio-text contrastive loss averaged over the M positive matrices.

    audio: (N, M, D) or (N, D) unit vectors; text: (N, D) unit vectors; logit_scale = exp(tau).
    For each instance m: C = exp(tau) * E_t E_a^T (eq. 6), L_at = (CE over rows + CE over
    columns) / 2 with the diagonal as targets (eqs 7-9); the result is the mean over m (eq. 14).
    """
    if audio.dim() == 2:
        audio = audio[:, None]
    n, m, _ = audio.shape
    targets = torch.arange(n, device=audio.device)
    total = audio.new_zeros(())
    for instance in range(m):
        logits = logit_scale * text @ audio[:, instance].T  # (N text, N audio)
        total = total + 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
    return total / m


@dataclass
class DWDTerms:
    total: torch.Tensor
    softmax: torch.Tensor
    centroid: torch.Tensor


def dwd_similarities(audio: torch.Tensor) -> torch.Tensor:
    """S[j, i, k] = cos(e_ji, c_k) for audio (N, M, D); c_j leaves e_ji out (eq. 10). Needs M >= 2."""
    n, m, _ = audio.shape
    if m < 2:
        raise ValueError("the DWD loss needs at least 2 instances per word (leave-one-out centroids)")
    sums = audio.sum(dim=1)  # (N, D)
    full = F.normalize(sums / m, dim=-1)  # centroids of other classes use all M instances
    own = F.normalize((sums[:, None] - audio) / (m - 1), dim=-1)  # (N, M, D) leave-one-out
    unit = F.normalize(audio, dim=-1)
    sims = torch.einsum("jid,kd->jik", unit, full)  # (N, M, N)
    own_sims = (unit * own).sum(-1)  # (N, M)
    index = torch.arange(n, device=audio.device)
    sims = sims.clone()
    sims[index, :, index] = own_sims
    return sims


def dwd_loss(audio: torch.Tensor) -> DWDTerms:
    """Deep Word Discrimination loss for audio (N, M, D), eqs 10-13.

    L_sm = -S_ji,j + log sum_k exp(S_ji,k) (eq. 11); L_cc = (1 - S_ji,j) + max_{k != j} S_ji,k
    (eq. 12); both are averaged over the N*M embeddings (the paper's eq. 12 writes a sum; a
    mean keeps the weight alpha2 independent of the batch size) and L_aa = L_sm + L_cc (eq. 13).
    """
    n, m, _ = audio.shape
    sims = dwd_similarities(audio)
    index = torch.arange(n, device=audio.device)
    positive = sims[index, :, index]  # (N, M)
    softmax = (-positive + torch.logsumexp(sims, dim=-1)).mean()
    others = sims.masked_fill(torch.eye(n, dtype=torch.bool, device=audio.device)[:, None, :], float("-inf"))
    hardest = others.max(dim=-1).values if n > 1 else torch.zeros_like(positive)
    centroid = ((1 - positive) + hardest).mean()
    return DWDTerms(softmax + centroid, softmax, centroid)


@dataclass
class JMCLLoss:
    total: torch.Tensor
    audio_text: torch.Tensor
    audio_audio: torch.Tensor
    dwd_softmax: torch.Tensor
    dwd_centroid: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        return {key: float(value.detach()) for key, value in self.__dict__.items()}


def jmcl_loss(
    audio: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    alpha_at: float = ALPHA_AT,
    alpha_aa: float = ALPHA_AA,
) -> JMCLLoss:
    """Eq. 14: alpha1 * mean_m L_at^(m) + alpha2 * L_aa for audio (N, M, D) and text (N, D)."""
    at = clap_loss(audio, text, logit_scale)
    aa = dwd_loss(audio)
    return JMCLLoss(alpha_at * at + alpha_aa * aa.total, at, aa.total, aa.softmax, aa.centroid)
