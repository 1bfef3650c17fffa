"""Which models the engine runs: the shipped defaults, or any checkpoints a user names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from archive_search.embedders.base import AudioEmbedder, Reranker, TextEmbedder
from archive_search.errors import CheckpointError

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
"""Shipped default weights, inside the package so an installed engine finds them."""


@dataclass
class ModelBundle:
    """The three seams the engine needs. `name` goes into the index: vectors from another
    bundle are refused rather than mixed."""

    name: str
    audio: AudioEmbedder
    text: TextEmbedder
    reranker: Reranker | None = None


def load_models(checkpoint_dir: str | Path | None = None, device: str | None = None) -> ModelBundle:
    """Load the JMCL encoders and the ParallelKWS reranker from `checkpoint_dir` (default: shipped)."""
    raise CheckpointError(f"{checkpoint_dir or CHECKPOINT_DIR}: no trained checkpoints are shipped yet")
