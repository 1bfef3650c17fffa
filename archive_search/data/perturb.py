"""Speed-perturbed copies of a corpus, the Kaldi recipe (factors 0.9 and 1.1) for more real
voices from little real speech: each copy is resampled (tempo and pitch change together, as a
faster or slower speaker would) and its word and phone times are divided by the factor, so the
alignments stay exact. The copies are written once as audio files with their own manifest and
then train like any other corpus (their whole-utterance features can be cached)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Sequence

from archive_search.audio import load_audio
from archive_search.data.augment import change_speed
from archive_search.data.manifest import AlignedUnit, Utterance
from archive_search.data.synth import write_audio
from archive_search.errors import ArchiveSearchError, DataError

SPEED_FACTORS = (0.9, 1.1)
"""Kaldi's speed perturbation (Ko et al., 2015): the original plus copies at 0.9 and 1.1."""


@dataclass(frozen=True)
class PerturbFailure:
    """An utterance whose copy could not be made, and why."""

    utterance_id: str
    reason: str


@dataclass
class PerturbResult:
    utterances: list[Utterance]
    failures: list[PerturbFailure]


def _scaled(units: list[AlignedUnit], factor: float) -> list[AlignedUnit]:
    return [AlignedUnit(unit.label, round(unit.start / factor, 4), round(unit.end / factor, 4)) for unit in units]


def speed_copies(utterance: Utterance, root: str | Path, factors: Sequence[float], out_dir: str | Path) -> list[Utterance]:
    """Decode `utterance` once and write it played `factor` times faster, for each factor, to
    out_dir/audio/<id>-sp<factor>.flac; returns their records (audio paths relative to out_dir,
    times divided by the factor, `augment` naming the factor and the source utterance, which
    the JMCL word bank needs to count a token and its copies once)."""
    samples = load_audio(utterance.audio_path(root))
    copies = []
    for factor in factors:
        new_id = f"{utterance.id}-sp{factor:g}"
        relative = Path("audio") / f"{new_id}.flac"
        write_audio(Path(out_dir) / relative, change_speed(samples, factor))
        copies.append(replace(
            utterance, id=new_id, audio=str(relative), duration=round(utterance.duration / factor, 4),
            words=_scaled(utterance.words, factor), phones=_scaled(utterance.phones, factor),
            augment={**utterance.augment, "speed": factor, "source": utterance.augment.get("source", utterance.id)},
        ))  # fmt: skip
    return copies


def speed_perturb(
    utterances: Iterable[tuple[Utterance, Path]], factors: Iterable[float], out_dir: str | Path
) -> PerturbResult:
    """Copies of every (utterance, manifest folder) at every factor. An utterance whose audio
    cannot be read is reported in `failures` and the others carry on."""
    factors = tuple(factors)
    if not factors or any(factor <= 0 for factor in factors):
        raise DataError(f"speed factors must be positive, not {factors}")
    made, failures = [], []
    for utterance, root in utterances:
        try:
            made.extend(speed_copies(utterance, root, factors, out_dir))
        except ArchiveSearchError as error:
            failures.append(PerturbFailure(utterance.id, str(error)))
    return PerturbResult(made, failures)
