"""Search: query -> candidates from every channel -> regions -> rerank -> one score -> ranked hits."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from archive_search.audio import MIN_AUDIO_S, REGION_CONTEXT_S, SAMPLE_RATE, load_audio, load_segment, trim_silence
from archive_search.embedders.g2p import MAX_QUERY_WORDS, Pronunciation, pronounce, word_phonemes
from archive_search.embedders.registry import ModelBundle
from archive_search.errors import AudioDecodeError, QueryError
from archive_search.search.calibration import scorer_name
from archive_search.search.fusion import PRIOR_FUSION, Evidence, Fusion, QueryContext, feature_matrix, fuse
from archive_search.search.regions import Candidate, Region, merge_regions
from archive_search.search.transcripts import TranscriptIndex, TranscriptMatch
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


CHANNELS = ("vectors", "exact", "phonetic")
"""Candidate sources, in the order they are merged: JMCL's nearest windows, exact transcript
word matches, phonetic near matches in the transcript. A Searcher may run any subset (ablation)."""

VERIFIED_KIND = "text-verified"
"""The fusion that scores text-query regions the verifier checked (`verify_regions`)."""

VERIFY_CONTEXT_S = 0.25
"""Seconds of audio around a region that the verifier's whisper pass hears."""

QBE_MIN_WORD_PROBABILITY = 0.5
"""A query clip whose transcript's mean word probability is below this is searched acoustically
only: whisper is unsure of what was said, and wrong words would find wrong places."""


@dataclass(frozen=True)
class Hit:
    """One place the query is spoken: absolute file path, start/end seconds, score in [0, 1], and
    the transcript words around it when the index keeps transcripts."""

    query: str
    file: str
    start: float
    end: float
    score: float
    text: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def retrieval_score(similarity: float) -> float:
    """Cosine similarity -> [0, 1] when there is no reranker: negative similarity is no match."""
    return float(min(1.0, max(0.0, similarity)))


@dataclass
class QueryEvidence:
    """Every candidate region of one query with its evidence, before scoring (`Searcher.gather`)."""

    label: str
    kind: str
    """"text" or "audio"."""
    regions: list[Evidence]
    context: QueryContext
    fused: bool
    """True when the transcript channels were searched: the fusion scores the regions."""
    transcripts: TranscriptIndex | None = None
    """The index's transcript words as this query saw them (for the words around each hit)."""

    def features(self) -> np.ndarray:
        """(N, len(FEATURES)) evidence columns of the regions."""
        return feature_matrix(self.regions, self.context)


