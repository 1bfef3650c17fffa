"""Speak text with espeak-ng (a Debian package; offline): the demo's episodes and the engine's
spoken text queries (`KWSReranker(text_scoring="tts")`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf

from archive_search.audio import resample, trim_silence
from archive_search.errors import MissingToolError, QueryError


def speak(text: str, voice: str = "en-us", speed: int = 165) -> np.ndarray:
    """Synthesize `text` with the espeak-ng program -> 16 kHz mono float32, silence trimmed.
    `speed` is espeak-ng's words per minute."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise MissingToolError("espeak-ng is not installed (apt-get install espeak-ng)")
    with tempfile.TemporaryDirectory() as folder:
        target = os.path.join(folder, "speech.wav")
        # "--" so that a query starting with "-" is spoken, not read as an option
        result = subprocess.run([binary, "-v", voice, "-s", str(speed), "-w", target, "--", text], capture_output=True)
        if result.returncode != 0 or not os.path.exists(target):
            raise QueryError(f"espeak-ng could not speak {text!r}: {result.stderr.decode(errors='replace').strip()}")
        samples, rate = sf.read(target, dtype="float32")
    return trim_silence(resample(samples, rate), top_db=40)
