import math

import numpy as np
import pytest
import torch

from archive_search.embedders.ctc import CTCConformer, CTCDims, fbank_batch
from archive_search.embedders.g2p import g2p_model
from archive_search.embedders.parallelkws import (
    KWSDims,
    ParallelKWS,
    alignment_positions,
    group_indices,
    load_kws,
    pad_frontend,
    pda_loss,
    pda_target_batch,
    pda_targets,
    pda_targets_from_positions,
    read_kws_dims,
    save_kws,
)
from archive_search.errors import QueryError


def _clips(seed=0, seconds=(0.6, 1.1, 0.9)):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return ParallelKWS(KWSDims.tiny(**overrides)).eval()


def _inputs(model, clips, texts):
    feats, lengths = fbank_batch(clips)
    text, text_lengths = model.text_batch(texts)
    return feats, lengths, text, text_lengths


def test_paper_dims():
    dims = KWSDims.paper()
    model = ParallelKWS(dims)
    assert dims.d == 128 and dims.pda_weight == 0.3 and dims.pda_g == 0.1 and dims.time_stride == 1
    assert model.speech_up.kernel_size == (5,) and model.speech_up.stride == (4,)
    assert model.fbank_down.kernel_size == (3,) and model.fbank_down.stride == (2,)
    assert model.fbank_up.kernel_size == (3,) and model.fbank_up.stride == (2,)
    assert model.audio_gru.hidden_size == 128 and model.text_gru.hidden_size == 128
    assert not any(p.requires_grad for p in model.speech.parameters())
    assert not any(p.requires_grad for p in model.g2p_gru.parameters())


def test_g2p_encoder_matches_g2p_en_numpy():
    model = _model()
    g2p = g2p_model()
    word = "archive"
    reference = g2p.gru(g2p.encode(word), len(word) + 1, g2p.enc_w_ih, g2p.enc_w_hh, g2p.enc_b_ih, g2p.enc_b_hh,
                        h0=np.zeros((1, g2p.enc_w_hh.shape[-1]), np.float32))[0]
    np.testing.assert_allclose(model.g2p_states(word).numpy(), reference, atol=1e-4)
    # A phrase is its words' encoder states, concatenated in order.
    phrase = model.g2p_states("spoken archive")
    assert phrase.shape == (len("spoken") + 1 + len("archive") + 1, 256)
    np.testing.assert_allclose(phrase[7:].numpy(), reference, atol=1e-4)


