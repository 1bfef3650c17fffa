"""The front-end probe: DTW word discrimination over frame features (archive-eval frontends)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from archive_search.cli.eval import main
from archive_search.data.manifest import write_manifest
from archive_search.errors import EvaluationError
from archive_search.evaluation.frontends import (
    LogMelFrontEnd,
    dtw_pair_costs,
    dtw_word_discrimination,
    frame_slice,
    load_word_corpus,
)

import soundfile as sf

from archive_search.data.manifest import AlignedUnit, Utterance

BUNDLE = "tests.evaluation.test_cli_eval:tone_bundle"
E1, E2 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])


def test_dtw_costs_by_hand():
    # Pairs in triu order: (a, b), (a, c), (b, c).
    a = np.vstack([E1, E2])  # [e1, e2]
    b = np.vstack([E1, E1, E2])  # a slowed down: DTW warps it onto a at no cost
    c = np.vstack([E2, E1])  # a reversed
    cost = dtw_pair_costs([a, b, c])
    # a-c: D00 = 2*1, D01 = D10 = 2 + 0, D11 = min(2 + 2*1, 2 + 1, 2 + 1) = 3, over n + m = 4.
    # b-c: D = [[2, 2], [3, 2], [3, 3]] (b's frames down), 3 over n + m = 5.
    np.testing.assert_allclose(cost, [0.0, 0.75, 0.6])
    # Scale does not matter (cosine), a single frame each: 2 * d / 2 = d.
    np.testing.assert_allclose(dtw_pair_costs([3 * E1, np.array([[1.0, 1.0]])]), [1 - np.sqrt(0.5)], rtol=1e-6)


def test_dtw_rejects_empty_words():
    with pytest.raises(EvaluationError):
        dtw_pair_costs([E1, np.zeros((0, 2))])


def test_frame_slice_takes_frames_centred_in_the_span():
    assert frame_slice(0.5, 1.0, 0.04, 0.0, 100) == slice(13, 26)  # centres 0.52 ... 1.00
    assert frame_slice(0.5, 1.0, 0.08, 0.011, 100) == slice(7, 13)  # centres 0.571 ... 0.971
    assert frame_slice(0.50, 0.51, 0.04, 0.0, 100) == slice(13, 14)  # no centre inside: the nearest
    assert frame_slice(3.0, 4.0, 0.04, 0.0, 50) == slice(49, 50)  # past the end: the last frame


class DeafFrontEnd:
    """Every frame the same: a front-end that carries no word identity."""

    name, hop_s, offset_s = "deaf", 0.01, 0.0

    def frames(self, samples):
        return np.ones((samples.size // 160 + 1, 4), np.float32)


SR = 16000
GLIDES = {"up": (300.0, 900.0), "down": (900.0, 300.0), "high": (900.0, 1500.0), "low": (1500.0, 900.0)}
"""Each test word is two tones in a row: "up" and "down" hold the same pitches in the other
order, so only the frames' order tells them apart (and a clip-normalised spectrum keeps it)."""


def _word(word: str, seconds: float, rng) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    pitch = np.where(t < seconds / 2, *GLIDES[word])
    return (0.5 * np.sin(2 * np.pi * pitch * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(3)
    utterances = []
    for i in range(6):
        pieces, units, now = [np.zeros(SR // 4, np.float32)], [], 0.25
        for word in rng.choice(list(GLIDES), 3, replace=False):
            seconds = float(rng.uniform(0.5, 0.9))  # the same word at different speeds
            pieces += [_word(word, seconds, rng), np.zeros(SR // 4, np.float32)]
            units.append(AlignedUnit(str(word), round(now, 4), round(now + seconds, 4)))
            now += seconds + 0.25
        audio = np.concatenate(pieces)
        sf.write(folder / f"u{i}.wav", audio, SR)
        utterances.append(Utterance(id=f"u{i}", audio=f"u{i}.wav", duration=audio.size / SR, text="", words=units))
    write_manifest(folder / "m.jsonl", utterances)
    return folder / "m.jsonl", load_word_corpus(utterances, folder)


@pytest.mark.parametrize("context", ["utterance", "clip"])
def test_logmel_dtw_separates_tone_words_and_a_deaf_frontend_does_not(tone_corpus, context):
    _, corpus = tone_corpus
    assert len(corpus.segments) == 18 and len(corpus.utterances) == 6
    result = dtw_word_discrimination(corpus, LogMelFrontEnd(40), context)
    assert result.ap == pytest.approx(1.0)
    assert result.mean_cost_positive < result.mean_cost_negative
    assert result.n_positive + result.n_negative == 18 * 17 // 2
    assert result.audio_seconds > 0 and result.frames_per_word > 40  # 0.5-0.8 s words, 10 ms frames
    deaf = dtw_word_discrimination(corpus, DeafFrontEnd(), context)
    # All costs tie at 0: AP is the fraction of positive pairs.
    assert deaf.ap == pytest.approx(deaf.n_positive / (deaf.n_positive + deaf.n_negative))


def test_frontends_command(tone_corpus):
    manifest, _ = tone_corpus
    args = ["frontends", "--manifest", str(manifest), "-f", "logmel=40", "-f", "jmcl", "--bundle", BUNDLE,
            "--context", "utterance", "--context", "clip", "--norm", "none", "--norm", "standard", "--max-per-word", "3", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["results"]
    assert [(r["frontend"].split()[0], r["context"], r["normalised"]) for r in rows] == [
        ("logmel-40", "utterance", False), ("logmel-40", "utterance", True), ("logmel-40", "clip", False),
        ("logmel-40", "clip", True), ("tone-audio-v1", "utterance", False), ("tone-audio-v1", "clip", False)]  # fmt: skip
    assert all(r["n_segments"] == 12 for r in rows)  # 4 words x at most 3
    # logmel frames keep the tones' order; the fake pools pitch energy, so "up" = "down" for it.
    assert [r["ap"] == pytest.approx(1.0) for r in rows] == [True] * 4 + [False] * 2
    bad = CliRunner().invoke(main, ["frontends", "--manifest", str(manifest), "-f", "mfcc"])
    assert bad.exit_code != 0 and "unknown front-end" in bad.output
