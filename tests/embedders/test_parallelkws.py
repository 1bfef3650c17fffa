import math

import numpy as np
import pytest
import torch

from archive_search.embedders.ctc import CTCConformer, CTCDims, fbank_batch
from archive_search.embedders.g2p import g2p_model
from archive_search.embedders.parallelkws import (
    KWSDims,
    ParallelKWS,
    group_indices,
    load_kws,
    pda_loss,
    pda_target_batch,
    pda_targets,
    save_kws,
)


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
