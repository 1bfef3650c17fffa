"""JMCL encoders: configs, shapes, padding/masking, span slicing and checkpoint round trips."""

import dataclasses
import os

import numpy as np
import pytest
import torch

from archive_search.embedders.base import AudioEmbedder, TextEmbedder
from archive_search.embedders.jmcl import (
    CONFIGS,
    JMCLAudioEmbedder,
    build_model,
    load_jmcl,
    model_name,
    read_jmcl,
    save_jmcl,
    tiny_jmcl,
)
from archive_search.errors import CheckpointError


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    tone = np.sin(2 * np.pi * (200 + 300 * rng.random()) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * tone + 0.02 * rng.normal(size=t.size)).astype(np.float32)


def test_paper_config_is_as_published():
    paper = CONFIGS["paper"]
    assert (paper.n_mels, paper.window_s, paper.hop_s) == (128, 0.025, 0.010)
    assert (paper.audio_layers, paper.audio_hidden, paper.text_layers, paper.text_hidden) == (3, 256, 3, 256)
    assert paper.embed_dim == 512 and paper.frontend_channels == 0 and paper.frontend_stride == 1
    model = build_model("paper")
    assert model.audio.lstm.num_layers == 3 and model.audio.lstm.bidirectional
    assert model.audio.project.out_features == 512 and model.text.project.out_features == 512


def test_tiny_embedders_satisfy_the_seams_and_return_unit_vectors():
    audio, text = tiny_jmcl(0)
    assert isinstance(audio, AudioEmbedder) and isinstance(text, TextEmbedder)
    samples = _speechlike(3.0, 0)
    spans = np.array([[0.0, 0.5], [0.2, 1.2], [1.0, 2.6], [2.9, 3.5]])
    vectors = audio.embed_spans(samples, spans)
    assert vectors.shape == (4, audio.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert audio.embed_spans(samples, np.zeros((0, 2))).shape == (0, audio.dim)
    words = text.embed_phonemes([["HH", "AH0", "L", "OW1"], ["K", "AE", "T"]])
    assert words.shape == (2, text.dim)
    np.testing.assert_allclose(np.linalg.norm(words, axis=1), 1.0, atol=1e-5)
    assert audio.name == text.name == "jmcl-tiny-seed0"


def test_tiny_models_are_deterministic_per_seed():
    a1, _ = tiny_jmcl(3)
    a2, _ = tiny_jmcl(3)
    b, _ = tiny_jmcl(4)
    clip = [_speechlike(1.0, 1)]
    np.testing.assert_array_equal(a1.embed_clips(clip), a2.embed_clips(clip))
    assert not np.allclose(a1.embed_clips(clip), b.embed_clips(clip))


def test_padding_does_not_leak_into_clip_or_text_embeddings():
    audio, text = tiny_jmcl(1)
    clips = [_speechlike(0.4, 2), _speechlike(1.7, 3), _speechlike(0.9, 4)]
    together = audio.embed_clips(clips)
    alone = np.concatenate([audio.embed_clips([c]) for c in clips])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    sequences = [["K", "AE", "T"], ["AH", "B", "AW", "T", "IH", "T"], ["OW"]]
    np.testing.assert_allclose(
        text.embed_phonemes(sequences), np.concatenate([text.embed_phonemes([s]) for s in sequences]), atol=1e-5
    )


def test_spans_slice_shared_frames_like_the_training_path():
    audio, _ = tiny_jmcl(2)
    samples = _speechlike(4.0, 5)
    spans = [(0.52, 1.52), (1.0, 1.5), (2.4, 4.0)]
    fast = audio.embed_spans(samples, np.array(spans))
    with torch.no_grad():
        slow = audio.model.embed_audio_batch([torch.from_numpy(samples)] * 3, spans).numpy()
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    # Different windows of one signal get different vectors; the same window twice the same one.
    again = audio.embed_spans(samples, np.array([spans[0], spans[0]]))
    np.testing.assert_allclose(again[0], again[1], atol=1e-6)
    assert not np.allclose(fast[0], fast[2], atol=1e-3)


def test_frame_ranges_follow_the_front_end_stride():
    model = build_model("fast")
    assert model.dims.frame_period_s == pytest.approx(0.04)
    assert model.audio.frame_range(0.5, 1.5, 1000) == (12, 38)
    assert model.audio.frame_range(3.0, 3.01, 50) == (49, 50)  # past the end: last frame, never empty


def _tiny_gse_model(seed=0):
    """A tiny JMCL on the speech-embedding front-end, with the fake front-end of the ParallelKWS
    tests (no openwakeword needed)."""
    from archive_search.embedders.jmcl import JMCL, JMCLDims
    from tests.embedders.test_parallelkws import FakeFrontend

    torch.manual_seed(seed)
    dims = dataclasses.replace(CONFIGS["tiny"], audio_frontend="gse", frontend_channels=0, frontend_stride=1)
    model = JMCL(JMCLDims(**dataclasses.asdict(dims))).eval()
    model._pretrained_frontend = FakeFrontend(seed)
    model._pretrained_frontend_pid = os.getpid()
    return model


def test_gse_config_reads_96_d_frames_every_80_ms():
    dims = CONFIGS["gse"]
    assert dims.audio_frontend == "gse" and dims.feature_dim == 96 and dims.frame_period_s == pytest.approx(0.08)
    model = build_model("gse")
    assert model.audio.lstm.input_size == 96 and len(model.audio.frontend) == 0
    assert model.audio.frame_range(0.5, 1.5, 1000) == (6, 19)
    assert CONFIGS["fast"].audio_frontend == "logmel" and CONFIGS["fast"].feature_dim == 64


def test_gse_spans_slice_shared_frames_like_the_training_path():
    model = _tiny_gse_model(3)
    audio = JMCLAudioEmbedder(model, "jmcl-tiny-gse", "cpu")
    samples = _speechlike(4.0, 6)
    spans = [(0.52, 1.52), (1.0, 1.5), (2.4, 4.0)]
    fast = audio.embed_spans(samples, np.array(spans))
    with torch.no_grad():
        slow = model.embed_audio_batch([torch.from_numpy(samples)] * 3, spans).numpy()
    np.testing.assert_allclose(fast, slow, atol=1e-5)
    assert fast.shape == (3, model.dims.embed_dim)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(fast[0], fast[2], atol=1e-3)


def test_gse_checkpoint_round_trip_and_an_unknown_front_end_is_refused(tmp_path):
    from archive_search.embedders.jmcl import JMCL

    model = _tiny_gse_model(4)
    path = save_jmcl(tmp_path / "gse.pt", model)
    loaded, _ = read_jmcl(path)
    assert loaded.dims == model.dims
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    with pytest.raises(CheckpointError, match="front-end"):
        JMCL(dataclasses.replace(CONFIGS["tiny"], audio_frontend="wav2vec"))


def test_whisper_config_reads_standardised_whisper_states_at_40_ms():
    from archive_search.embedders.jmcl import whisper_features

    dims = CONFIGS["whisper"]
    assert dims.feature_dim == 384 and dims.frame_period_s == pytest.approx(0.04)
    model = build_model("whisper")
    assert len(model.audio.frontend) == 1 and model.audio.lstm.input_size == dims.frontend_channels
    samples = _speechlike(2.0, 7)
    frames = model.input_features([samples])[0]  # the bundled whisper tiny.en encoder
    assert frames.shape == (100, 384) and frames.dtype == torch.float32
    np.testing.assert_allclose(frames.mean(0).numpy(), 0.0, atol=1e-3)
    np.testing.assert_allclose(frames.std(0).numpy(), 1.0, atol=2e-2)
    assert whisper_features(np.ones((1, 384))).tolist() == [[0.0] * 384]  # one frame has no spread
    audio = JMCLAudioEmbedder(model, "jmcl-whisper-test", "cpu")
    vectors = audio.embed_spans(samples, np.array([(0.0, 1.0), (0.5, 2.0)]))
    assert vectors.shape == (2, dims.embed_dim) and np.isfinite(vectors).all()


def test_checkpoint_round_trip_full_and_half(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny")
    model.audio.feature_mean.fill_(-3.0)
    full = save_jmcl(tmp_path / "full.pt", model, extra={"step": 7})
    half = save_jmcl(tmp_path / "half.pt", model, half=True)
    loaded, extra = read_jmcl(full)
    assert extra == {"step": 7} and loaded.dims == model.dims
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], tensor)
    audio_full, text_full = load_jmcl(full, device="cpu")
    audio_half, text_half = load_jmcl(half, device="cpu")
    clip = [_speechlike(1.2, 6)]
    np.testing.assert_allclose(audio_full.embed_clips(clip), audio_half.embed_clips(clip), atol=2e-2)
    assert audio_full.name == model_name(model) and audio_full.name.startswith("jmcl-tiny-")
    assert half.stat().st_size < full.stat().st_size
    # Retrained weights get a new name, so an index refuses to mix their vectors.
    with torch.no_grad():
        model.audio.project.bias.add_(0.1)
    assert model_name(model) != audio_full.name


