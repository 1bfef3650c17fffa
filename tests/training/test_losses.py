"""JMCL losses against hand-computed values and a loop-by-loop reading of eqs 6-14."""

import math

import numpy as np
import pytest
import torch

from archive_search.training.losses import clap_loss, dwd_loss, dwd_similarities, jmcl_loss


def test_clap_loss_matches_hand_computed_example():
    # C = exp(tau) E_t E_a^T with exp(tau) = 1: C = [[0.8, 0.0], [0.96, 0.8]].
    audio = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    rows = (-0.8 + math.log(math.exp(0.8) + 1.0)) + (-0.8 + math.log(math.exp(0.96) + math.exp(0.8)))
    cols = (-0.8 + math.log(math.exp(0.8) + math.exp(0.96))) + (-0.8 + math.log(1.0 + math.exp(0.8)))
    expected = 0.5 * (rows / 2 + cols / 2)
    assert float(clap_loss(audio, text, 1.0)) == pytest.approx(expected, abs=1e-6)


def test_clap_loss_is_asymmetric_in_rows_and_columns_and_averages_instances():
    torch.manual_seed(0)
    audio = torch.nn.functional.normalize(torch.randn(5, 3, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    per_instance = [float(clap_loss(audio[:, m], text, 10.0)) for m in range(3)]
    assert float(clap_loss(audio, text, 10.0)) == pytest.approx(sum(per_instance) / 3, rel=1e-6)
    # Matching pairs lower the loss: text equal to the audio of instance 0 beats random text.
    assert float(clap_loss(audio[:, 0], audio[:, 0], 10.0)) < per_instance[0]


def _dwd_reference(e: np.ndarray) -> tuple[float, float]:
    """Eqs 10-13 read literally, one embedding at a time."""
    n, m, _ = e.shape
    cos = lambda a, b: float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    sm, cc = [], []
    for j in range(n):
        for i in range(m):
            sims = []
            for k in range(n):
                if k == j:
                    centroid = (e[j].sum(0) - e[j, i]) / (m - 1)
                else:
                    centroid = e[k].mean(0)
                sims.append(cos(e[j, i], centroid))
            sm.append(-sims[j] + math.log(sum(math.exp(s) for s in sims)))
            cc.append((1 - sims[j]) + max(s for k, s in enumerate(sims) if k != j))
    return float(np.mean(sm)), float(np.mean(cc))


def test_dwd_matches_hand_computed_example():
    e = np.array([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [-0.6, 0.8]]])
    sims = dwd_similarities(torch.tensor(e, dtype=torch.float32))
    # e_00 = [1, 0]: its own leave-one-out centroid is e_01 -> cos 0.6;
    # class 1's centroid is [-0.3, 0.9] -> cos -0.3 / sqrt(0.9).
    assert float(sims[0, 0, 0]) == pytest.approx(0.6, abs=1e-6)
    assert float(sims[0, 0, 1]) == pytest.approx(-0.3 / math.sqrt(0.9), abs=1e-6)
    terms = dwd_loss(torch.tensor(e, dtype=torch.float32))
    sm, cc = _dwd_reference(e)
    assert float(terms.softmax) == pytest.approx(sm, abs=1e-5)
    assert float(terms.centroid) == pytest.approx(cc, abs=1e-5)
    assert float(terms.total) == pytest.approx(sm + cc, abs=1e-5)


def test_dwd_matches_reference_on_random_batch_and_rewards_clusters():
    rng = np.random.default_rng(1)
    e = rng.normal(size=(4, 3, 6))
    terms = dwd_loss(torch.tensor(e, dtype=torch.float32))
    sm, cc = _dwd_reference(e)
    assert float(terms.softmax) == pytest.approx(sm, abs=1e-5)
    assert float(terms.centroid) == pytest.approx(cc, abs=1e-5)
    centres = rng.normal(size=(4, 1, 6)) * 5
    clustered = centres + 0.01 * rng.normal(size=(4, 3, 6))
    assert float(dwd_loss(torch.tensor(clustered, dtype=torch.float32)).total) < float(terms.total)


def test_dwd_needs_two_instances():
    with pytest.raises(ValueError):
        dwd_loss(torch.randn(3, 1, 4))


def test_total_loss_weights_terms_as_eq_14():
    torch.manual_seed(2)
    audio = torch.nn.functional.normalize(torch.randn(3, 2, 4), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(3, 4), dim=-1)
    loss = jmcl_loss(audio, text, 5.0)
    expected = 0.1 * float(clap_loss(audio, text, 5.0)) + 1.0 * float(dwd_loss(audio).total)
    assert float(loss.total) == pytest.approx(expected, rel=1e-6)
    weighted = jmcl_loss(audio, text, 5.0, alpha_at=1.0, alpha_aa=0.5)
    assert float(weighted.total) == pytest.approx(float(loss.audio_text) + 0.5 * float(loss.audio_audio), rel=1e-6)
