import dataclasses

import numpy as np
import pytest
import torch

from archive_search.embedders.base import Reranker
from archive_search.embedders.ctc import CTCConformer, CTCDims, save_ctc
from archive_search.embedders.parallelkws import KWSDims, ParallelKWS, save_kws
from archive_search.embedders.rerank import TEXT_WEIGHT, KWSReranker, load_reranker, subsequence_dtw_similarity, tiny_reranker


def _regions(seed=0, seconds=(1.0, 2.5, 1.7)):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def test_tiny_reranker_is_a_reranker_with_batch_independent_probabilities():
    reranker = tiny_reranker(seed=0)
    assert isinstance(reranker, Reranker)
    regions = _regions()
    scores = reranker.score_text(regions, ["K", "AE", "T"], "cat")
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    alone = reranker.score_text(regions[1:2], ["K", "AE", "T"], "cat")
    np.testing.assert_allclose(alone[0], scores[1], atol=1e-5)
    other = reranker.score_text(regions, ["D", "AO", "G"], "dog")
    assert not np.allclose(scores, other)
    assert reranker.score_text([], ["K"], "cat").shape == (0,)


def test_subsequence_dtw_finds_the_query_inside_a_region():
    rng = np.random.default_rng(0)
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
    query = unit(rng.standard_normal((5, 8)))
    # the query, each frame held twice, between unrelated frames
    region = unit(np.concatenate([rng.standard_normal((6, 8)), np.repeat(query, 2, axis=0), rng.standard_normal((4, 8))]))
    assert subsequence_dtw_similarity(query, region) == pytest.approx(1.0, abs=1e-6)
    orthogonal = np.eye(8)[:4]
    assert subsequence_dtw_similarity(orthogonal[:2], orthogonal[2:]) == pytest.approx(0.0)
    assert subsequence_dtw_similarity(query, region[:0]) == 0.0


def test_score_audio_prefers_the_region_holding_the_clip():
    reranker = tiny_reranker(seed=1)
    regions = _regions(seed=3)
    query = regions[1].copy()
    scores = reranker.score_audio(regions, query)
    assert scores.shape == (3,) and np.argmax(scores) == 1 and scores[1] == pytest.approx(1.0, abs=1e-5)
    fbank = KWSReranker(reranker.model, qbe_features="fbank").score_audio(regions, query)
    assert np.argmax(fbank) == 1 and fbank[1] == pytest.approx(1.0, abs=1e-5)


def test_load_reranker_round_trip(tmp_path):
    torch.manual_seed(0)
    speech = CTCConformer(CTCDims.tiny())
    model = ParallelKWS(KWSDims.tiny(time_stride=4))
    model.speech.load_state_dict(speech.state_dict())
    save_ctc(tmp_path / "ctc.pt", speech, half=True)
    save_kws(tmp_path / "kws.pt", model, extra={"version": "v1"}, half=True)
    reranker = load_reranker(tmp_path / "ctc.pt", tmp_path / "kws.pt")
    assert reranker.name == "parallelkws-v1"
    scores = reranker.score_text(_regions(), ["K", "AE", "T"], "cat")
    reference = KWSReranker(model).score_text(_regions(), ["K", "AE", "T"], "cat")
    np.testing.assert_allclose(scores, reference, atol=2e-2)  # stored in float16


def test_gse_reranker_scores_and_query_by_example_without_openwakeword(tmp_path):
    from archive_search.errors import CheckpointError
    from tests.embedders.test_parallelkws import FakeFrontend

    torch.manual_seed(0)
    model = ParallelKWS(KWSDims.tiny(frontend="gse"))
    assert KWSReranker(model, frontend=FakeFrontend()).qbe_features == "whisper"  # the default
    reranker = KWSReranker(model, frontend=FakeFrontend(), qbe_features="gse")
    assert reranker.speech is None
    regions = _regions()
    scores = reranker.score_text(regions, [], "cat")
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_allclose(reranker.score_text(regions[2:], [], "cat")[0], scores[2], atol=1e-5)
    # query by example: DTW over the front-end's frames finds the region that holds the query
    rng = np.random.default_rng(3)
    t = np.arange(3200) / 16000
    melodies = [np.concatenate([0.3 * np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 4000, 10)]).astype(np.float32)
                for _ in range(3)]  # fmt: skip
    query = melodies[1][9600:25600]
    qbe = reranker.score_audio(melodies, query)
    assert qbe.shape == (3,) and int(np.argmax(qbe)) == 1
    # a gse kws.pt loads alone; a conformer kws.pt without its ctc.pt is a clear error
    path = save_kws(tmp_path / "kws.pt", model, extra={"version": "gse-g1"})
    loaded = load_reranker(None, path, frontend=FakeFrontend())
    assert loaded.name == "parallelkws-gse-g1+qbe-whisper" and loaded.qbe_features == "whisper"
    np.testing.assert_allclose(loaded.score_text(regions, [], "cat"), scores, atol=1e-5)
    conformer = save_kws(tmp_path / "kws-conformer.pt", ParallelKWS(KWSDims.tiny(speech=CTCDims.tiny())))
    with pytest.raises(CheckpointError, match="conformer"):
        load_reranker(None, conformer)


