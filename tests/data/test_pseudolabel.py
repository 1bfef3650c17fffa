"""Pseudo-labels: phones spread over word spans; faster-whisper word times on synthetic speech."""

from __future__ import annotations

import pytest
import soundfile as sf

from archive_search.audio import SAMPLE_RATE
from archive_search.data import pseudolabel
from archive_search.data.manifest import AlignedUnit
from archive_search.data.tts import Voice, synth_espeak
from archive_search.embedders.g2p import word_phonemes


def test_spread_phones_cover_the_word_with_longer_vowels():
    word = AlignedUnit("cat", 1.0, 1.35)
    phones = pseudolabel.spread_phones(word)
    assert [p.label for p in phones] == word_phonemes("cat") == ["K", "AE", "T"]
    assert phones[0].start == 1.0 and phones[-1].end == pytest.approx(1.35, abs=1e-4)
    assert all(a.end == pytest.approx(b.start, abs=1e-4) for a, b in zip(phones, phones[1:]))
    assert phones[1].duration > phones[0].duration


def test_whisper_word_times_on_synthetic_speech(tmp_path):
    words = "the garden was full of yellow flowers".split()
    spoken = synth_espeak(words, Voice("espeak", "en-us", rate=0.9))
    path = tmp_path / "clip.wav"
    sf.write(str(path), spoken.samples, SAMPLE_RATE)
    (utterance,) = list(pseudolabel.pseudo_label([path], threads=1))
    assert utterance.augment["labeller"] == pseudolabel.LABELLER
    found = {w.label: w for w in utterance.words}
    truth = {w.label: w for w in spoken.words}
    matched = [w for w in ("garden", "yellow", "flowers") if w in found]
    assert len(matched) >= 2, utterance.text
    for word in matched:
        assert abs(found[word].start - truth[word].start) < 0.25, (word, found[word], truth[word])
    assert len(utterance.phones) >= sum(len(word_phonemes(w.label)) for w in utterance.words)


def test_shift_times_moves_words_and_phones_inside_the_audio():
    from archive_search.data.manifest import Utterance

    utterance = Utterance(
        "u", "a.wav", 1.0, "hi yo", [AlignedUnit("hi", 0.05, 0.4), AlignedUnit("yo", 0.5, 0.98)],
        [AlignedUnit("HH", 0.05, 0.2)], augment={"labeller": "x"},
    )  # fmt: skip
    early = pseudolabel.shift_times(utterance, -0.1)
    assert early.words == [AlignedUnit("hi", 0.0, 0.3), AlignedUnit("yo", 0.4, 0.88)]
    assert early.phones == [AlignedUnit("HH", 0.0, 0.1)] and early.augment["time_shift_s"] == -0.1
    late = pseudolabel.shift_times(utterance, 0.1)
    assert late.words[-1] == AlignedUnit("yo", 0.6, 1.0)
