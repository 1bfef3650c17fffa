"""TTS engines: phone mapping, alignment to dictionary phones, timing against the audio, determinism."""

from __future__ import annotations

import shutil
import hashlib
import multiprocessing

import numpy as np
import pytest

from archive_search.audio import SAMPLE_RATE
from archive_search.data import tts
from archive_search.data.tts import EnginePhone, Voice, align_phones, map_espeak_phone, map_radio_phone
from archive_search.embedders.g2p import word_phonemes
from archive_search.errors import DataError, MissingToolError

TEXT = ["the", "yellow", "submarine", "sailed", "past", "seven", "islands"]

ENGINE_VOICES = [
    Voice("espeak", "en-us", "f2"),
    Voice("espeak", "en-gb-x-rp", "m3", rate=1.3, pitch=0.8),
    Voice("flite", "slt"),
    Voice("flite", "kal", rate=0.8, pitch=1.2),
    Voice("festival", "kal_diphone"),
    Voice("festival", "cmu_us_slt_arctic_hts"),
]


def _installed(voice: Voice) -> bool:
    return tts.voice_installed(voice)


def test_espeak_phone_map():
    assert map_espeak_phone("tS") == ("CH",)
    assert map_espeak_phone("aI@") == ("AY", "ER")
    assert map_espeak_phone("@L") == ("AH", "L")
    assert map_espeak_phone("t#") == ("T",)
    assert map_espeak_phone("_:") == ()
    assert map_espeak_phone("oU#") == ("OW",)
    assert map_espeak_phone("%%") == ("?",)


def test_radio_phone_map():
    assert map_radio_phone("ax") == ("AH",)
    assert map_radio_phone("hh") == ("HH",)
    assert map_radio_phone("axr") == ("ER",)
    assert map_radio_phone("en") == ("AH", "N")
    assert map_radio_phone("pau") == ()


def test_alignment_substitution_insertion_and_deletion():
    # engine said "b ae t s" (an extra S) with times; dictionary says "B AE T" then "IY" missing a phone
    engine = [
        EnginePhone("B", 0.0, 0.1),
        EnginePhone("EH", 0.1, 0.3),  # substituted vowel keeps its time
        EnginePhone("T", 0.3, 0.4),
        EnginePhone("S", 0.4, 0.5),  # extra engine phone: its time joins the previous phone
    ]
    spans = align_phones(engine, [("B", 0), ("AE", 0), ("T", 0)])
    assert spans == [(0.0, 0.1), (0.1, 0.3), (0.3, 0.5)]
    # a dictionary phone the engine skipped shares its neighbour's span
    spans = align_phones(engine[:3], [("B", 0), ("AE", 0), ("N", 0), ("T", 0)])
    assert spans[0] == (0.0, 0.1)
    assert spans[1][0] == pytest.approx(0.1) and spans[2][1] == pytest.approx(0.3)
    assert spans[1][1] == pytest.approx(spans[2][0])
    assert spans[3] == (0.3, 0.4)


def test_alignment_respects_word_membership():
    # "a a": two words each one vowel; the engine's second phone belongs to word 1
    engine = [EnginePhone("AH", 0.0, 0.2, 0), EnginePhone("AH", 0.3, 0.5, 1)]
    assert align_phones(engine, [("AH", 0), ("AH", 1)]) == [(0.0, 0.2), (0.3, 0.5)]


def test_split_of_voices_is_fixed_and_disjoint():
    train = set(tts.voices("train", installed=False))
    test = set(tts.voices("test", installed=False))
    assert train and test and not train & test
    assert Voice("flite", "rms") in test and Voice("festival", "ked_diphone") in test
    assert all(v.held_out for v in test) and not any(v.held_out for v in train)
    assert {v.engine for v in test} == {"espeak", "flite", "festival"}