def _shipped_kws(file_name: str, frontend: str):
    """A shipped KWS checkpoint's path and payload, checked for size, float16 weights, version
    and front-end (skips when this checkout ships none)."""
    from archive_search.embedders.parallelkws import read_kws_dims
    from archive_search.embedders.registry import CHECKPOINT_DIR

    path = CHECKPOINT_DIR / file_name
    if not path.is_file():
        pytest.skip(f"no {file_name} shipped")
    payload = torch.load(path, weights_only=True)
    assert path.stat().st_size < 25e6 and payload["extra"]["version"].startswith(f"{frontend}-")
    assert all(t.dtype == torch.float16 for t in payload["state_dict"].values() if t.is_floating_point())
    assert read_kws_dims(path).frontend == frontend
    return path, payload


def test_shipped_kws_checkpoint_is_a_small_gse_model_that_loads_alone():
    from archive_search.embedders.registry import KWS_FILE
    from tests.embedders.test_parallelkws import FakeFrontend

    path, payload = _shipped_kws(KWS_FILE, "gse")
    reranker = load_reranker(None, path, frontend=FakeFrontend())  # the real front-end is tested in test_frontends
    assert reranker.name == f"parallelkws-{payload['extra']['version']}+qbe-whisper" and reranker.text_weight == TEXT_WEIGHT


def test_shipped_whisper_kws_checkpoint_is_small_and_reranks_tts_queries():
    from archive_search.embedders.parallelkws import read_kws_dims
    from archive_search.embedders.registry import KWS_WHISPER_FILE

    path, payload = _shipped_kws(KWS_WHISPER_FILE, "whisper")
    assert read_kws_dims(path).frontend_dim == 384 and read_kws_dims(path).frontend_mels == 80
    reranker = load_reranker(None, path, whisper=FakeWhisper(dim=384), text_scoring="tts")
    assert reranker.name.startswith(f"parallelkws-{payload['extra']['version']}+qbe-whisper+text-tts-")


def test_gse_reranker_without_openwakeword_loads_and_fails_only_when_scoring(monkeypatch):
    import importlib.util

    from archive_search.embedders import frontends
    from archive_search.errors import MissingToolError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    frontends._sessions.cache_clear()
    reranker = KWSReranker(ParallelKWS(KWSDims.tiny(frontend="gse")))  # indexing never needs it
    with pytest.raises(MissingToolError, match="openwakeword"):
        reranker.score_text(_regions(), [], "cat")
    frontends._sessions.cache_clear()


