"""load_models composes a ModelBundle from a folder of checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from archive_search.embedders import registry
from archive_search.embedders.ctc import CTCDims, save_ctc
from archive_search.embedders.jmcl import build_model, save_jmcl
from archive_search.embedders.parallelkws import KWSDims, ParallelKWS, save_kws
from archive_search.errors import CheckpointError


@pytest.fixture
def checkpoint_folder(tmp_path):
    torch.manual_seed(0)
    save_jmcl(tmp_path / registry.JMCL_FILE, build_model("tiny"))
    kws = ParallelKWS(KWSDims.tiny(speech=CTCDims.tiny(), time_stride=4))
    save_ctc(tmp_path / registry.CTC_FILE, kws.speech)
    save_kws(tmp_path / registry.KWS_FILE, kws)
    return tmp_path


def test_bundle_from_a_checkpoint_folder(checkpoint_folder):
    bundle = registry.load_models(checkpoint_folder, device="cpu")
    assert bundle.name == bundle.audio.name and bundle.name.startswith("jmcl-tiny-")
    assert bundle.reranker is not None
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 0.1, 16000).astype(np.float32)
    audio = bundle.audio.embed_spans(samples, np.array([[0.0, 0.5], [0.2, 1.0]]))
    text = bundle.text.embed_phonemes([["HH", "AH", "L", "OW"]])
    assert audio.shape == (2, bundle.audio.dim) and text.shape == (1, bundle.text.dim)
    scores = bundle.reranker.score_text([samples], ["HH", "AH", "L", "OW"], "hello")
    assert scores.shape == (1,) and 0.0 <= float(scores[0]) <= 1.0


def test_same_weights_give_the_same_name(checkpoint_folder):
    assert registry.load_models(checkpoint_folder, "cpu").name == registry.load_models(checkpoint_folder, "cpu").name


def test_without_reranker_checkpoints_the_bundle_retrieves_only(checkpoint_folder):
    (checkpoint_folder / registry.KWS_FILE).unlink()
    assert registry.load_models(checkpoint_folder, "cpu").reranker is None


def test_missing_jmcl_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="jmcl.pt"):
        registry.load_models(tmp_path)


def test_a_gse_reranker_needs_only_kws_pt(tmp_path, monkeypatch):
    from archive_search.embedders import frontends
    from tests.embedders.test_parallelkws import FakeFrontend

    monkeypatch.setattr(frontends, "SpeechEmbedding", lambda threads=1: FakeFrontend())
    torch.manual_seed(0)
    save_jmcl(tmp_path / registry.JMCL_FILE, build_model("tiny"))
    save_kws(tmp_path / registry.KWS_FILE, ParallelKWS(KWSDims.tiny(frontend="gse")))
    bundle = registry.load_models(tmp_path, device="cpu")
    assert bundle.reranker is not None and bundle.reranker.name.startswith("parallelkws-gse")
    samples = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    assert bundle.reranker.score_text([samples], [], "hello").shape == (1,)


@pytest.fixture
def gse_folder(tmp_path, monkeypatch):
    from archive_search.embedders import frontends
    from tests.embedders.test_parallelkws import FakeFrontend

    monkeypatch.setattr(frontends, "SpeechEmbedding", lambda threads=1: FakeFrontend())
    save_jmcl(tmp_path / registry.JMCL_FILE, build_model("tiny"))
    save_kws(tmp_path / registry.KWS_FILE, ParallelKWS(KWSDims.tiny(frontend="gse")))
    return tmp_path


def _save_whisper_kws(folder):
    save_kws(folder / registry.KWS_WHISPER_FILE, ParallelKWS(KWSDims.tiny(frontend="whisper", frontend_dim=24, frontend_mels=80)))


def test_tts_scoring_loads_the_whisper_kws_checkpoint_when_present(gse_folder):
    assert registry.load_models(gse_folder, device="cpu", text_scoring="tts").reranker.model.dims.frontend == "gse"
    _save_whisper_kws(gse_folder)
    assert registry.load_models(gse_folder, device="cpu", text_scoring="tts").reranker.model.dims.frontend == "whisper"
    assert registry.load_models(gse_folder, device="cpu").reranker.model.dims.frontend == "gse"  # the fast default path


def test_whisper_kws_scoring_reranks_text_with_kws_whisper_pt(gse_folder):
    with pytest.raises(CheckpointError, match="kws-whisper.pt"):
        registry.load_models(gse_folder, device="cpu", text_scoring="parallelkws-whisper")
    _save_whisper_kws(gse_folder)
    reranker = registry.load_models(gse_folder, device="cpu", text_scoring="parallelkws-whisper").reranker
    # the whisper model's probability alone, no TTS voices, and its own calibration key
    assert reranker.model.dims.frontend == "whisper" and reranker.text_scoring == "parallelkws"
    assert reranker.name.startswith("parallelkws-whisper") and "text-tts" not in reranker.name


def test_unknown_text_scoring_is_a_clear_error(gse_folder):
    with pytest.raises(CheckpointError, match="unknown text scoring 'spoken'"):
        registry.load_models(gse_folder, device="cpu", text_scoring="spoken")


def test_the_shipped_models_have_a_shipped_calibration():
    """calibration.json is keyed by model names; a name that drifts (say, a new dims field
    changing the weight hash) would silently turn the shipped calibration off."""
    from archive_search.search.calibration import scorer_name

    if not (registry.CHECKPOINT_DIR / registry.JMCL_FILE).exists():
        pytest.skip("no shipped checkpoints in this checkout")
    for text_scoring in registry.TEXT_SCORINGS:  # --tts has its own entry, keyed by its voices
        bundle = registry.load_models(device="cpu", text_scoring=text_scoring)
        reranker = bundle.reranker.name if bundle.reranker is not None else None
        assert scorer_name(bundle.name, reranker) in bundle.calibrations, (bundle.name, reranker, list(bundle.calibrations))
