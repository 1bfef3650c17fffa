"""The seams between the models and the rest of the engine.

Everything above the embedders (indexer, search, evaluation) uses only these protocols, so a
tiny random model in the tests and a trained checkpoint behave alike.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


@runtime_checkable
class AudioEmbedder(Protocol):
    """Maps audio to unit vectors in the shared audio-text space."""

    name: str
    """Model name and version, stored in the index; an index refuses vectors from another."""

    dim: int

    def embed_spans(self, samples: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """Embed windows of one 16 kHz mono signal.

        samples: (S,) float32. spans: (N, 2) float seconds [start, end) inside `samples`.
        Returns (N, dim) float32 unit vectors. Frame features are shared across the
        overlapping spans, which is what makes indexing fast.
        """
        ...

    def embed_clips(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Embed whole clips (each (S_i,) float32 at 16 kHz) -> (N, dim) float32 unit vectors."""
        ...


@runtime_checkable
class TextEmbedder(Protocol):
    """Maps phoneme sequences to unit vectors in the same space as the AudioEmbedder."""

    name: str
    dim: int

    def embed_phonemes(self, sequences: Sequence[Sequence[str]]) -> np.ndarray:
        """ARPAbet sequences (stress allowed) -> (N, dim) float32 unit vectors."""
        ...


@runtime_checkable
class Reranker(Protocol):
    """Scores whether a keyword is spoken in a region of audio."""

    name: str

    def score_text(self, regions: Sequence[np.ndarray], phonemes: Sequence[str], words: str) -> np.ndarray:
        """Regions (each (S_i,) float32, 16 kHz) against one text query -> (N,) probabilities."""
        ...

    def score_audio(self, regions: Sequence[np.ndarray], query: np.ndarray) -> np.ndarray:
        """Regions against one spoken query clip -> (N,) probabilities (query by example)."""
        ...
