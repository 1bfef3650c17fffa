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
