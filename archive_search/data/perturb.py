"""Speed-perturbed copies of a corpus, the Kaldi recipe (factors 0.9 and 1.1) for more real
voices from little real speech: each copy is resampled (tempo and pitch change together, as a
faster or slower speaker would) and its word and phone times are divided by the factor, so the
alignments stay exact. The copies are written once as audio files with their own manifest and
then train like any other corpus (their whole-utterance features can be cached)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable

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


def speed_id(utterance_id: str, factor: float) -> str:
    return f"{utterance_id}-sp{factor:g}"


def _scaled(units: list[AlignedUnit], factor: float) -> list[AlignedUnit]:
    return [AlignedUnit(unit.label, round(unit.start / factor, 4), round(unit.end / factor, 4)) for unit in units]


def speed_copy(utterance: Utterance, root: str | Path, factor: float, out_dir: str | Path) -> Utterance:
    """Write `utterance` played `factor` times faster to out_dir/audio/<id>-sp<factor>.flac and
    return its record (audio path relative to out_dir, times divided by the factor)."""
    if factor <= 0:
        raise DataError(f"speed factor must be positive, not {factor}")
    samples = change_speed(load_audio(utterance.audio_path(root)), factor)
    new_id = speed_id(utterance.id, factor)
    relative = Path("audio") / f"{new_id}.flac"
    write_audio(Path(out_dir) / relative, samples)
    augment = {**utterance.augment, "speed": factor}
    return replace(
        utterance, id=new_id, audio=str(relative), duration=round(utterance.duration / factor, 4),
        words=_scaled(utterance.words, factor), phones=_scaled(utterance.phones, factor), augment=augment,
    )  # fmt: skip


def speed_perturb(
    utterances: Iterable[tuple[Utterance, Path]], factors: Iterable[float], out_dir: str | Path
) -> PerturbResult:
    """A copy of every (utterance, manifest folder) at every factor. An utterance whose audio
    cannot be read is reported in `failures` and the others carry on."""
    factors = tuple(factors)
    made, failures = [], []
    for utterance, root in utterances:
        for factor in factors:
            try:
                made.append(speed_copy(utterance, root, factor, out_dir))
            except ArchiveSearchError as error:
                failures.append(PerturbFailure(utterance.id, str(error)))
                break
    return PerturbResult(made, failures)
