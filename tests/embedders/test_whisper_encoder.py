import numpy as np

from archive_search.embedders.whisper_encoder import WhisperEncoder


def test_whisper_encoder_frames_every_20_ms_past_30_s():
    from archive_search.embedders.whisper_encoder import WhisperEncoder

    encoder = WhisperEncoder()
    rng = np.random.default_rng(0)
    one = encoder.frames(0.1 * rng.standard_normal(16000).astype(np.float32))
    assert one.shape == (50, 384) and np.isfinite(one).all()
    long = encoder.frames(0.1 * rng.standard_normal(16000 * 31).astype(np.float32))
    assert long.shape == (1550, 384)  # a 30 s chunk (1500 frames) and a 1 s one
    padded = WhisperEncoder(pad=True).frames(0.1 * rng.standard_normal(12345).astype(np.float32))
    assert padded.shape == (39, 384)  # whisper's 30 s input, only the clip's own frames kept


def test_packed_clips_get_their_own_frames_from_few_chunks():
    rng = np.random.default_rng(1)
    encoder = WhisperEncoder(pad=True)
    calls = []
    encode = encoder._frames_padded
    encoder._frames_padded = lambda samples: calls.append(len(samples)) or encode(samples)
    # 12 clips of 2.7-3.3 s do not fit one 30 s chunk; a 31 s clip fits none
    lengths = [int(16000 * s) for s in rng.uniform(2.7, 3.3, 12)] + [16000 * 31]
    clips = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    frames = encoder.frames_packed(clips)
    assert [len(f) for f in frames] == [-(-n // 320) for n in lengths]
    assert sorted(calls)[-1] == 16000 * 31 and len(calls) == 3 and sorted(calls)[1] <= 30 * 16000
    # a clip's frames come from its own stretch of the chunk: packing it first or last moves
    # it within the chunk without changing what it sounds like
    alone = encoder.frames_packed(clips[:1])[0]
    first = encoder.frames_packed(clips[:3])[0]
    cosine = np.sum(alone * first, axis=1) / (np.linalg.norm(alone, axis=1) * np.linalg.norm(first, axis=1))
    assert cosine.mean() > 0.9
    other = encoder.frames_packed(clips[1:2])[0][: len(alone)]
    cross = np.sum(alone[: len(other)] * other, axis=1) / (np.linalg.norm(alone[: len(other)], axis=1) * np.linalg.norm(other, axis=1))
    assert cosine.mean() > cross.mean()
