"""Offline TTS with exact word and phone times: espeak-ng (C API via ctypes), flite, festival.

Every engine returns a `Synthesis`: 16 kHz mono float32 samples plus word and phone
`AlignedUnit`s. Engines name phones in their own sets; each is mapped to ARPAbet and then
aligned (weighted edit distance) to the dictionary pronunciation of the words
(`archive_search.embedders.g2p.word_phonemes`), so the phone labels are exactly the symbols
the text side of the models sees, while the times are the engine's own.

A `Voice` is an engine voice plus a speaking rate and pitch factor. `TRAIN_VOICES` and
`HELD_OUT_VOICES` split the base voices once and for all: held-out voices only ever appear
in test splits.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile as sf

from archive_search.audio import SAMPLE_RATE, resample
from archive_search.data.manifest import AlignedUnit
from archive_search.embedders.g2p import word_phonemes
from archive_search.embedders.phonemes import ARPABET
from archive_search.errors import DataError, MissingToolError

ENGINES = ("espeak", "flite", "festival")

VOWELS = frozenset({"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"})


# ----------------------------------------------------------------------------- voices


@dataclass(frozen=True)
class Voice:
    """An engine voice with prosody. `rate` > 1 speaks faster; `pitch` scales the mean F0."""

    engine: str  # "espeak" | "flite" | "festival"
    name: str  # espeak language ("en-us"), flite voice ("slt"), festival voice ("kal_diphone")
    variant: str = ""  # espeak voice variant ("f3", "klatt2"); "" = the language's default
    rate: float = 1.0
    pitch: float = 1.0

    @property
    def speaker(self) -> str:
        """The base voice without prosody: what counts as one speaker."""
        return f"{self.engine}:{self.name}" + (f"+{self.variant}" if self.variant else "")

    @property
    def id(self) -> str:
        return f"{self.speaker}@r{self.rate:.2f}p{self.pitch:.2f}"

    def with_prosody(self, rate: float, pitch: float) -> "Voice":
        """This voice at another rate and pitch (ignored by voices with fixed prosody)."""
        if not self.has_prosody:
            return replace(self, rate=1.0, pitch=1.0)
        return replace(self, rate=float(rate), pitch=float(pitch))

    @property
    def has_prosody(self) -> bool:
        """Festival's HTS voice ignores Duration_Stretch and F0 targets: its prosody is fixed."""
        return not (self.engine == "festival" and self.name.endswith("_hts"))

    @property
    def held_out(self) -> bool:
        return is_held_out(self)


ESPEAK_LANGUAGES = (
    "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc", "en-029",
)  # fmt: skip
"""espeak-ng's English accents (the language voices under espeak-ng-data/lang/gmw)."""

ESPEAK_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
    "klatt3", "klatt4", "Alex", "Andy", "Annie", "adam", "anika", "aunty", "belinda", "benjamin", "caleb",
    "david", "ed", "edward", "grandma", "grandpa", "iven", "john", "linda", "max", "michael", "norbert",
    "paul", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor", "zac",
)  # fmt: skip
"""espeak-ng variants that sound like a person (robotic/novelty variants are left out)."""

FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FLITE_BASE_F0 = {"kal": 95.0, "kal16": 95.0, "awb": 110.0, "rms": 105.0, "slt": 170.0}
"""Hz. Roughly each voice's own mean F0, so that `pitch` is a factor for every engine."""

FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")

HELD_OUT_ESPEAK_LANGUAGES = frozenset({"en-029"})
HELD_OUT_ESPEAK_VARIANTS = frozenset({"f4", "m6", "klatt3", "linda"})
HELD_OUT_OTHER = frozenset({("flite", "rms"), ("festival", "ked_diphone")})
"""Fixed held-out voices: never in training, only in test splits (see `is_held_out`)."""


def is_held_out(voice: Voice) -> bool:
    """True for the fixed held-out accent, espeak variants, one flite and one festival voice."""
    if voice.engine == "espeak":
        return voice.name in HELD_OUT_ESPEAK_LANGUAGES or voice.variant in HELD_OUT_ESPEAK_VARIANTS
    return (voice.engine, voice.name) in HELD_OUT_OTHER