@pytest.mark.parametrize("stride", [1, 4])
@pytest.mark.parametrize("attention", ["parallel", "self", "cross"])
def test_shapes(attention, stride):
    model = _model(attention=attention, time_stride=stride)
    feats, lengths, text, text_lengths = _inputs(model, _clips(), ["cat", "hello world", "a"])
    out = model(feats, lengths, text, text_lengths)
    assert out.logits.shape == (3,)
    width = feats.shape[1] if stride == 1 else math.ceil(math.ceil(feats.shape[1] / 2) / 2)
    assert out.frame_predictions.shape == (3, width)
    assert out.audio_lengths.tolist() == (lengths if stride == 1 else (lengths + 3) // 4).tolist()
    if attention == "self":
        assert out.affinity is None
    else:
        assert out.affinity.shape == (3, 12, width)
        # each text token's attention is a distribution over the valid frames only
        torch.testing.assert_close(out.affinity.sum(-1)[0, :4], torch.ones(4))
        assert torch.all(out.affinity[0, :, lengths[0] if stride == 1 else out.audio_lengths[0]:] == 0)


@pytest.mark.parametrize("stride", [1, 4])
def test_padded_batch_scores_equal_single_scores(stride):
    model = _model(seed=1, time_stride=stride)
    clips, texts = _clips(seed=2), ["cat", "hello world", "a b"]
    batched = model(*_inputs(model, clips, texts)).logits
    single = torch.stack([model(*_inputs(model, [c], [t])).logits[0] for c, t in zip(clips, texts)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_group_indices_eq7():
    assert group_indices(torch.tensor([5, 5, 0, 7, 7, 7, 0])).tolist() == [1, 1, 2, 3, 3, 3, 4]


def test_pda_targets_against_equations_7_to_9():
    predictions = torch.tensor([5, 5, 0, 7, 7, 7])
    c = [1, 1, 2, 3, 3, 3]
    tt, g = 3, 0.1
    expected = np.zeros((6, tt))
    for j in range(1, tt + 1):
        column = [math.exp(-(((j - ci) / tt) ** 2) / (2 * g * g)) for ci in c]
        expected[:, j - 1] = np.array(column) / sum(column)
    np.testing.assert_allclose(pda_targets(predictions, tt, g).numpy(), expected, rtol=1e-5, atol=1e-7)
    # column 1 puts its mass on the first run (c = 1): frames 0 and 1 share it
    assert expected[0, 0] == pytest.approx(expected[1, 0]) and expected[0, 0] > 0.49


def test_pda_target_batch_masks_padding_and_uses_noise_for_negatives():
    predictions = torch.tensor([[1, 1, 2, 2, 0], [3, 3, 3, 4, 4]])
    targets = pda_target_batch(predictions, torch.tensor([4, 5]), torch.tensor([2, 3]), torch.tensor([1.0, 0.0]),
                               generator=torch.Generator().manual_seed(0))
    assert targets.shape == (2, 5, 3)
    torch.testing.assert_close(targets[0, :4, :2], pda_targets(predictions[0, :4], 2))
    assert torch.all(targets[0, 4:] == 0) and torch.all(targets[0, :, 2] == 0)
    torch.testing.assert_close(targets[1].sum(0), torch.ones(3))


def test_pda_loss_hand_example():
    affinity = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]])  # (1, T_t=2, T_a=3)
    targets = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])  # (1, T_a=3, T_t=2)
    # squared errors: token 1: 0.25 + 0.25 + 0, token 2: 0 -> 0.5 over 2 tokens
    assert pda_loss(affinity, targets, torch.tensor([3]), torch.tensor([2])).item() == pytest.approx(0.25)
    # a padded frame or token is ignored
    assert pda_loss(affinity, targets, torch.tensor([1]), torch.tensor([1])).item() == pytest.approx(0.25)


def test_total_loss_is_bce_plus_weighted_pda():
    model = _model()
    out = model(*_inputs(model, _clips(), ["cat", "dog", "hello world"]))
    labels = torch.tensor([1.0, 0.0, 1.0])
    terms = model.loss(out, labels, torch.Generator().manual_seed(0))
    p = torch.sigmoid(out.logits)
    bce = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert terms["bce"].item() == pytest.approx(bce.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["bce"].item() + 0.3 * terms["pda"].item(), rel=1e-5)
    no_pda = _model(pda_weight=0.0)
    assert no_pda.loss(no_pda(*_inputs(no_pda, _clips(), ["a", "b", "c"])), labels)["pda"].item() == 0.0


def test_training_steps_reduce_the_loss():
    model = _model(seed=4, time_stride=4).train()
    rng = np.random.default_rng(0)
    tone = lambda f: (0.3 * np.sin(2 * np.pi * f * np.arange(12000) / 16000)).astype(np.float32)
    clips = [tone(300), tone(300), tone(2000), tone(2000)]
    clips = [c + 0.01 * rng.standard_normal(len(c)).astype(np.float32) for c in clips]
    inputs = _inputs(model, clips, ["low", "high", "low", "high"])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(25):
        terms = model.loss(model(*inputs), labels, torch.Generator().manual_seed(0))
        optimiser.zero_grad()
        terms["loss"].backward()
        optimiser.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(5)
    speech = CTCConformer(CTCDims.tiny()).eval()
    model = _model(seed=6)
    model.speech.load_state_dict(speech.state_dict())
    path = save_kws(tmp_path / "kws.pt", model, extra={"version": "t"})
    stored = torch.load(path, weights_only=True)["state_dict"]
    assert stored and not any(k.startswith(("speech.", "g2p_")) for k in stored)
    loaded, extra = load_kws(path, speech=speech)
    assert extra == {"version": "t"}
    inputs = _inputs(model, _clips(), ["cat", "dog", "bird"])
    torch.testing.assert_close(model(*inputs).logits, loaded(*inputs).logits)


