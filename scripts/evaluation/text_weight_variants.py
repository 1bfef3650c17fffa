"""The engine with another ParallelKWS text weight, as bundles for `archive-eval search --bundle`
(the choice in docs/experiments.md, "JMCL on whisper frames, shipped"):

    MODELS=work/s9/models PYTHONPATH=scripts/evaluation archive-eval search ... --bundle text_weight_variants:tw_10

MODELS (environment): the checkpoint folder (default: the shipped models). `tw_<weight %>` ranks
text hits by weight x ParallelKWS probability + (1 - weight) x JMCL similarity. `tts_kws_<weight %>`
is `--tts` with the folder's kws-whisper.pt, its second-stage score being weight x ParallelKWS
probability + (1 - weight) x the TTS voices' DTW score (docs/experiments.md, "ParallelKWS on whisper
frames, shipped as kws-whisper.pt"). Each variant's reranker is
renamed so that no `calibration.json` entry applies: it ranks by raw scores.
"""

import os

from archive_search.embedders.registry import load_models


def _variant(weight: float, field: str = "text_weight", text_scoring: str = "parallelkws"):
    def bundle():
        models = load_models(os.environ.get("MODELS") or None, text_scoring=text_scoring)
        setattr(models.reranker, field, weight)
        models.reranker.name = f"{models.reranker.name}~{field}{weight}"
        return models

    return bundle


for _percent in (0, 10, 25, 50):
    globals()[f"tw_{_percent}"] = _variant(_percent / 100)
for _percent in (0, 10, 25, 50, 75, 100):
    globals()[f"tts_kws_{_percent}"] = _variant(_percent / 100, "tts_kws_weight", "tts")
