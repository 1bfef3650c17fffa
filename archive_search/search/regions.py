"""Merging candidate windows into regions, and picking tight hit times inside a region."""

from __future__ import annotations

from dataclasses import dataclass, field

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


def merge_regions(candidates: list[Candidate]) -> list[Region]:
    """Group candidates into regions around peaks, best region first.

    The best remaining window seeds a region, and every remaining window of the same file that
    overlaps it joins. So a region spans at most the seed plus one window on each side, and a
    long stretch of similar windows becomes several regions, each centred on a local best,
    instead of one chain whose extent says nothing about where the query was spoken.
    """
    remaining = sorted(candidates, key=lambda c: -c.similarity)
    regions: list[Region] = []
    while remaining:
        seed = remaining[0]
        members, rest = [], []
        for candidate in remaining:
            overlaps = candidate.file == seed.file and candidate.start < seed.end and seed.start < candidate.end
            (members if overlaps else rest).append(candidate)
        regions.append(Region(seed.file, min(c.start for c in members), max(c.end for c in members), members))
        remaining = rest
    return regions
