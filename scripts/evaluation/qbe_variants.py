"""Second stages for spoken queries, as bundles for `archive-eval search --bundle` (the comparison
in docs/experiments.md, "Query by example on whisper frames, shipped"). Each is the shipped
models with the reranker's query-by-example scoring changed; text queries are unchanged.

    PYTHONPATH=scripts/evaluation archive-eval search ... --bundle qbe_variants:whisper_joint_100

Names: <frames>_<how>_<weight %>, weight = how much the DTW score counts against the JMCL
similarity (the engine's `audio_weight`). `whisper_joint` is what the engine ships;
`tts_text_<weight %>` and `parallelkws_text` vary text queries instead, and
`tts_voices_<voices>` the TTS voices that speak them (the synthesizers of `data.tts`). Every
variant ranks by its raw score: its reranker name matches no `calibration.json` entry, since a
calibration fitted for another scorer can saturate (scores round to ties) and distort MAP.
"""

import functools
from dataclasses import dataclass

import numpy as np

from archive_search.embedders.registry import load_models
from archive_search.embedders.rerank import KWSReranker, subsequence_dtw_similarity, unit_rows
from archive_search.embedders.whisper_encoder import WhisperEncoder, standardise


@dataclass
class WhisperVariant(KWSReranker):
    """Whisper-frame DTW with the query encoded apart from the regions."""

    regions_padded: bool = True
    """Regions packed into padded 30 s inputs (else each region encoded alone, unpadded)."""
    query_padded: bool = True
    standardise: bool = True

    def _states(self, frames: np.ndarray) -> np.ndarray:
        return unit_rows(standardise(frames) if self.standardise and len(frames) > 1 else frames)

    def score_audio(self, regions, query):
        padded, unpadded = _encoder(True), _encoder(False)
        query_states = self._states((padded if self.query_padded else unpadded).frames(query))
        if self.regions_padded:
            region_frames = padded.frames_packed(list(regions))
        else:
            region_frames = [unpadded.frames(r) for r in regions]
        return np.array([subsequence_dtw_similarity(query_states, self._states(r)) for r in region_frames], dtype=np.float32)


@functools.cache
def _encoder(pad: bool) -> WhisperEncoder:
    return WhisperEncoder(pad=pad)


def _shipped(qbe_features: str, weight: float, variant: dict | None = None):
    models = load_models()
    shipped = models.reranker
    cls = WhisperVariant if variant is not None else KWSReranker
    name = f"{shipped.name}~variant"  # uncalibrated
    models.reranker = cls(shipped.model, name=name, qbe_features=qbe_features, audio_weight=weight, **(variant or {}))
    return models


for _weight in (0, 25, 50, 75, 100):
    globals()[f"gse_{_weight}"] = lambda w=_weight / 100: _shipped("gse", w)
    globals()[f"whisper_joint_{_weight}"] = lambda w=_weight / 100: _shipped("whisper", w)
    globals()[f"whisper_split_{_weight}"] = lambda w=_weight / 100: _shipped("whisper", w, {})
# text queries spoken by espeak-ng, then scored as spoken queries (load_models(text_scoring="tts")),
# with the weight of that score against the JMCL similarity varied
for _weight in (25, 50, 75, 100):
    globals()[f"tts_text_{_weight}"] = lambda w=_weight / 100: _tts_text(w)


def parallelkws_text():
    """The shipped text scoring (ParallelKWS, weight 0.25), uncalibrated like the variants."""
    models = load_models()
    models.reranker.name += "~variant"
    return models


def _tts_text(weight: float):
    models = load_models(text_scoring="tts")
    models.reranker.text_weight = weight
    models.reranker.name += "~variant"  # uncalibrated
    return models


whisper_each_100 = lambda: _shipped("whisper", 1.0, {"regions_padded": False})
whisper_raw_100 = lambda: _shipped("whisper", 1.0, {"standardise": False})
whisper_unpadded_100 = lambda: _shipped("whisper", 1.0, {"regions_padded": False, "query_padded": False})


@dataclass
class MultiVoiceText(KWSReranker):
    """Text queries spoken by several TTS voices; each region's DTW scores against the clips are
    pooled ("mean" or "max")."""

    voices: tuple = ()
    pool: str = "mean"

    def score_text(self, regions, phonemes, words):
        from archive_search.audio import trim_silence
        from archive_search.data.tts import synthesize

        clips = [trim_silence(synthesize(words, voice).samples, top_db=40) for voice in self.voices]
        states = self.frame_states([*clips, *regions])
        queries, region_states = states[: len(clips)], states[len(clips) :]
        scores = np.array([[subsequence_dtw_similarity(q, r) for r in region_states] for q in queries])
        return (scores.mean(0) if self.pool == "mean" else scores.max(0)).astype(np.float32)


def _voices(*names):
    from archive_search.data.tts import Voice

    table = {
        "espeak": Voice("espeak", "en-us", rate=150 / 175),
        "slt": Voice("flite", "slt"),
        "awb": Voice("flite", "awb"),
        "kal16": Voice("flite", "kal16"),
        "hts": Voice("festival", "cmu_us_slt_arctic_hts"),
        "gb": Voice("espeak", "en", variant="f3", rate=150 / 175),
    }
    return tuple(table[n] for n in names)


def _multi_voice(names, pool="mean", weight=0.75):
    models = load_models()
    shipped = models.reranker
    models.reranker = MultiVoiceText(shipped.model, name=f"{shipped.name}~variant", text_scoring="tts", text_weight=weight,
                                     voices=_voices(*names), pool=pool)  # fmt: skip
    return models


tts_voices_espeak = lambda: _multi_voice(["espeak"])
tts_voices_slt = lambda: _multi_voice(["slt"])
tts_voices_espeak_slt = lambda: _multi_voice(["espeak", "slt"])
tts_voices_espeak_slt_awb = lambda: _multi_voice(["espeak", "slt", "awb"])
tts_voices_espeak_slt_awb_max = lambda: _multi_voice(["espeak", "slt", "awb"], pool="max")
tts_voices_four = lambda: _multi_voice(["espeak", "slt", "awb", "gb"])
tts_voices_hts = lambda: _multi_voice(["espeak", "slt", "hts"])


@dataclass
class SpokenAndParallelKWS(KWSReranker):
    """`--tts` scoring mixed with the ParallelKWS probability: (1 - mix) x DTW + mix x probability
    (the mean of the two beat both on LibriPhrase-style dev trials, docs/experiments.md)."""

    mix: float = 0.5

    def score_text(self, regions, phonemes, words):
        spoken = super().score_text(regions, phonemes, words)
        self.text_scoring = "parallelkws"
        try:
            probability = super().score_text(regions, phonemes, words)
        finally:
            self.text_scoring = "tts"
        return ((1 - self.mix) * spoken + self.mix * probability).astype(np.float32)


def _spoken_and_parallelkws(mix: float):
    models = load_models(text_scoring="tts")
    shipped = models.reranker
    models.reranker = SpokenAndParallelKWS(shipped.model, name=f"{shipped.name}~variant", text_scoring="tts",
                                           text_weight=shipped.text_weight, mix=mix)  # fmt: skip
    return models


tts_voices_with_parallelkws_25 = lambda: _spoken_and_parallelkws(0.25)
tts_voices_with_parallelkws_50 = lambda: _spoken_and_parallelkws(0.5)
