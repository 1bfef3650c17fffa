"""The one phoneme inventory of the project: ARPAbet as CMUdict and g2p_en use it, stress removed.

The TTS timing maps, the CTC targets, the JMCL text encoder and the ParallelKWS duration
targets all index phonemes through this module, so every side sees the same symbols.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch

ARPABET: tuple[str, ...] = (
    "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G",
    "HH", "IH", "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH",
    "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip

BLANK = "<blank>"
"""Index 0: the CTC blank and the padding symbol of phoneme sequences."""

SYMBOLS: tuple[str, ...] = (BLANK, *ARPABET)
SYMBOL_TO_ID: dict[str, int] = {symbol: index for index, symbol in enumerate(SYMBOLS)}
VOCAB_SIZE = len(SYMBOLS)
PAD_ID = 0


def strip_stress(phoneme: str) -> str:
    """'AH0' -> 'AH'; leaves unstressed symbols as they are."""
    return phoneme.rstrip("012")


def normalise_phonemes(phonemes: Iterable[str]) -> list[str]:
    """Strip stress and drop anything outside the inventory (spaces, punctuation)."""
    result = []
    for phoneme in phonemes:
        symbol = strip_stress(phoneme.strip().upper())
        if symbol in SYMBOL_TO_ID and symbol != BLANK:
            result.append(symbol)
    return result


def encode(phonemes: Sequence[str]) -> list[int]:
    """Phoneme symbols (stress allowed) -> ids in 1..VOCAB_SIZE-1."""
    return [SYMBOL_TO_ID[symbol] for symbol in normalise_phonemes(phonemes)]


def decode(ids: Iterable[int]) -> list[str]:
    """Ids -> symbols, skipping blanks/padding."""
    return [SYMBOLS[i] for i in ids if i != PAD_ID]


def pad_batch(sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id sequences: returns ids (B, P) long, padded with PAD_ID, and lengths (B,) long."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = int(lengths.max()) if len(sequences) else 0
    ids = torch.full((len(sequences), max(width, 1)), PAD_ID, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if len(sequence):
            ids[row, : len(sequence)] = torch.as_tensor(list(sequence), dtype=torch.long)
    return ids, lengths