def test_checkpoint_of_another_shape_is_refused(tmp_path):
    model = build_model("tiny")
    path = save_jmcl(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    payload["dims"] = dataclasses.asdict(dataclasses.replace(model.dims, audio_hidden=32))
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not match"):
        read_jmcl(path)
    with pytest.raises(CheckpointError):
        read_jmcl(tmp_path / "missing.pt")


def test_embedder_uses_the_device_it_is_given():
    model = build_model("tiny")
    embedder = JMCLAudioEmbedder(model, "x", device="cpu")
    assert embedder.device.type == "cpu"
    assert next(embedder.model.parameters()).device.type == "cpu"


def test_shipped_checkpoint_loads_safely_and_is_small():
    from archive_search.embedders.registry import CHECKPOINT_DIR

    path = CHECKPOINT_DIR / "jmcl.pt"
    if not path.exists():
        pytest.skip("no shipped JMCL checkpoint in this checkout")
    assert path.stat().st_size < 10e6
    model, extra = read_jmcl(path)  # weights_only=True inside
    assert model.dims == CONFIGS["whisper"] and extra["step"] > 0
    audio, text = load_jmcl(path, device="cpu")
    assert audio.dim == text.dim == 256 and audio.name == model_name(model)
    # whisper frames arrive standardised per input, so the statistics measured on training audio
    # are the identity (0, 1); a log-mel model would store its bins' levels here.
    torch.testing.assert_close(model.audio.feature_mean, torch.zeros_like(model.audio.feature_mean), atol=1e-3, rtol=0)
    torch.testing.assert_close(model.audio.feature_std, torch.ones_like(model.audio.feature_std), atol=5e-2, rtol=0)
    # Text embeddings of different words are distinct and the same word twice is identical.
    vectors = text.embed_phonemes([["K", "AE", "T"], ["K", "AE", "T"], ["D", "AO", "G"]])
    assert float(vectors[0] @ vectors[1]) > 0.999 and float(vectors[0] @ vectors[2]) < 0.9