def all_voices() -> list[Voice]:
    """Every base voice (rate 1, pitch 1) of every engine, installed or not."""
    voices = [Voice("espeak", language, variant) for language in ESPEAK_LANGUAGES for variant in ESPEAK_VARIANTS]
    voices += [Voice("flite", name) for name in FLITE_VOICES]
    voices += [Voice("festival", name) for name in FESTIVAL_VOICES]
    return voices


def voices(split: str = "train", engines: Sequence[str] | None = None, installed: bool = True) -> list[Voice]:
    """Base voices of a split ("train": never held out; "test": only held out).

    With `installed`, only voices whose engine (and festival voice) is present here.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    wanted = set(engines or ENGINES)
    result = []
    for voice in all_voices():
        if voice.engine not in wanted or voice.held_out != (split == "test"):
            continue
        if installed and not voice_installed(voice):
            continue
        result.append(voice)
    return result


def voice_installed(voice: Voice) -> bool:
    if voice.engine == "espeak":
        return _espeak_library_path() is not None
    if voice.engine == "flite":
        return shutil.which("flite") is not None and voice.name in flite_voices()
    if voice.engine == "festival":
        return shutil.which("festival") is not None and voice.name in _festival_voices()
    return False


def available_engines() -> dict[str, bool]:
    """Which engines can run here."""
    return {
        "espeak": _espeak_library_path() is not None,
        "flite": shutil.which("flite") is not None,
        "festival": shutil.which("festival") is not None,
    }


# ----------------------------------------------------------------------------- results


@dataclass
class Synthesis:
    """Synthesized speech: (S,) float32 samples at 16 kHz with word and phone times in seconds."""

    samples: np.ndarray
    words: list[AlignedUnit]
    phones: list[AlignedUnit]
    voice: Voice
    text: str

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def synthesize(words: Sequence[str] | str, voice: Voice) -> Synthesis:
    """Speak `words` (lower-case dictionary words, or a string split on spaces) with `voice`."""
    return synthesize_many([words], voice)[0]


def synthesize_many(texts: Sequence[Sequence[str] | str], voice: Voice) -> list[Synthesis]:
    """Speak several texts with one voice; festival runs them in one process (its start-up is slow)."""
    return synthesize_batch([(text, voice) for text in texts])


def synthesize_batch(items: Sequence[tuple[Sequence[str] | str, Voice]]) -> list[Synthesis]:
    """Speak (text, voice) pairs, in order; festival pairs share one process per festival voice."""
    results: list[Synthesis | None] = [None] * len(items)
    festival: dict[str, list[int]] = {}
    for index, (text, voice) in enumerate(items):
        if voice.engine == "espeak":
            results[index] = synth_espeak(_clean_words(text), voice)
        elif voice.engine == "flite":
            results[index] = synth_flite(_clean_words(text), voice)
        elif voice.engine == "festival":
            festival.setdefault(voice.name, []).append(index)
        else:
            raise ValueError(f"unknown TTS engine {voice.engine!r}; known: {', '.join(ENGINES)}")
    for indices in festival.values():
        spoken = synth_festival_items([(_clean_words(items[i][0]), items[i][1]) for i in indices])
        for index, synthesis in zip(indices, spoken):
            results[index] = synthesis
    return results  # type: ignore[return-value]


def _clean_words(text: Sequence[str] | str) -> list[str]:
    words = text.split() if isinstance(text, str) else list(text)
    cleaned = [w.lower() for w in words if re.fullmatch(r"[a-zA-Z]+(?:'[a-zA-Z]+)*", w)]
    if not cleaned or len(cleaned) != len(words):
        raise DataError(f"TTS text must be plain words (letters and apostrophes): {' '.join(words)!r}")
    return cleaned


# ----------------------------------------------------------------------------- phone maps

_ESPEAK_MAP: dict[str, tuple[str, ...]] = {
    # vowels
    "@": ("AH",), "@2": ("AH",), "@5": ("AH",), "@-": ("AH",), "3": ("ER",), "3:": ("ER",), "@L": ("AH", "L"),
    "a": ("AE",), "a#": ("AH",), "aa": ("AE",), "a:": ("AA",), "A:": ("AA",), "A": ("AA",), "A@": ("AA", "R"),
    "A#": ("AA",), "aI": ("AY",), "aI@": ("AY", "ER"), "aI3": ("AY", "ER"), "aU": ("AW",), "aU@": ("AW", "ER"),
    "E": ("EH",), "E2": ("EH",), "E#": ("EH",), "E@": ("EH", "R"), "e@": ("EH", "R"), "eI": ("EY",), "e": ("EH",),
    "i": ("IY",), "i:": ("IY",), "I": ("IH",), "I#": ("IH",), "I2": ("IH",), "I@": ("IH", "R"), "i@": ("IH", "R"),
    "i@3": ("IH", "R"), "O": ("AO",), "O:": ("AO",), "O@": ("AO", "R"), "o@": ("AO", "R"), "OI": ("OY",),
    "oU": ("OW",), "oU#": ("OW",), "o": ("OW",), "o:": ("OW",), "0": ("AA",), "0#": ("AA",), "u": ("UW",),
    "u:": ("UW",), "U": ("UH",), "U@": ("UH", "R"), "u@": ("UH", "R"), "V": ("AH",), "Y": ("IY",), "y": ("IY",),
    "W": ("AH",), "3:r": ("ER",), "@r": ("ER",), "eI@": ("EY", "ER"), "aI@3": ("AY", "ER"),
    # consonants
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "g": ("G",), "f": ("F",), "v": ("V",),
    "T": ("TH",), "D": ("DH",), "s": ("S",), "z": ("Z",), "S": ("SH",), "Z": ("ZH",), "h": ("HH",),
    "tS": ("CH",), "dZ": ("JH",), "m": ("M",), "n": ("N",), "N": ("NG",), "l": ("L",), "r": ("R",),
    "w": ("W",), "j": ("Y",), "t#": ("T",), "d#": ("D",), "t2": ("T",), "d2": ("D",), "n-": ("AH", "N"),
    "m-": ("AH", "M"), "l-": ("AH", "L"), "r-": ("R",), "x": ("K",), "?": ("T",), "z#": ("Z",), "s#": ("S",),
    "r/": ("R",), "l/": ("L",), "hw": ("W",), "w#": ("W",), "C": ("HH",), "k#": ("K",), "ts": ("T", "S"),
    "dz": ("D", "Z"), "l^": ("L",), "n^": ("N",), "j/": ("Y",), "*": ("R",), "R": ("R",),
}  # fmt: skip
"""espeak-ng English phoneme mnemonics -> ARPAbet (one espeak phone may be two ARPAbet phones)."""

_RADIO_MAP: dict[str, tuple[str, ...]] = {
    "ax": ("AH",), "axr": ("ER",), "dx": ("T",), "el": ("AH", "L"), "em": ("AH", "M"), "en": ("AH", "N"),
    "nx": ("N",), "ix": ("IH",), "hv": ("HH",), "ux": ("UW",), "q": ("T",), "h": ("HH",), "e": ("EH",),
    "i": ("IY",), "a": ("AA",), "o": ("OW",), "u": ("UW",), "@": ("AH",),
}  # fmt: skip
"""flite's CMU lexicon and festival's radio phone set: ARPAbet in lower case plus these."""

_PAUSES = frozenset({"pau", "h#", "#", "sil", "brth", "_", "ssil", "SIL"})


def map_espeak_phone(name: str) -> tuple[str, ...]:
    """One espeak-ng phoneme mnemonic -> ARPAbet phones; () for pauses, ("?",) when unknown."""
    if name.startswith("_") or not name or name == ";":  # pauses; ";" marks palatalisation
        return ()
    candidate = name
    while candidate:
        if candidate in _ESPEAK_MAP:
            return _ESPEAK_MAP[candidate]
        candidate = candidate[:-1]  # "aI@3" -> "aI@" -> ...: accent-specific suffixes
    return ("?",)


def map_radio_phone(name: str) -> tuple[str, ...]:
    """A flite/festival phone -> ARPAbet; () for pauses, ("?",) when unknown."""
    if name in _PAUSES:
        return ()
    upper = name.upper()
    if upper in _ARPABET_SET:
        return (upper,)
    return _RADIO_MAP.get(name, ("?",))


_ARPABET_SET = frozenset(ARPABET)


# ----------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class EnginePhone:
    """An engine phone, already mapped to one ARPAbet symbol (or "?"), with times and its word index."""

    label: str
    start: float
    end: float
    word: int | None = None


def expand_mapped(name_mapped: tuple[str, ...], start: float, end: float, word: int | None) -> list[EnginePhone]:
    """Split one engine phone's interval evenly over the ARPAbet phones it maps to."""
    if not name_mapped:
        return []
    step = (end - start) / len(name_mapped)
    return [EnginePhone(label, start + i * step, start + (i + 1) * step, word) for i, label in enumerate(name_mapped)]


