"""Search: query -> vector -> FAISS candidates -> regions -> rerank -> calibrated, ranked hits."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from archive_search.audio import MIN_AUDIO_S, REGION_CONTEXT_S, SAMPLE_RATE, load_audio, load_segment, trim_silence
from archive_search.embedders.g2p import Pronunciation, pronounce
from archive_search.embedders.registry import ModelBundle
from archive_search.errors import AudioDecodeError, QueryError
from archive_search.search.calibration import scorer_name
from archive_search.search.regions import Candidate, Region, merge_regions
from archive_search.storage.store import Store

CANDIDATE_WINDOWS = 100
"""Nearest windows fetched from FAISS per query."""

RERANK_REGIONS = 10
"""Regions (best by retrieval similarity) that the reranker scores; `top` raises it if larger.
The reranker dominates query latency (docs/performance.md), so this is the latency knob."""

DEFAULT_THRESHOLD = 0.5
"""The engine's own yes/no decision point on its [0, 1] scores. With a calibration
(`search.calibration`) it is the development archive's MTWV point; evaluation reports ATWV here."""

MAX_QUERY_CLIP_S = 5.0
"""Seconds. Query-by-example clips are words or short phrases; longer clips are refused."""


@dataclass(frozen=True)
class Hit:
    """One place the query is spoken: absolute file path, start/end seconds, score in [0, 1]."""

    query: str
    file: str
    start: float
    end: float
    score: float

    def to_dict(self) -> dict:
        return asdict(self)


def retrieval_score(similarity: float) -> float:
    """Cosine similarity -> [0, 1] when there is no reranker: negative similarity is no match."""
    return float(min(1.0, max(0.0, similarity)))


