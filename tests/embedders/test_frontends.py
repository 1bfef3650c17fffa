import importlib.util

import numpy as np
import pytest

from archive_search.embedders import frontends
from archive_search.embedders.frontends import (
    GSE_DIM,
    SpeechEmbedding,
    gse_available,
    gse_frame_count,
    gse_frame_times,
    gse_model_files,
    mel_frame_count,
)
from archive_search.errors import MissingToolError

needs_gse = pytest.mark.skipif(not gse_available(), reason="openwakeword 0.5.1 (speech embedding ONNX files) not installed")


def test_missing_package_is_a_missing_tool_error(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingToolError, match="openwakeword"):
        gse_model_files()
    assert not gse_available()


def test_frame_times_are_80_ms_apart_and_centred_on_their_windows():
    times = gse_frame_times(4)
    np.testing.assert_allclose(np.diff(times), 0.08, atol=1e-6)
    # frame 1 spans mel frames -30 ... 45 (centre 7.5 -> 75 ms) plus half a 512-sample window
    assert times[1] == pytest.approx(0.075 + 0.016, abs=1e-6)
    assert gse_frame_count(0) == 1 and gse_frame_count(97) == 13


@needs_gse
def test_shapes_times_and_mel_count():
    model = SpeechEmbedding()
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (32000, 4800, 12345)]
    out = model(clips)
    assert len(out) == 3
    for clip, item in zip(clips, out):
        assert item.mel.shape == (mel_frame_count(len(clip)), 32)
        assert item.frames.shape == (gse_frame_count(len(item.mel)), GSE_DIM)
        assert item.frames.dtype == np.float32 and np.isfinite(item.frames).all()
        assert item.times[-1] <= len(clip) / 16000
    assert len(out[1].frames) >= 1  # 0.3 s: openwakeword itself would give no frame


@needs_gse
def test_a_clip_gets_the_same_frames_alone_and_in_a_batch():
    model = SpeechEmbedding()
    rng = np.random.default_rng(1)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16000, 24000)]
    np.testing.assert_allclose(model(clips)[1].frames, model(clips[1:])[0].frames, atol=1e-4)


@needs_gse
def test_clips_embedded_side_by_side_equal_clips_embedded_one_by_one():
    rng = np.random.default_rng(3)
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (9000, 20000, 14000, 30000, 5000)]
    serial, parallel = SpeechEmbedding(threads=1)(clips), SpeechEmbedding(threads=3)(clips)
    assert len(parallel) == len(clips)
    for one, other in zip(serial, parallel):
        np.testing.assert_array_equal(one.frames, other.frames)
        np.testing.assert_array_equal(one.mel, other.mel)


@needs_gse
def test_one_pass_over_the_sequence_equals_the_published_sliding_window_model():
    """The rewritten graph must give what the unmodified embedding_model.onnx gives on each
    76-frame patch at an 8-frame hop (openwakeword's way of running it)."""
    import onnxruntime as ort

    model = SpeechEmbedding()
    rng = np.random.default_rng(2)
    clip = (0.1 * rng.standard_normal(27_000)).astype(np.float32)
    mel = model.melspectrogram(clip)
    published = ort.InferenceSession(str(gse_model_files()[1]), providers=["CPUExecutionProvider"])
    padded = model.pad(mel)
    n = gse_frame_count(len(mel))
    patches = np.stack([padded[8 * k : 8 * k + 76] for k in range(n)])[:, :, :, None]
    expected = published.run(None, {"input_1": patches})[0].reshape(n, GSE_DIM)
    frames = model([clip])[0].frames
    assert frames.shape == expected.shape
    np.testing.assert_allclose(frames, expected, rtol=1e-4, atol=1e-3)


def test_a_graph_it_does_not_know_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph(
        [node],
        "other",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    with pytest.raises(MissingToolError, match="not the speech embedding graph"):
        frontends._sequence_graph(path)


@needs_gse
def test_frames_carry_the_word_across_voices():
    """The same word by two espeak voices aligns better than different words (DTW over frames)."""
    from archive_search.demo import speak
    from archive_search.embedders.rerank import subsequence_dtw_similarity

    model = SpeechEmbedding()
    words = ["seven", "elephant", "morning"]

    def unit_frames(word, voice):
        frames = model([speak(word, voice, 150)])[0].frames
        return frames / np.linalg.norm(frames, axis=1, keepdims=True)

    a = {w: unit_frames(w, "en-us+m3") for w in words}
    b = {w: unit_frames(w, "en-gb-x-rp") for w in words}
    for word in words:
        same = subsequence_dtw_similarity(a[word], b[word])
        others = [subsequence_dtw_similarity(a[word], b[o]) for o in words if o != word]
        assert same > max(others), (word, same, others)


def test_sessions_report_a_missing_onnxruntime(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("no onnxruntime")
        return real_import(name, *args, **kwargs)

    frontends._sessions.cache_clear()
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(MissingToolError, match="onnxruntime"):
        frontends._sessions()
    frontends._sessions.cache_clear()
