"""Which models the engine runs: the shipped defaults, or any checkpoints a user names."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from archive_search.embedders.base import AudioEmbedder, Reranker, TextEmbedder
from archive_search.errors import CheckpointError

if TYPE_CHECKING:
    from archive_search.embedders.transcriber import Transcriber
    from archive_search.search.calibration import Calibration
    from archive_search.search.fusion import Fusion

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
"""Shipped default weights, inside the package so an installed engine finds them."""

JMCL_FILE = "jmcl.pt"
CTC_FILE = "ctc.pt"
KWS_FILE = "kws.pt"
KWS_WHISPER_FILE = "kws-whisper.pt"
"""ParallelKWS on whisper frames: the reranker of text_scoring="parallelkws-whisper" and "tts" (too
slow for the default text path's latency target: it runs whisper over the regions)."""

TEXT_SCORINGS = ("parallelkws", "parallelkws-whisper", "tts")
"""How the engine scores text queries, fastest first: kws.pt's ParallelKWS (speech-embedding
frames, ~0.1 s per query on CPU); kws-whisper.pt's ParallelKWS (whisper frames, ~0.5 s, better
text MAP on every held-out set); the query's words spoken by TTS voices and reranked as a spoken
query with kws-whisper.pt mixed in (~1-2 s, best). docs/models.md has the figures."""


@dataclass
class ModelBundle:
    """The three seams the engine needs. `name` goes into the index: vectors from another
    bundle are refused rather than mixed."""

    name: str
    audio: AudioEmbedder
    text: TextEmbedder
    reranker: Reranker | None = None
    calibrations: "dict[str, Calibration]" = field(default_factory=dict)
    """Raw score -> [0, 1] maps fitted on development data (`calibration.json` beside the
    checkpoints), by scorer name; the engine applies the one of the scorer it searches with."""
    fusions: "dict[str, dict[str, Fusion]]" = field(default_factory=dict)
    """Evidence fusions fitted on development data (`fusion.json`), by scorer name and query kind;
    used on indexes that keep transcripts."""
    transcriber_factory: "Callable[[], Transcriber] | None" = None
    """Makes the transcriber on first use (indexing, and query by example on a transcribed index)."""
    _transcriber: "Transcriber | None" = field(default=None, repr=False)

    @property
    def transcriber(self) -> "Transcriber | None":
        if self._transcriber is None and self.transcriber_factory is not None:
            self._transcriber = self.transcriber_factory()
        return self._transcriber


def load_models(checkpoint_dir: str | Path | None = None, device: str | None = None, text_scoring: str = "parallelkws") -> ModelBundle:
    """Load the JMCL encoders and, when its two checkpoints are present, the ParallelKWS reranker.

    checkpoint_dir holds jmcl.pt, ctc.pt, kws.pt, kws-whisper.pt and calibration.json (default:
    the shipped ones); a kws.pt on the "gse" front-end needs no ctc.pt. device: torch device
    name; default CUDA when available, else CPU. text_scoring: one of `TEXT_SCORINGS`;
    "parallelkws-whisper" needs kws-whisper.pt, and "tts" uses it, when present, instead of
    kws.pt. The bundle's name is the JMCL model's, since the index stores only JMCL audio vectors.
    """
    from archive_search.embedders.jmcl import default_device, load_jmcl
    from archive_search.embedders.parallelkws import read_kws_dims
    from archive_search.embedders.rerank import load_reranker
    from archive_search.embedders.transcriber import WhisperTranscriber
    from archive_search.search.calibration import CALIBRATION_FILE, load_calibrations
    from archive_search.search.fusion import FUSION_FILE, load_fusions

    if text_scoring not in TEXT_SCORINGS:
        raise CheckpointError(f"unknown text scoring {text_scoring!r}; one of {', '.join(TEXT_SCORINGS)}")
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else CHECKPOINT_DIR
    if not (directory / JMCL_FILE).is_file():
        raise CheckpointError(f"{directory / JMCL_FILE}: JMCL checkpoint not found")
    resolved = default_device(device)
    audio, text = load_jmcl(directory / JMCL_FILE, resolved)
    reranker = None
    kws_path, ctc_path = directory / KWS_FILE, directory / CTC_FILE
    if text_scoring == "parallelkws-whisper" and not (directory / KWS_WHISPER_FILE).is_file():
        raise CheckpointError(f"{directory / KWS_WHISPER_FILE}: text scoring {text_scoring!r} needs this checkpoint; not found")
    if text_scoring != "parallelkws" and (directory / KWS_WHISPER_FILE).is_file():
        kws_path = directory / KWS_WHISPER_FILE
    # the reranker itself knows two ways to score text: its model's probability, or TTS voices
    reranker_scoring = "tts" if text_scoring == "tts" else "parallelkws"
    # A ParallelKWS on the pre-trained speech embedding needs only kws.pt; the paper's
    # conformer path needs ctc.pt as well (without it the engine searches without a reranker).
    if kws_path.is_file() and (ctc_path.is_file() or not read_kws_dims(kws_path).uses_conformer):
        reranker = load_reranker(ctc_path if ctc_path.is_file() else None, kws_path, device=str(resolved), text_scoring=reranker_scoring)
    whisper_device = "cuda" if str(resolved).startswith("cuda") else "cpu"
    return ModelBundle(audio.name, audio, text, reranker, load_calibrations(directory / CALIBRATION_FILE),
                       load_fusions(directory / FUSION_FILE), lambda: WhisperTranscriber(threads=_threads(), device=whisper_device))  # fmt: skip


def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())