class Searcher:
    """Searches one Store with one ModelBundle."""

    def __init__(self, store: Store, models: ModelBundle, candidates: int = CANDIDATE_WINDOWS, rerank_regions: int = RERANK_REGIONS):
        self.store = store
        self.models = models
        self.candidates = candidates
        self.rerank_regions = rerank_regions
        store.check_model(models.name, models.audio.dim)
        if models.text.dim != models.audio.dim:
            raise QueryError(f"model {models.name!r}: text vectors have {models.text.dim} dimensions, audio {models.audio.dim}")

    def search(self, text: str, top: int = 10, threshold: float | None = None) -> list[Hit]:
        """Ranked hits for a word or short phrase (QueryError for unusable text)."""
        pronunciation: Pronunciation = pronounce(text)
        vector = np.asarray(self.models.text.embed_phonemes([pronunciation.phonemes]), dtype=np.float32)
        reranker = self.models.reranker

        def rerank(audio: list[np.ndarray]) -> np.ndarray:
            return reranker.score_text(audio, pronunciation.phonemes, pronunciation.text)

        return self._search(text, "text", vector, rerank if reranker is not None else None, top, threshold)

    def search_audio(self, query: str | Path | np.ndarray, top: int = 10, threshold: float | None = None) -> list[Hit]:
        """Ranked hits for a spoken clip (a path, or 16 kHz mono float samples)."""
        if isinstance(query, (str, Path)):
            label = os.path.abspath(os.fspath(query))
            samples = load_audio(query)
        else:
            label = "<audio>"
            samples = np.asarray(query, dtype=np.float32).reshape(-1)
        if not np.isfinite(samples).all():
            raise QueryError("the query clip holds non-finite samples")
        clip = trim_silence(samples)
        if len(clip) < MIN_AUDIO_S * SAMPLE_RATE:
            raise QueryError(f"the query clip {label} is too short after trimming silence ({len(clip) / SAMPLE_RATE:.2f} s)")
        if np.max(np.abs(clip)) < 1e-3:
            raise QueryError(f"the query clip {label} is silent")
        if len(clip) > MAX_QUERY_CLIP_S * SAMPLE_RATE:
            raise QueryError(
                f"the query clip {label} is {len(clip) / SAMPLE_RATE:.1f} s long; at most {MAX_QUERY_CLIP_S:.0f} s "
                "(a word or short phrase) is searched"
            )
        vector = np.asarray(self.models.audio.embed_clips([clip]), dtype=np.float32)
        reranker = self.models.reranker

        def rerank(audio: list[np.ndarray]) -> np.ndarray:
            return reranker.score_audio(audio, clip)

        return self._search(label, "audio", vector, rerank if reranker is not None else None, top, threshold)

    def _score(self, kind: str, raw: float) -> float:
        """A raw score (reranker probability, else cosine similarity) -> the hit's [0, 1] score,
        calibrated when the bundle carries a calibration fitted for exactly these models."""
        reranker = self.models.reranker
        calibration = self.models.calibrations.get(scorer_name(self.models.name, reranker.name if reranker else None))
        if calibration is not None:
            return calibration.apply(kind, raw)
        return retrieval_score(raw)

    def _search(self, label: str, kind: str, vector: np.ndarray, rerank, top: int, threshold: float | None) -> list[Hit]:
        if top < 1:
            raise QueryError(f"top must be at least 1, not {top}")
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise QueryError(f"threshold must lie in [0, 1], not {threshold}")
        result = self.store.vectors.search(vector.reshape(1, -1), max(self.candidates, 2 * top))[0]
        rows = self.store.windows(result.ids.tolist())  # vectors of deleted files have no row: skipped
        candidates = [
            Candidate(rows[i].file, rows[i].start, rows[i].end, float(s))
            for i, s in zip(result.ids.tolist(), result.scores.tolist())
            if i in rows
        ]
        durations = {rows[i].file: rows[i].file_duration for i in rows}
        regions = merge_regions(candidates)
        if rerank is not None:
            chosen = regions[: max(self.rerank_regions, top)]
            scores = self._rerank(chosen, durations, rerank)
            # A reranker may declare how much its score counts against the retrieval similarity
            # (KWSReranker: text 0.25, chosen on a dev set; see docs/models.md); default: all.
            weight = float(getattr(self.models.reranker, f"{kind}_weight", 1.0))
            kept = [(region, self._score(kind, weight * score + (1 - weight) * region.similarity))
                    for region, score in zip(chosen, scores) if score is not None]  # fmt: skip
        else:
            kept = [(region, self._score(kind, region.similarity)) for region in regions]
        kept.sort(key=lambda pair: -pair[1])
        hits: list[Hit] = []
        for region, score in kept:
            if threshold is not None and score < threshold:
                continue
            start, end = region.hit_span()
            pad = REGION_CONTEXT_S
            if any(h.file == region.file and start < h.end + pad and h.start - pad < end for h in hits):
                continue  # a neighbour of a better hit (it reranks high on the shared context): one hit per place
            hits.append(Hit(label, region.file, round(start, 3), round(end, 3), round(float(score), 4)))
            if len(hits) == top:
                break
        return hits

    def _rerank(self, regions: list[Region], durations: dict[str, float], rerank) -> list[float | None]:
        audio, slots = [], []
        for slot, region in enumerate(regions):
            # Rerank the hit span (the best window, at most the longest scale) plus context,
            # not the whole merged region: the reranker's cost grows with the audio it reads.
            hit_start, hit_end = region.hit_span()
            start = max(0.0, hit_start - REGION_CONTEXT_S)
            end = min(durations.get(region.file, hit_end), hit_end + REGION_CONTEXT_S)
            try:
                samples = load_segment(region.file, start, end)
            except (AudioDecodeError, OSError):
                continue  # the file changed or vanished since indexing: drop its regions
            if len(samples) == 0:
                continue
            audio.append(samples)
            slots.append(slot)
        scores: list[float | None] = [None] * len(regions)
        if audio:
            probabilities = np.clip(np.asarray(rerank(audio), dtype=np.float64).reshape(-1), 0.0, 1.0)
            for slot, probability in zip(slots, probabilities):
                scores[slot] = float(np.nan_to_num(probability, nan=0.0))
        return scores


CLIP_CONTEXT_S = 0.25
"""Seconds of audio kept on each side of a hit when it is written out as a clip."""


def write_clip(hit: Hit, folder: str | Path, rank: int, context_s: float = CLIP_CONTEXT_S) -> Path:
    """Write a hit's audio (plus `context_s` each side) as a 16 kHz wav in `folder`; returns its path."""
    import soundfile as sf

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = load_segment(hit.file, max(0.0, hit.start - context_s), hit.end + context_s)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(hit.file).stem)[:60]
    target = folder / f"{rank:02d}_{stem}_{hit.start:.2f}-{hit.end:.2f}.wav"
    sf.write(str(target), samples, SAMPLE_RATE, subtype="PCM_16")
    return target
