"""Merging candidate windows into regions, and picking tight hit times inside a region."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_REGION_S = 3.0
"""Seconds. Overlapping candidates are chained into one region only up to this length, so a
long stretch of similar speech becomes several regions instead of one that buries the hit."""

REFINE_MARGIN = 0.05
"""A window nested in a region's best window and within this similarity of it may stand for the hit."""


@dataclass(frozen=True)
class Candidate:
    """A retrieved window: its file, [start, end) seconds and similarity to the query."""

    file: str
    start: float
    end: float
    similarity: float


@dataclass
class Region:
    """Overlapping candidates of one file, merged."""

    file: str
    start: float
    end: float
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def similarity(self) -> float:
        return max(c.similarity for c in self.candidates)

    def hit_span(self) -> tuple[float, float]:
        """The best window, or a shorter window nested in it that scores almost as well.

        Retrieval often ranks a long window around the spoken query first; a short window inside
        it that is nearly as similar brackets the query more tightly, and staying inside the
        best window keeps the span from drifting onto neighbouring speech.
        """
        best = max(self.candidates, key=lambda c: c.similarity)
        chosen = best
        for other in self.candidates:
            nested = other.start >= best.start - 1e-6 and other.end <= best.end + 1e-6
            if not nested or other.similarity < best.similarity - REFINE_MARGIN:
                continue
            length, chosen_length = other.end - other.start, chosen.end - chosen.start
            if length < chosen_length - 1e-6 or (abs(length - chosen_length) <= 1e-6 and other.similarity > chosen.similarity):
                chosen = other
        return chosen.start, chosen.end


def merge_regions(candidates: list[Candidate], max_region_s: float = MAX_REGION_S) -> list[Region]:
    """Chain overlapping candidates of the same file into regions, best region first."""
    regions: list[Region] = []
    ordered = sorted(candidates, key=lambda c: (c.file, c.start, c.end))
    current: Region | None = None
    for candidate in ordered:
        if (
            current is not None
            and candidate.file == current.file
            and candidate.start < current.end
            and max(current.end, candidate.end) - current.start <= max_region_s
        ):
            current.end = max(current.end, candidate.end)
            current.candidates.append(candidate)
            continue
        current = Region(candidate.file, candidate.start, candidate.end, [candidate])
        regions.append(current)
    regions.sort(key=lambda r: -r.similarity)
    return regions
