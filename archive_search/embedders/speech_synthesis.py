"""Speak text offline with Debian's TTS programs: espeak-ng for the demo's episodes, espeak-ng
and flite for the engine's spoken text queries (`KWSReranker(text_scoring="tts")`).

Unlike `data.tts` (training corpora: plain dictionary words, word and phone times), these take
any query text and return the audio alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from archive_search.audio import resample, trim_silence
from archive_search.errors import MissingToolError, QueryError

SPEAKING_ENGINES = ("espeak-ng", "flite")


@dataclass(frozen=True)
class QueryVoice:
    """A TTS voice for spoken text queries: `engine` one of SPEAKING_ENGINES, its voice name
    ("en-us", "slt") and, for espeak-ng, words per minute."""

    engine: str
    name: str
    words_per_minute: int = 165


def speak(text: str, voice: str = "en-us", speed: int = 165) -> np.ndarray:
    """Synthesize `text` with the espeak-ng program -> 16 kHz mono float32, silence trimmed.
    `speed` is espeak-ng's words per minute."""
    return speak_as(text, QueryVoice("espeak-ng", voice, speed))


def speak_as(text: str, voice: QueryVoice) -> np.ndarray:
    """Synthesize `text` with `voice` -> 16 kHz mono float32, silence trimmed."""
    if voice.engine not in SPEAKING_ENGINES:
        raise QueryError(f"unknown TTS engine {voice.engine!r}; one of {', '.join(SPEAKING_ENGINES)}")
    binary = shutil.which(voice.engine)
    if binary is None:
        raise MissingToolError(f"{voice.engine} is not installed (apt-get install {voice.engine})")
    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "speech.wav")
        if voice.engine == "espeak-ng":
            # "--" so that a query starting with "-" is spoken, not read as an option
            command = [binary, "-v", voice.name, "-s", str(voice.words_per_minute), "-w", target, "--", text]
        else:
            _require_flite_voice(voice.name)
            command = [binary, "-voice", voice.name, "-t", text, "-o", target]  # -t takes the next argument as text
        result = subprocess.run(command, capture_output=True)
        if result.returncode != 0 or not os.path.exists(target):
            raise QueryError(f"{voice.engine} could not speak {text!r}: {result.stderr.decode(errors='replace').strip()}")
        samples, rate = sf.read(target, dtype="float32")
    return trim_silence(resample(samples, rate), top_db=40)


def _require_flite_voice(name: str) -> None:
    # flite falls back to its 8 kHz default voice on an unknown name without a word
    from archive_search.data.tts import flite_voices

    if name not in flite_voices():
        raise MissingToolError(f"flite has no voice {name!r} (it has: {', '.join(flite_voices()) or 'none'}; apt-get install flite)")