def _substitution_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    if a == "?" or b == "?":
        return 0.7
    if (a in VOWELS) == (b in VOWELS):
        return 0.6
    return 1.2


def align_phones(engine: Sequence[EnginePhone], target: Sequence[tuple[str, int]]) -> list[tuple[float, float]]:
    """Give each dictionary phone (label, word index) a time span taken from the engine's phones.

    Weighted edit distance: same phone 0, same class (vowel/consonant) 0.6, else 1.2, gap 1,
    and +1.5 for pairing phones of different words when the engine said which word a phone is
    in. Engine phones left unpaired lend their time to the previous paired dictionary phone;
    dictionary phones left unpaired take an equal share of a neighbour's span.
    """
    n, m = len(engine), len(target)
    if m == 0:
        return []
    if n == 0:
        raise DataError("the TTS engine produced no phones for a non-empty text")
    gap = 1.0
    # plain lists: this runs once per clip on short sequences, where numpy overhead dominates
    cost = [[0.0] * (m + 1) for _ in range(n + 1)]
    move = [[0] * (m + 1) for _ in range(n + 1)]  # 0 diag, 1 up (skip engine), 2 left (skip target)
    for i in range(1, n + 1):
        cost[i][0], move[i][0] = i * gap, 1
    for j in range(1, m + 1):
        cost[0][j], move[0][j] = j * gap, 2
    for i in range(1, n + 1):
        e = engine[i - 1]
        row, previous = cost[i], cost[i - 1]
        for j in range(1, m + 1):
            label, word = target[j - 1]
            sub = _substitution_cost(e.label, label)
            if e.word is not None and e.word != word:
                sub += 1.5
            diagonal, up, left = previous[j - 1] + sub, previous[j] + gap, row[j - 1] + gap
            if diagonal <= up and diagonal <= left:
                row[j], move[i][j] = diagonal, 0
            elif up <= left:
                row[j], move[i][j] = up, 1
            else:
                row[j], move[i][j] = left, 2
    owner = [-1] * n
    i, j = n, m
    while i > 0 or j > 0:
        step = move[i][j]
        if step == 0:
            owner[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    # unpaired engine phones join the previous owner (or the next one at the very start)
    last = next((o for o in owner if o >= 0), 0)
    for k in range(n):
        if owner[k] < 0:
            owner[k] = last
        last = owner[k]
    spans: list[list[float] | None] = [None] * m
    for k, e in enumerate(engine):
        span = spans[owner[k]]
        if span is None:
            spans[owner[k]] = [e.start, e.end]
        else:
            span[0], span[1] = min(span[0], e.start), max(span[1], e.end)
    # runs of dictionary phones without time split a neighbour's span
    j = 0
    while j < m:
        if spans[j] is not None:
            j += 1
            continue
        k = j
        while k < m and spans[k] is None:
            k += 1
        run = k - j
        if j > 0:  # share the previous phone's span: it keeps the first part
            start, end = spans[j - 1]
            step = (end - start) / (run + 1)
            spans[j - 1] = [start, start + step]
            for r in range(run):
                spans[j + r] = [start + (r + 1) * step, start + (r + 2) * step]
        else:  # at the start: share the next phone's span, which keeps the last part
            start, end = spans[k]
            step = (end - start) / (run + 1)
            for r in range(run):
                spans[j + r] = [start + r * step, start + (r + 1) * step]
            spans[k] = [start + run * step, end]
        j = k
    return [(float(s[0]), float(s[1])) for s in spans]  # type: ignore[index]


def dictionary_units(
    words: Sequence[str], engine: Sequence[EnginePhone], duration: float
) -> tuple[list[AlignedUnit], list[AlignedUnit]]:
    """Word and phone AlignedUnits: dictionary phones timed by the engine's phones."""
    target = [(phone, w) for w, word in enumerate(words) for phone in word_phonemes(word)]
    spans = align_phones(engine, target)
    phones = [
        AlignedUnit(label, _clip(start, duration), _clip(end, duration))
        for (label, _), (start, end) in zip(target, spans)
    ]
    word_units = []
    for w, word in enumerate(words):
        own = [span for (_, index), span in zip(target, spans) if index == w]
        if not own:  # a word without phonemes (cannot happen for dictionary words): zero length
            at = word_units[-1].end if word_units else 0.0
            word_units.append(AlignedUnit(word, at, at))
            continue
        word_units.append(AlignedUnit(word, _clip(own[0][0], duration), _clip(own[-1][1], duration)))
    return word_units, phones


def _clip(t: float, duration: float) -> float:
    return round(min(max(t, 0.0), duration), 4)


# ----------------------------------------------------------------------------- espeak-ng


class _EspeakId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EspeakId),
    ]