class Searcher:
    """Searches one Store with one ModelBundle.

    Stages, in order: candidates from each channel (`CHANNELS`), merged into regions; the
    reranker scores the most promising regions; one score per region (the fusion when the
    index keeps transcripts, else the calibrated acoustic score); one hit per place."""

    def __init__(self, store: Store, models: ModelBundle, candidates: int = CANDIDATE_WINDOWS, rerank_regions: int = RERANK_REGIONS,
                 channels: Sequence[str] = CHANNELS, verify_regions: int = 0):  # fmt: skip
        """verify_regions: text queries' best regions that whisper verifies by forced decoding
        (opt-in: about half a second of CPU each) when the bundle has a verified fusion."""
        self.store = store
        self.models = models
        self.candidates = candidates
        self.rerank_regions = rerank_regions
        if verify_regions < 0:
            raise QueryError(f"verify_regions must be 0 or more, not {verify_regions}")
        self.verify_regions = verify_regions
        unknown = set(channels) - set(CHANNELS)
        if unknown:
            raise QueryError(f"unknown search channels {sorted(unknown)}; known: {', '.join(CHANNELS)}")
        self.channels = tuple(channels)
        self._transcripts: TranscriptIndex | None = None
        self._transcripts_version: tuple[int, float] | None = None
        store.check_model(models.name, models.audio.dim)
        if models.text.dim != models.audio.dim:
            raise QueryError(f"model {models.name!r}: text vectors have {models.text.dim} dimensions, audio {models.audio.dim}")

    # -- public stages ------------------------------------------------------------------
    def search(self, text: str, top: int = 10, threshold: float | None = None) -> list[Hit]:
        """Ranked hits for a word or short phrase (QueryError for unusable text)."""
        return self.hits(self.gather(text, top), top, threshold)

    def search_audio(self, query: str | Path | np.ndarray, top: int = 10, threshold: float | None = None) -> list[Hit]:
        """Ranked hits for a spoken clip (a path, or 16 kHz mono float samples)."""
        return self.hits(self.gather_audio(query, top), top, threshold)

    def gather(self, text: str, top: int = 10, fuse_transcript: bool | None = None) -> QueryEvidence:
        """A text query's candidate regions with every channel's evidence, reranked.

        fuse_transcript None: as `fuses("text")` decides for this bundle."""
        _check_top(top)
        pronunciation: Pronunciation = pronounce(text)
        vector = np.asarray(self.models.text.embed_phonemes([pronunciation.phonemes]), dtype=np.float32)
        reranker = self.models.reranker

        def rerank(audio: list[np.ndarray]) -> np.ndarray:
            return reranker.score_text(audio, pronunciation.phonemes, pronunciation.text)

        evidence = self._gather(text, "text", vector, pronunciation.words, pronunciation.phonemes,
                                rerank if reranker is not None else None, top,
                                self.fuses("text") if fuse_transcript is None else fuse_transcript)  # fmt: skip
        if self.verify_regions:
            if self.verified_fusion() is None:
                raise QueryError(f"verification needs a fusion fitted for verified regions, and scorer {self._scorer()!r} has none: "
                                 "use the default text scoring")  # fmt: skip
            if not evidence.fused:
                raise QueryError("verification works on an index with transcripts; this one has none (re-index without --no-transcript)")
            self.verify(evidence, " ".join(pronunciation.words), self.verify_regions)
        return evidence

    def verify(self, evidence: QueryEvidence, text: str, count: int) -> None:
        """Whisper's forced decoding of `text` over the `count` best regions (by the fusion), in
        place: their `forced` columns (`fusion.VERIFY_FEATURES`). Regions whose audio cannot be read
        stay unverified."""
        transcriber = self.models.transcriber
        if transcriber is None or not evidence.regions:
            return
        order = np.argsort(-fuse(evidence.features(), self.fusion("text")), kind="stable")[:count]
        chosen, clips = [], []
        for index in order.tolist():
            region = evidence.regions[index]
            try:
                clip = load_segment(region.file, max(0.0, region.start - VERIFY_CONTEXT_S), region.end + VERIFY_CONTEXT_S)
            except (AudioDecodeError, OSError):
                continue
            if len(clip):
                chosen.append(region)
                clips.append(clip)
        for region, row in zip(chosen, transcriber.query_likelihood(clips, text) if clips else []):
            region.forced = tuple(float(v) for v in row)

    def verified_fusion(self) -> Fusion | None:
        """The fusion for verified text-query regions, when this bundle's scorer has one."""
        return self.models.fusions.get(self._scorer(), {}).get(VERIFIED_KIND)

    def fuses(self, kind: str) -> bool:
        """Whether queries of this kind fuse the transcript channels: when the bundle has a fusion
        fitted for its scorer, or no calibration either (the prior fusion, e.g. untrained models).
        A calibrated scorer without a fusion (a mode it was not fitted for) keeps its calibrated
        acoustic path: an unfitted fusion would not put its threshold where 0.5 means yes."""
        scorer = self._scorer()
        return kind in self.models.fusions.get(scorer, {}) or scorer not in self.models.calibrations

    def gather_audio(self, query: str | Path | np.ndarray, top: int = 10, fuse_transcript: bool | None = None) -> QueryEvidence:
        """A spoken query's candidate regions: acoustic ones and, with `fuse_transcript`, the
        transcript channels searched with the clip's own words when whisper hears them clearly
        (then the fusion scores them; otherwise the clip keeps the acoustic path alone).

        fuse_transcript None: when the bundle has a fusion fitted for spoken queries."""
        _check_top(top)
        label, clip = _query_clip(query)
        vector = np.asarray(self.models.audio.embed_clips([clip]), dtype=np.float32)
        reranker = self.models.reranker
        words, phonemes = (), ()
        transcriber = self.models.transcriber
        if fuse_transcript is None:
            fuse_transcript = "audio" in self.models.fusions.get(self._scorer(), {})  # spoken: fitted fusions only
        if fuse_transcript and transcriber is not None and self.transcripts() is not None:
            heard = transcriber.transcribe(clip)
            if heard and float(np.mean([w.probability for w in heard])) >= QBE_MIN_WORD_PROBABILITY:
                words = tuple(w.token for w in heard)[:MAX_QUERY_WORDS]
                phonemes = tuple(p for token in words for p in word_phonemes(token))

        def rerank(audio: list[np.ndarray]) -> np.ndarray:
            return reranker.score_audio(audio, clip)

        # a clip whisper did not hear clearly keeps the acoustic path and its calibrated score
        use_transcripts = bool(fuse_transcript and words)
        return self._gather(label, "audio", vector, words, phonemes, rerank if reranker is not None else None, top, use_transcripts)

    def hits(self, evidence: QueryEvidence, top: int = 10, threshold: float | None = None, scores: np.ndarray | None = None) -> list[Hit]:
        """Score the regions (or take `scores`, (N,) in [0, 1], e.g. an evaluation's candidate
        fusion), drop those under `threshold`, keep one hit per place, best first."""
        _check_top(top)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise QueryError(f"threshold must lie in [0, 1], not {threshold}")
        scores = self.score(evidence) if scores is None else np.asarray(scores, dtype=np.float64)
        return hits_of(evidence.label, evidence.regions, scores, top, threshold, evidence.transcripts)

    def score(self, evidence: QueryEvidence) -> np.ndarray:
        """(N,) scores in [0, 1] of the query's regions."""
        if not evidence.regions:
            return np.zeros(0)
        if evidence.fused:
            features = evidence.features()
            scores = fuse(features, self.fusion(evidence.kind))
            verified, checked = [i for i, region in enumerate(evidence.regions) if region.forced is not None], self.verified_fusion()
            if verified and checked is not None:
                scores[verified] = fuse(features[verified], checked)
            return scores
        reranker = self.models.reranker
        # A reranker may declare how much its score counts against the retrieval similarity
        # (KWSReranker's weights are chosen on development archives, docs/experiments.md); default: all.
        weight = float(getattr(reranker, f"{evidence.kind}_weight", 1.0)) if reranker is not None else 0.0
        calibration = self.models.calibrations.get(scorer_name(self.models.name, reranker.name if reranker else None))
        raw = [weight * (r.rerank or 0.0) + (1 - weight) * (r.similarity or 0.0) for r in evidence.regions]
        if calibration is not None:
            return np.array([calibration.apply(evidence.kind, value) for value in raw])
        return np.array([retrieval_score(value) for value in raw])

    def fusion(self, kind: str) -> Fusion:
        """The fusion fitted for this bundle's scorer and query kind, else the prior."""
        return self.models.fusions.get(self._scorer(), {}).get(kind, PRIOR_FUSION)

    def _scorer(self) -> str:
        reranker = self.models.reranker
        return scorer_name(self.models.name, reranker.name if reranker else None)

    def transcripts(self) -> TranscriptIndex | None:
        """The index's transcript words (reloaded when an indexer has written new ones); None for
        an acoustic-only index or when no transcript channel is on."""
        if self.store.transcript_model is None:
            self.store.reload_meta()
        if self.store.transcript_model is None or not {"exact", "phonetic"} & set(self.channels):
            return None
        version = self.store.transcript_version()
        if self._transcripts is None or version != self._transcripts_version:
            self._transcripts = TranscriptIndex.from_store(self.store)
            self._transcripts_version = version
        return self._transcripts

    # -- stages -------------------------------------------------------------------------
    def _gather(self, label: str, kind: str, vector: np.ndarray, words: Sequence[str], phonemes: Sequence[str],
                rerank, top: int, use_transcripts: bool = True) -> QueryEvidence:  # fmt: skip
        # 1. JMCL's nearest windows, merged into regions around peaks
        regions, floor = self._vector_regions(vector, top) if "vectors" in self.channels else ([], 0.0)
        evidence = [Evidence(r.file, *r.hit_span(), similarity=r.similarity, sources={"vectors"}) for r in regions]
        # 2. transcript matches join the region they fall in, or stand as regions of their own
        available = self.transcripts()  # loaded once per query: the hits' context words come from it too
        transcripts = available if use_transcripts else None
        fused = transcripts is not None
        context = QueryContext(len(phonemes), 0, False, floor)
        if transcripts is not None and words:
            matches = transcripts.exact(words) if "exact" in self.channels else []
            context = QueryContext(len(phonemes), len(matches), all(w in transcripts for w in words), floor)
            if "phonetic" in self.channels:
                matches += transcripts.phonetic(phonemes, len(words))
            _merge_matches(evidence, matches)
        # 3. the reranker scores the most promising regions; the rest are dropped
        if fused:
            prior = fuse(feature_matrix(evidence, context), PRIOR_FUSION)
            evidence = [evidence[i] for i in np.argsort(-prior, kind="stable")]
        if rerank is not None:
            evidence = evidence[: max(self.rerank_regions, top)]
            for item, score in zip(evidence, self._rerank(evidence, rerank)):
                item.rerank = score
            evidence = [item for item in evidence if item.rerank is not None]
        return QueryEvidence(label, kind, evidence, context, fused, available)

    def _vector_regions(self, vector: np.ndarray, top: int) -> tuple[list[Region], float]:
        """Regions of the nearest windows, best first, and the lowest similarity returned."""
        result = self.store.vectors.search(vector.reshape(1, -1), max(self.candidates, 2 * top))[0]
        rows = self.store.windows(result.ids.tolist())  # vectors of deleted files have no row: skipped
        candidates = [
            Candidate(rows[i].file, rows[i].start, rows[i].end, float(s))
            for i, s in zip(result.ids.tolist(), result.scores.tolist())
            if i in rows
        ]
        floor = min((c.similarity for c in candidates), default=0.0)
        return merge_regions(candidates), floor

    def _rerank(self, regions: list[Evidence], rerank) -> list[float | None]:
        audio, slots = [], []
        for slot, region in enumerate(regions):
            # Rerank the hit span plus context, not a whole merged region: the reranker's cost
            # grows with the audio it reads.
            start = max(0.0, region.start - REGION_CONTEXT_S)
            end = region.end + REGION_CONTEXT_S
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