class FakeWhisper:
    """Stands in for WhisperEncoder: per 20 ms of audio, a fixed random projection of its
    magnitude spectrum (so equal audio gives equal frames), plus a per-call offset such as
    whisper's states carry (which the reranker must standardise away)."""

    def __init__(self, seed=0, dim=24):
        self.projection = np.random.default_rng(seed).standard_normal((161, dim)).astype(np.float32)
        self.calls = 0

    def frames(self, clip):
        return self.frames_packed([clip])[0]

    def frames_packed(self, clips):
        self.calls += 1
        result = []
        for clip in clips:
            n = -(-len(clip) // 320)
            frames = np.pad(clip, (0, 320 * n - len(clip))).reshape(n, 320)
            result.append(np.abs(np.fft.rfft(frames, axis=1))[:, :161] @ self.projection + 50.0 * (1 + len(result)))
        return result


def test_whisper_query_by_example_standardises_each_clip_and_encodes_once():
    from archive_search.errors import CheckpointError
    from tests.embedders.test_parallelkws import FakeFrontend

    rng = np.random.default_rng(3)
    t = np.arange(3200) / 16000
    melodies = [np.concatenate([0.3 * np.sin(2 * np.pi * f * t) for f in rng.uniform(200, 4000, 10)]).astype(np.float32)
                for _ in range(3)]  # fmt: skip
    fake = FakeWhisper()
    reranker = KWSReranker(ParallelKWS(KWSDims.tiny(frontend="gse")), frontend=FakeFrontend(), whisper=fake)
    assert reranker.qbe_features == "whisper"
    scores = reranker.score_audio(melodies, melodies[2][6400:19200])
    assert scores.shape == (3,) and scores[2] > max(scores[:2]) + 0.3  # the offset alone would make all alike
    assert fake.calls == 1  # the query and the regions share one packed encoding
    states = reranker.frame_states(melodies[:1])[0]
    np.testing.assert_allclose(np.linalg.norm(states, axis=1), 1.0, atol=1e-5)
    with pytest.raises(CheckpointError, match="unknown query-by-example frames"):
        KWSReranker(ParallelKWS(KWSDims.tiny(frontend="gse")), qbe_features="mfcc")


@pytest.mark.skipif(not all(map(__import__("shutil").which, ("espeak-ng", "flite"))), reason="espeak-ng or flite is not installed")
def test_tts_text_scoring_speaks_the_words_in_each_voice_and_scores_them_as_spoken_queries(tmp_path):
    from archive_search.embedders.rerank import TTS_TEXT_WEIGHT, TTS_VOICES
    from archive_search.embedders.speech_synthesis import speak_as
    from archive_search.errors import CheckpointError
    from tests.embedders.test_parallelkws import FakeFrontend

    model = ParallelKWS(KWSDims.tiny(frontend="gse"))
    path = save_kws(tmp_path / "kws.pt", model, extra={"version": "gse-g1"})
    fake = FakeWhisper()
    reranker = load_reranker(None, path, frontend=FakeFrontend(), whisper=fake, text_scoring="tts")
    assert reranker.name == "parallelkws-gse-g1+qbe-whisper+text-tts-en-us-slt-awb" and reranker.text_weight == TTS_TEXT_WEIGHT
    assert {voice.engine for voice in TTS_VOICES} == {"espeak-ng", "flite"}
    pad = np.zeros(4000, dtype=np.float32)
    # each region holds its word in every voice, so each voice's clip finds itself in the right one
    regions = [np.concatenate([pad, *(np.concatenate([speak_as(word, voice), pad]) for voice in TTS_VOICES)])
               for word in ("garden", "yellow", "flowers")]  # fmt: skip
    scores = reranker.score_text(regions, [], "yellow")
    assert scores[1] > max(scores[0], scores[2]) + 0.2
    assert fake.calls == 1  # the clips and the regions share one packed encoding
    single = dataclasses.replace(reranker, tts_voices=TTS_VOICES[:1]).score_text(regions, [], "yellow")
    assert not np.allclose(single, scores)
    with pytest.raises(CheckpointError, match="unknown text scoring"):
        load_reranker(None, path, frontend=FakeFrontend(), text_scoring="phonemes")


@pytest.mark.skipif(not all(map(__import__("shutil").which, ("espeak-ng", "flite"))), reason="espeak-ng or flite is not installed")
def test_tts_scoring_with_a_whisper_model_mixes_its_probability_and_the_dtw_from_one_encoding(tmp_path):
    from archive_search.embedders.rerank import TTS_KWS_WEIGHT

    torch.manual_seed(1)
    model = ParallelKWS(KWSDims.tiny(frontend="whisper", frontend_dim=24, frontend_mels=80))
    path = save_kws(tmp_path / "kws-whisper.pt", model, extra={"version": "whisper-w1"})
    fake = FakeWhisper(dim=24)
    reranker = load_reranker(None, path, whisper=fake, text_scoring="tts")
    assert reranker.name == f"parallelkws-whisper-w1+qbe-whisper+text-tts-en-us-slt-awb+kws{TTS_KWS_WEIGHT:g}"
    regions = _regions()
    mixed = reranker.score_text(regions, [], "yellow")
    assert fake.calls == 1  # voices and regions in one whisper input, read by both scores
    spoken = dataclasses.replace(reranker, tts_kws_weight=0.0).score_text(regions, [], "yellow")
    probability = reranker._probability(regions, "yellow")  # the regions encoded on their own
    np.testing.assert_allclose(mixed, TTS_KWS_WEIGHT * probability + (1 - TTS_KWS_WEIGHT) * spoken, atol=1e-5)
    assert not np.allclose(mixed, spoken)


def test_whisper_kws_reranker_shares_one_whisper_encoding_and_loads_alone(tmp_path):
    fake = FakeWhisper(dim=24)
    torch.manual_seed(0)
    model = ParallelKWS(KWSDims.tiny(frontend="whisper", frontend_dim=24, frontend_mels=80))
    path = save_kws(tmp_path / "kws.pt", model, extra={"version": "whisper-w1"})
    reranker = load_reranker(None, path, whisper=fake)
    assert reranker.name == "parallelkws-whisper-w1+qbe-whisper" and reranker.qbe_features == "whisper"
    regions = _regions()
    scores = reranker.score_text(regions, [], "cat")
    assert scores.shape == (len(regions),) and np.all((scores >= 0) & (scores <= 1))
    assert fake.calls == 1  # the regions were packed into one whisper input
    reranker.score_audio(regions, regions[0][:8000])
    assert fake.calls == 2  # query by example reuses the same encoder
    # an evaluation encodes its regions ahead, once, then scores them against many texts
    reranker.encode_ahead(regions)
    assert fake.calls == 3
    again = [reranker.score_text(regions, [], text) for text in ("cat", "dog")]
    assert fake.calls == 3 and again[0].shape == (3,) and not np.allclose(again[0], again[1])