# --------------------------------------------------------------------------- gse front-end


class FakeFrontend:
    """Stands in for frontends.SpeechEmbedding in tests (no openwakeword needed): a 32-bin
    log-mel at 10 ms and, per 8 mel frames, a fixed random projection to 96-d, with the real
    front-end's frame count (floor(M / 8) + 1) and times."""

    dim, n_mels = 96, 32

    def __init__(self, seed=0):
        self.projection = np.random.default_rng(seed).standard_normal((32 * 8, 96)).astype(np.float32) / 16

    def __call__(self, clips):
        from archive_search.audio import FeatureConfig, log_mel
        from archive_search.embedders.frontends import GSEFrames, gse_frame_count, gse_frame_times

        result = []
        for clip in clips:
            mel = log_mel(np.asarray(clip, np.float32), FeatureConfig(n_mels=32)).numpy()
            n = gse_frame_count(len(mel))
            padded = np.pad(mel, ((0, 8 * n - len(mel)), (0, 0)))
            frames = padded.reshape(n, 8 * 32) @ self.projection
            result.append(GSEFrames(frames.astype(np.float32), gse_frame_times(n), mel))
        return result


def _gse_inputs(model, clips, texts, frontend=None):
    outputs = (frontend or FakeFrontend())(clips)
    frames, lengths, mel, mel_lengths = pad_frontend([o.frames for o in outputs], [o.mel for o in outputs])
    text, text_lengths = model.text_batch(texts)
    return frames, lengths, text, text_lengths, mel, mel_lengths


def test_gse_dims_shapes_and_no_conformer():
    model = ParallelKWS(KWSDims.gse())
    assert model.speech is None and model.dims.frontend == "gse" and model.dims.d == 128
    assert model.speech_up.in_channels == 96 and model.fbank_down.in_channels == 32
    assert [m.stride for m in (model.fbank_down, model.fbank_mid, model.fbank_up)] == [(2,), (2,), (2,)]
    tiny = _model(frontend="gse")
    inputs = _gse_inputs(tiny, _clips(), ["cat", "hello world", "a"])
    out = tiny(*inputs)
    assert out.logits.shape == (3,) and out.frame_predictions is None
    assert out.audio_lengths.tolist() == inputs[1].tolist()  # E_a runs at the front-end's 80 ms
    assert out.affinity.shape == (3, 12, inputs[0].shape[1])
    assert int(inputs[1][0]) < inputs[0].shape[1] and torch.all(out.affinity[0, :, int(inputs[1][0]) :] == 0)