def hits_of(label: str, regions: Sequence[Evidence], scores: np.ndarray, top: int, threshold: float | None = None,
            transcripts: TranscriptIndex | None = None) -> list[Hit]:  # fmt: skip
    """Regions with their (N,) scores -> at most `top` hits, best first, at least `threshold`,
    one per place (a region near a better hit is its neighbour, not another hit), with the
    transcript words around each when `transcripts` is given."""
    hits: list[Hit] = []
    for index in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        region, score = regions[index], float(scores[index])
        if threshold is not None and score < threshold:
            break
        start, end = region.start, region.end
        pad = REGION_CONTEXT_S
        if any(h.file == region.file and start < h.end + pad and h.start - pad < end for h in hits):
            continue  # a neighbour of a better hit (it reranks high on the shared context): one hit per place
        text = transcripts.words_around(region.file, start, end) if transcripts is not None else None
        hits.append(Hit(label, region.file, round(start, 3), round(end, 3), round(score, 4), text))
        if len(hits) == top:
            break
    return hits


MATCH_TOLERANCE_S = 0.3
"""Seconds. A transcript match joins a region whose span it overlaps or nearly touches: window
edges and whisper's word times both err by about this much."""


def _merge_matches(evidence: list[Evidence], matches: Sequence[TranscriptMatch]) -> None:
    """Attach each transcript match to the acoustic region it overlaps (its words' times become
    the region's span), or add it as a region of its own: one region per place, whatever the
    channels that found it."""
    for match in matches:
        middle = (match.start + match.end) / 2
        home = None
        for item in evidence:
            if item.file == match.file and item.start - MATCH_TOLERANCE_S <= middle <= item.end + MATCH_TOLERANCE_S:
                if home is None or abs((item.start + item.end) / 2 - middle) < abs((home.start + home.end) / 2 - middle):
                    home = item
        if home is None:
            home = Evidence(match.file, match.start, match.end)
            evidence.append(home)
        home.add_match(match)
        home.start, home.end = home.transcript_span


def _check_top(top: int) -> None:
    if top < 1:
        raise QueryError(f"top must be at least 1, not {top}")


def _query_clip(query: str | Path | np.ndarray) -> tuple[str, np.ndarray]:
    """A query clip's label and its samples, silence trimmed; QueryError when it is unusable."""
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
    return label, clip


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
