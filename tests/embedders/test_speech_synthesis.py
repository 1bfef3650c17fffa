import shutil

import numpy as np
import pytest

from archive_search.embedders import speech_synthesis
from archive_search.errors import MissingToolError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


@needs_espeak
def test_speak_returns_trimmed_16k_speech_even_for_text_like_an_option():
    short, long = speech_synthesis.speak("cat"), speech_synthesis.speak("a much longer phrase than that")
    assert short.dtype == np.float32 and 0.1 < len(short) / 16000 < len(long) / 16000 < 4.0
    assert np.abs(short).max() > 0.05
    assert len(speech_synthesis.speak("-v")) > 1600  # spoken, not taken as espeak-ng's -v option


def test_speak_without_espeak_names_the_install(monkeypatch):
    monkeypatch.setattr(speech_synthesis.shutil, "which", lambda name: None)
    with pytest.raises(MissingToolError, match="apt-get install espeak-ng"):
        speech_synthesis.speak("cat")


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
def test_speak_as_flite_gives_16k_speech_and_names_a_missing_voice():
    from archive_search.data.tts import flite_voices

    samples = speech_synthesis.speak_as("archive", speech_synthesis.QueryVoice("flite", "slt"))
    assert samples.dtype == np.float32 and 0.2 < len(samples) / 16000 < 2.0 and np.abs(samples).max() > 0.05
    assert len(speech_synthesis.speak_as("-v", speech_synthesis.QueryVoice("flite", "slt"))) > 1600
    assert "slt" in flite_voices()
    # flite itself would fall back to its 8 kHz default voice without a word
    with pytest.raises(MissingToolError, match="flite has no voice 'nobody'"):
        speech_synthesis.speak_as("cat", speech_synthesis.QueryVoice("flite", "nobody"))


def test_speak_as_rejects_an_unknown_engine():
    from archive_search.errors import QueryError

    with pytest.raises(QueryError, match="unknown TTS engine 'say'"):
        speech_synthesis.speak_as("cat", speech_synthesis.QueryVoice("say", "alex"))