def test_gse_padded_batch_equals_single_and_audio_index_shares_clips():
    model = _model(seed=3, frontend="gse")
    clips, texts = _clips(seed=4, seconds=(0.6, 2.1, 1.3)), ["cat", "hello world", "a b"]
    batched = model(*_gse_inputs(model, clips, texts)).logits
    single = torch.stack([model(*_gse_inputs(model, [c], [t])).logits[0] for c, t in zip(clips, texts)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    # clip 1 shown with all three texts, encoded once
    frames, lengths, _, _, mel, mel_lengths = _gse_inputs(model, clips, texts)
    text, text_lengths = model.text_batch(texts)
    shared = model(frames, lengths, text, text_lengths, mel, mel_lengths, audio_index=torch.tensor([1, 1, 1])).logits
    alone = torch.stack([model(*_gse_inputs(model, [clips[1]], [t])).logits[0] for t in texts])
    torch.testing.assert_close(shared, alone, atol=1e-5, rtol=1e-4)


def test_gse_forward_needs_the_mel_and_pda_needs_positions():
    model = _model(frontend="gse")
    frames, lengths, text, text_lengths, mel, mel_lengths = _gse_inputs(model, _clips(), ["a", "b", "c"])
    with pytest.raises(QueryError):
        model(frames, lengths, text, text_lengths)
    out = model(frames, lengths, text, text_lengths, mel, mel_lengths)
    with pytest.raises(QueryError):
        model.loss(out, torch.tensor([1.0, 0.0, 1.0]))
    positions = torch.ones(3, frames.shape[1])
    assert torch.isfinite(model.loss(out, torch.tensor([1.0, 0.0, 1.0]), positions=positions)["loss"])


def test_alignment_positions_follow_the_words():
    # two words: 0.2-0.5 s (4 tokens), 0.6-0.8 s (3 tokens): 7 tokens over 0.6 s
    times = np.array([0.0, 0.2, 0.35, 0.5, 0.55, 0.6, 0.7, 0.8, 1.0])
    c = alignment_positions(times, [(0.2, 0.5), (0.6, 0.8)], [4, 3])
    rate = 7 / 0.6
    expected = np.array([-0.2 * rate, 0.0, 2.0, 4.0, 4.0, 4.0, 5.5, 7.0, 7.0 + 0.2 * rate]) + 0.5
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)
    # eq. 9 with these c_i: token 1 (first character of word one) peaks on the frame at 0.2 s,
    # the last token on the frame at 0.8 s
    targets = pda_targets_from_positions(torch.from_numpy(c), 7, 0.1)
    assert int(targets[:, 0].argmax()) == 1 and int(targets[:, 6].argmax()) == 7


def test_gse_checkpoint_round_trip_without_a_conformer(tmp_path):
    model = _model(seed=7, frontend="gse")
    path = save_kws(tmp_path / "kws.pt", model, extra={"version": "g"})
    assert read_kws_dims(path).frontend == "gse" and not read_kws_dims(path).uses_conformer
    loaded, extra = load_kws(path)
    inputs = _gse_inputs(model, _clips(), ["cat", "dog", "bird"])
    torch.testing.assert_close(model(*inputs).logits, loaded(*inputs).logits)


# --------------------------------------------------------------------------- whisper front-end


def _whisper_inputs(model, clips, texts):
    from archive_search.embedders.whisper_encoder import WhisperKWSFrontend
    from tests.embedders.test_rerank import FakeWhisper

    outputs = WhisperKWSFrontend(encoder=FakeWhisper(dim=model.dims.frontend_dim), packed=False)(clips)
    frames, lengths, mel, mel_lengths = pad_frontend([o.frames for o in outputs], [o.mel for o in outputs])
    text, text_lengths = model.text_batch(texts)
    return frames, lengths, text, text_lengths, mel, mel_lengths


def test_whisper_dims_run_at_40_ms_and_padding_does_not_change_a_clip():
    model = ParallelKWS(KWSDims.whisper())
    assert model.speech is None and model.speech_up.in_channels == 384 and model.fbank_down.in_channels == 80
    assert model.speech_up.stride == (2,) and not hasattr(model, "fbank_mid")
    tiny = _model(seed=5, frontend="whisper", frontend_dim=24, frontend_mels=80)
    clips, texts = _clips(seed=6, seconds=(0.61, 2.13, 1.3)), ["cat", "hello world", "a b"]
    inputs = _whisper_inputs(tiny, clips, texts)
    assert inputs[1].tolist() == [-(-int(s * 16000) // 320) for s in (0.61, 2.13, 1.3)]  # 20 ms states
    assert inputs[5].tolist() == [int(s * 16000) // 160 for s in (0.61, 2.13, 1.3)]  # 10 ms mel
    out = tiny(*inputs)
    assert out.audio_lengths.tolist() == [(n + 1) // 2 for n in inputs[1].tolist()]  # E_a at 40 ms
    assert out.affinity.shape[-1] == -(-inputs[0].shape[1] // 2)
    single = torch.stack([tiny(*_whisper_inputs(tiny, [c], [t])).logits[0] for c, t in zip(clips, texts)])
    torch.testing.assert_close(out.logits, single, atol=1e-5, rtol=1e-4)


def test_whisper_checkpoint_round_trip(tmp_path):
    model = _model(seed=8, frontend="whisper", frontend_dim=24, frontend_mels=80)
    path = save_kws(tmp_path / "kws.pt", model)
    assert read_kws_dims(path).frontend == "whisper" and read_kws_dims(path).frontend_dim == 24
    loaded, _ = load_kws(path)
    inputs = _whisper_inputs(model, _clips(), ["cat", "dog", "bird"])
    torch.testing.assert_close(model(*inputs).logits, loaded(*inputs).logits)