def _frame_rms(samples: np.ndarray, hop_s: float = 0.01) -> np.ndarray:
    hop = int(hop_s * SAMPLE_RATE)
    frames = len(samples) // hop
    return np.sqrt((samples[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1))


@pytest.mark.parametrize("voice", ENGINE_VOICES, ids=lambda v: v.id)
def test_times_agree_with_audio(voice):
    if not _installed(voice):
        pytest.skip(f"{voice.speaker} is not installed")
    result = tts.synthesize(TEXT, voice)
    assert result.samples.dtype == np.float32 and result.samples.ndim == 1
    assert [w.label for w in result.words] == TEXT
    assert [p.label for p in result.phones] == [p for w in TEXT for p in word_phonemes(w)]
    # monotonic, inside the audio, words cover their phones
    ends = [p.end for p in result.phones]
    assert all(p.start <= p.end for p in result.phones) and ends == sorted(ends)
    assert result.phones[-1].end <= result.duration + 1e-6
    assert result.duration - result.words[-1].end < 0.6  # no long unexplained tail
    # energy: speech starts where the first word starts and stops where the last word ends
    rms = _frame_rms(result.samples)
    loud = np.flatnonzero(rms > 0.05 * rms.max())
    onset, offset = loud[0] * 0.01, (loud[-1] + 1) * 0.01
    assert abs(onset - result.words[0].start) < 0.08, (onset, result.words[0])
    assert abs(offset - result.words[-1].end) < 0.12, (offset, result.words[-1])
    # every word holds speech, and the audio before the first word is quiet
    for word in result.words:
        span = rms[int(word.start / 0.01) : max(int(word.end / 0.01), int(word.start / 0.01) + 1)]
        assert span.mean() > 0.08 * rms.max(), word
    lead = rms[: max(int(result.words[0].start / 0.01) - 3, 0)]
    assert lead.size == 0 or lead.max() < 0.05 * rms.max()


@pytest.mark.parametrize("voice", [ENGINE_VOICES[2], ENGINE_VOICES[4]], ids=lambda v: v.engine)
def test_synthesis_is_deterministic(voice):
    if not _installed(voice):
        pytest.skip(f"{voice.speaker} is not installed")
    first, second = tts.synthesize_many([TEXT[:3], TEXT[:3]], voice)
    assert np.array_equal(first.samples, second.samples)
    assert first.words == second.words and first.phones == second.phones


def _espeak_hashes() -> list[tuple[str, list]]:
    voice = Voice("espeak", "en-us", "f2")
    results = [tts.synth_espeak(text, voice) for text in (TEXT[:3], TEXT[3:])]
    return [(hashlib.sha1(r.samples.tobytes()).hexdigest(), [(w.start, w.end) for w in r.words]) for r in results]


def test_espeak_is_deterministic_in_a_fresh_process():
    # espeak-ng's pitch flutter phase carries over between texts inside one process, so the
    # corpus generator runs each shard in its own forked process; the same sequence repeats exactly.
    context = multiprocessing.get_context("fork")
    with context.Pool(1, maxtasksperchild=1) as pool:
        first = pool.apply(_espeak_hashes)
        second = pool.apply(_espeak_hashes)
    assert first == second and len(first) == 2


def test_rate_changes_duration():
    voice = Voice("espeak", "en-us")
    slow = tts.synthesize(TEXT, voice.with_prosody(0.8, 1.0))
    fast = tts.synthesize(TEXT, voice.with_prosody(1.4, 1.0))
    assert fast.duration < 0.85 * slow.duration


def test_missing_engine_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingToolError, match="flite"):
        tts.synth_flite(["hello"], Voice("flite", "slt"))
    with pytest.raises(MissingToolError, match="festival"):
        tts.synth_festival(["hello"], Voice("festival", "kal_diphone"))


def test_missing_festival_voice_is_a_clear_error():
    if shutil.which("festival") is None:
        pytest.skip("festival is not installed")
    with pytest.raises(MissingToolError, match="no_such_voice"):
        tts.synth_festival(["hello"], Voice("festival", "no_such_voice"))


def test_text_must_be_plain_words():
    with pytest.raises(DataError):
        tts.synthesize("hello, world!", Voice("espeak", "en-us"))
