"""Offline G2P: dictionary words, neural fallback, number normalisation, refusals, no network."""

from __future__ import annotations

import subprocess
import sys

import pytest

from archive_search.embedders import g2p, phonemes
from archive_search.errors import QueryError


def test_dictionary_word_uses_cmudict_without_stress():
    assert g2p.word_phonemes("hello") == ["HH", "AH", "L", "OW"]


def test_unknown_word_gets_a_neural_pronunciation_in_the_inventory():
    result = g2p.word_phonemes("zyxtrobal")
    assert len(result) >= 6
    assert all(symbol in phonemes.ARPABET for symbol in result)


def test_numbers_become_words():
    assert g2p.pronounce("7 cats").words == ("seven", "cats")


@pytest.mark.parametrize("text", ["", "   ", "😀 ?!", "$$$ ###"])
def test_unpronounceable_queries_are_refused(text):
    with pytest.raises(QueryError):
        g2p.pronounce(text)


def test_too_long_query_is_refused():
    with pytest.raises(QueryError, match="at most"):
        g2p.pronounce(" ".join(["word"] * (g2p.MAX_QUERY_WORDS + 1)))


def test_accents_are_stripped():
    assert g2p.pronounce("Café naïve").words == ("cafe", "naive")


def test_g2p_imports_and_runs_with_the_network_blocked():
    # A fresh interpreter, so that no earlier import has already loaded g2p_en.
    code = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network blocked by test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from archive_search.embedders.g2p import pronounce\n"
        "print(' '.join(pronounce('archive zyxtrobal').phonemes))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("AA R K AY V")
    assert "nltk_data" not in result.stderr


def test_grapheme_ids_end_with_end_of_sequence():
    ids = g2p.grapheme_ids("cab")
    model = g2p.g2p_model()
    assert [model.idx2g[i] for i in ids] == ["c", "a", "b", "</s>"]
