import numpy as np
import pytest
import torch

from archive_search.embedders.ctc import (
    CTCConformer,
    CTCDims,
    collapse,
    edit_distance,
    fbank_batch,
    greedy_decode,
    load_ctc,
    phoneme_error_rate,
    save_ctc,
    subsampled_lengths,
)
from archive_search.embedders.phonemes import VOCAB_SIZE, encode, pad_batch
from archive_search.errors import CheckpointError


def _clips(seed=0, seconds=(0.5, 1.2)):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def _model(seed=0):
    torch.manual_seed(seed)
    return CTCConformer(CTCDims.tiny()).eval()


def test_paper_dims_are_the_published_ones():
    dims = CTCDims.paper()
    assert (dims.n_layers, dims.d_model, dims.n_heads, dims.conv_kernel, dims.n_mels) == (6, 144, 4, 3, 80)
    assert dims.vocab_size == VOCAB_SIZE


def test_shapes_and_subsampled_lengths():
    model = _model()
    feats, lengths = fbank_batch(_clips())
    assert feats.shape == (2, 121, 80) and lengths.tolist() == [51, 121]
    out = model(feats, lengths)
    assert out.lengths.tolist() == subsampled_lengths(lengths).tolist() == [13, 31]
    assert out.hidden.shape == (2, 31, 16) and out.logits.shape == (2, 31, VOCAB_SIZE)
    assert torch.all(out.hidden[0, 13:] == 0)


def test_padding_does_not_change_the_short_clip():
    model = _model()
    clips = _clips(seconds=(0.6, 1.1, 0.9))  # odd frame counts reach the subsampling edge
    alone_feats, alone_lengths = fbank_batch(clips[:1])
    batch_feats, batch_lengths = fbank_batch(clips)
    alone = model(alone_feats, alone_lengths).logits[0]
    batched = model(batch_feats, batch_lengths).logits[0, : len(alone)]
    torch.testing.assert_close(alone, batched, atol=1e-4, rtol=1e-4)


def test_collapse_and_edit_distance():
    assert collapse([0, 3, 3, 0, 3, 5, 5, 0]) == [3, 3, 5]
    assert edit_distance("kitten", "sitting") == 3
    assert phoneme_error_rate([["AH", "B"]], [["AH", "B", "K"]]) == pytest.approx(1 / 3)


def test_training_steps_reduce_the_ctc_loss():
    torch.manual_seed(0)
    model = CTCConformer(CTCDims.tiny())
    feats, lengths = fbank_batch(_clips(seconds=(1.0, 0.8)))
    targets, target_lengths = pad_batch([encode(["HH", "AH", "L", "OW"]), encode(["K", "AE", "T"])])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.loss(feats, lengths, targets, target_lengths)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_round_trip(tmp_path):
    model = _model(seed=3)
    path = save_ctc(tmp_path / "ctc.pt", model, extra={"step": 7})
    loaded, extra = load_ctc(path)
    assert extra == {"step": 7} and loaded.dims == model.dims
    feats, lengths = fbank_batch(_clips())
    torch.testing.assert_close(model(feats, lengths).logits, loaded(feats, lengths).logits)
    hypotheses = greedy_decode(loaded, _clips())
    assert len(hypotheses) == 2 and all(isinstance(p, str) for h in hypotheses for p in h)
    with pytest.raises(CheckpointError):
        from archive_search.embedders.parallelkws import load_kws

        load_kws(path)