_ESPEAK_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_EspeakEvent))
_EVENT_END_OF_LIST, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS, _INIT_DONT_EXIT = 0x0001, 0x8000
_PARAM_RATE, _PARAM_PITCH = 1, 3
_CHARS_UTF8 = 1
ESPEAK_DEFAULT_WPM = 175


def _espeak_library_path() -> str | None:
    import ctypes.util

    for name in ("libespeak-ng.so.1", "libespeak-ng.so"):
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            continue
    return ctypes.util.find_library("espeak-ng")


class _Espeak:
    """libespeak-ng loaded in this process, in synchronous mode with phoneme events."""

    def __init__(self):
        path = _espeak_library_path()
        if path is None:
            raise MissingToolError("espeak-ng's library libespeak-ng.so.1 is not installed (apt-get install libespeak-ng1)")
        self.lib = ctypes.CDLL(path)
        self.libc = ctypes.CDLL(None)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if self.sample_rate <= 0:
            raise MissingToolError("espeak-ng could not start: its data folder (espeak-ng-data) is missing")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        self._callback = _ESPEAK_CALLBACK(self._on_audio)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _on_audio(self, wave, count, events) -> int:
        if count > 0:
            self._chunks.append(np.ctypeslib.as_array(wave, shape=(count,)).copy())
        k = 0
        while events[k].type != _EVENT_END_OF_LIST:
            event = events[k]
            name = bytes(event.id.string).split(b"\0")[0].decode("utf-8", "replace") if event.type == _EVENT_PHONEME else ""
            self._events.append((event.type, event.text_position, event.sample, name))
            k += 1
        return 0

    def speak(self, text: str, voice: Voice) -> tuple[np.ndarray, list[tuple[int, int, int, str]]]:
        with self.lock:
            name = voice.name + (f"+{voice.variant}" if voice.variant else "")
            if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise MissingToolError(f"espeak-ng has no voice {name!r}")
            rate = int(round(min(max(ESPEAK_DEFAULT_WPM * voice.rate, 80), 450)))
            pitch = int(round(min(max(50 * voice.pitch, 0), 100)))
            self.lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            self._chunks, self._events = [], []
            # breathy variants and pitch flutter draw from libc's rand(): seed it per text
            self.libc.srand(zlib.crc32(f"{voice.id}|{text}".encode()))
            data = text.encode("utf-8")
            buffer = ctypes.create_string_buffer(data)
            status = self.lib.espeak_Synth(buffer, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if status != 0:
                raise DataError(f"espeak-ng failed (status {status}) on {text!r}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return samples, list(self._events)


_ESPEAK_BY_PID: dict[int, _Espeak] = {}


def _espeak() -> _Espeak:
    # One instance per process: the library keeps global state, and a forked child must not
    # reuse its parent's callback thread-state.
    pid = os.getpid()
    if pid not in _ESPEAK_BY_PID:
        _ESPEAK_BY_PID[pid] = _Espeak()
    return _ESPEAK_BY_PID[pid]


def synth_espeak(words: Sequence[str], voice: Voice) -> Synthesis:
    """espeak-ng through its C API: WORD and PHONEME events give exact sample positions."""
    words = _clean_words(words)
    engine = _espeak()
    text = " ".join(words)
    offsets, position = [], 0
    for word in words:
        offsets.append(position)
        position += len(word) + 1
    raw, events = engine.speak(text, voice)
    rate = engine.sample_rate
    total = len(raw) / rate
    marks: list[tuple[float, str, int | None]] = []  # (start, phone name, word index)
    current: int | None = None
    for kind, text_position, sample, name in events:
        if kind == _EVENT_WORD:
            char = text_position - 1  # espeak counts characters from 1
            current = max((w for w, start in enumerate(offsets) if start <= char), default=0)
        elif kind == _EVENT_PHONEME:
            marks.append((sample / rate, name, current))
    engine_phones: list[EnginePhone] = []
    for k, (start, name, word) in enumerate(marks):
        end = marks[k + 1][0] if k + 1 < len(marks) else total
        engine_phones += expand_mapped(map_espeak_phone(name), start, end, word)
    samples = resample(raw.astype(np.float32) / 32768.0, rate, SAMPLE_RATE)
    duration = len(samples) / SAMPLE_RATE
    word_units, phone_units = dictionary_units(words, engine_phones, duration)
    return Synthesis(samples, word_units, phone_units, voice, text)


# ----------------------------------------------------------------------------- flite


@functools.lru_cache(maxsize=1)
def flite_voices() -> tuple[str, ...]:
    """The voices of the installed flite (`flite -lv`); () without flite."""
    binary = shutil.which("flite")
    if binary is None:
        return ()
    out = subprocess.run([binary, "-lv"], capture_output=True, text=True, check=False).stdout
    return tuple(out.split(":", 1)[-1].split())


def _require(program: str, package: str) -> str:
    binary = shutil.which(program)
    if binary is None:
        raise MissingToolError(f"the TTS engine {program} is not installed (apt-get install {package})")
    return binary


def parse_psdur(text: str) -> list[tuple[str, float]]:
    """flite's `-psdur` output 'pau:0.164 hh:0.233 ...' -> [(phone, end time in s)]."""
    result = []
    for item in text.split():
        phone, _, end = item.rpartition(":")
        try:
            result.append((phone, float(end)))
        except ValueError as exc:
            raise DataError(f"flite -psdur printed an unexpected item {item!r}") from exc
    return result


def synth_flite(words: Sequence[str], voice: Voice) -> Synthesis:
    """flite: audio to a temporary wav, phone end times from `-psdur` (no word events: aligned)."""
    binary = _require("flite", "flite")
    if voice.name not in flite_voices():
        raise MissingToolError(f"flite has no voice {voice.name!r} (it has: {', '.join(flite_voices())})")
    words = _clean_words(words)
    text = " ".join(words)
    f0 = FLITE_BASE_F0.get(voice.name, 110.0) * voice.pitch
    with tempfile.TemporaryDirectory(prefix="flite-") as folder:
        wav = Path(folder) / "out.wav"
        command = [
            binary, "-voice", voice.name, "-t", text, "-psdur", "-o", str(wav),
            "--setf", f"duration_stretch={1.0 / voice.rate:.4f}", "--setf", f"int_f0_target_mean={f0:.1f}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wav.is_file():
            raise DataError(f"flite failed on {text!r}: {result.stderr.strip()[-300:]}")
        raw, rate = sf.read(str(wav), dtype="float32")
    samples = resample(raw, rate, SAMPLE_RATE)
    duration = len(samples) / SAMPLE_RATE
    engine_phones, start = [], 0.0
    for phone, end in parse_psdur(result.stdout):
        engine_phones += expand_mapped(map_radio_phone(phone), start, end, None)
        start = end
    word_units, phone_units = dictionary_units(words, engine_phones, duration)
    return Synthesis(samples, word_units, phone_units, voice, text)


# ----------------------------------------------------------------------------- festival


@functools.lru_cache(maxsize=1)
def _festival_voices() -> tuple[str, ...]:
    found = []
    for root in ("/usr/share/festival/voices", "/usr/lib/festival/voices", "/usr/local/share/festival/voices"):
        base = Path(root)
        if base.is_dir():
            found += [path.name for path in base.glob("*/*") if path.is_dir()]
    return tuple(sorted(set(found)))


def parse_xlabel(path: Path) -> list[tuple[float, str]]:
    """festival's utt.save.segs / utt.save.words files -> [(end time in s, label)]."""
    rows, body = [], False
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not body:
            body = line.strip() == "#"
            continue
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            rows.append((float(parts[0]), parts[2]))
        except ValueError as exc:
            raise DataError(f"{path}: unexpected festival label line {line!r}") from exc
    return rows


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synth_festival_many(word_lists: Sequence[Sequence[str]], voice: Voice) -> list[Synthesis]:
    """festival: several texts with one voice in one process."""
    return synth_festival_items([(words, voice) for words in word_lists])


def synth_festival_items(items: Sequence[tuple[Sequence[str], Voice]]) -> list[Synthesis]:
    """festival in batch mode: one scheme script speaks every (words, voice) pair of one festival
    voice, each with its own rate and pitch, and saves wave, segs and words files."""
    binary = _require("festival", "festival")
    names = {voice.name for _, voice in items}
    if len(names) > 1:
        raise ValueError(f"one festival voice per batch, not {sorted(names)}")
    if not items:
        return []
    name = items[0][1].name
    if name not in _festival_voices():
        raise MissingToolError(
            f"festival has no voice {name!r} (installed: {', '.join(_festival_voices()) or 'none'}; "
            "Debian packages festvox-kallpc16k, festvox-kdlpc16k, festvox-us-slt-hts)"
        )
    items = [(_clean_words(words), voice) for words, voice in items]
    diphone = name.endswith("_diphone")
    results = []
    with tempfile.TemporaryDirectory(prefix="festival-") as folder:
        lines = [f"(voice_{name})"]
        if diphone:  # diphone voices take their F0 target from int_lr_params
            lines.append("(set! base_f0_mean (cadr (assoc 'target_f0_mean int_lr_params)))")
        for k, (words, voice) in enumerate(items):
            lines.append(f"(Parameter.set 'Duration_Stretch {1.0 / voice.rate:.4f})")
            if diphone:
                lines.append(
                    f"(set! int_lr_params (cons (list 'target_f0_mean (* {voice.pitch:.4f} base_f0_mean)) int_lr_params))"
                )
            base = _scheme_string(str(Path(folder) / f"u{k}"))
            lines += [
                f"(set! utt{k} (utt.synth (Utterance Text {_scheme_string(' '.join(words))})))",
                f"(utt.save.wave utt{k} (string-append {base} \".wav\") 'riff)",
                f"(utt.save.segs utt{k} (string-append {base} \".segs\"))",
                f"(utt.save.words utt{k} (string-append {base} \".words\"))",
                f"(set! utt{k} nil)",
            ]
        script = Path(folder) / "speak.scm"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = subprocess.run([binary, "--batch", str(script)], capture_output=True, text=True, check=False)
        for k, (words, voice) in enumerate(items):
            wav = Path(folder) / f"u{k}.wav"
            if result.returncode != 0 or not wav.is_file():
                raise DataError(f"festival failed on {' '.join(words)!r}: {(result.stderr or result.stdout).strip()[-300:]}")
            raw, rate = sf.read(str(wav), dtype="float32")
            samples = resample(raw, rate, SAMPLE_RATE)
            duration = len(samples) / SAMPLE_RATE
            segments = parse_xlabel(Path(folder) / f"u{k}.segs")
            word_ends = [end for end, _ in parse_xlabel(Path(folder) / f"u{k}.words")]
            use_words = len(word_ends) == len(words)  # festival tokenised as we did: trust its words
            engine_phones, start = [], 0.0
            for end, phone in segments:
                mapped = map_radio_phone(phone)
                word = None
                if use_words and mapped:
                    middle = (start + end) / 2
                    word = next((w for w, word_end in enumerate(word_ends) if middle <= word_end), len(words) - 1)
                engine_phones += expand_mapped(mapped, start, end, word)
                start = end
            word_units, phone_units = dictionary_units(words, engine_phones, duration)
            results.append(Synthesis(samples, word_units, phone_units, voice, " ".join(words)))
    return results


def synth_festival(words: Sequence[str], voice: Voice) -> Synthesis:
    """festival: one text (see `synth_festival_many` to amortise its start-up)."""
    return synth_festival_many([words], voice)[0]
