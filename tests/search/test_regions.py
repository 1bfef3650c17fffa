import numpy as np

from archive_search.search.regions import Candidate, merge_regions


def test_overlapping_windows_merge_per_file():
    candidates = [
        Candidate("/a.wav", 1.0, 1.5, 0.9),
        Candidate("/a.wav", 1.2, 2.2, 0.7),
        Candidate("/a.wav", 3.0, 3.5, 0.95),  # apart: its own region
        Candidate("/b.wav", 1.1, 1.6, 0.8),  # same times, other file: its own region
        Candidate("/a.wav", 2.2, 2.7, 0.5),  # touches 2.2 but does not overlap
    ]
    regions = merge_regions(candidates)
    spans = [(r.file, r.start, r.end, round(r.similarity, 2)) for r in regions]
    assert spans == [
        ("/a.wav", 3.0, 3.5, 0.95),
        ("/a.wav", 1.0, 2.2, 0.9),
        ("/b.wav", 1.1, 1.6, 0.8),
        ("/a.wav", 2.2, 2.7, 0.5),
    ]


def test_long_chains_split_around_peaks():
    similarity = [0.5 + 0.4 * np.exp(-((t - 7) ** 2) / 4) + 0.3 * np.exp(-((t - 20) ** 2) / 4) for t in range(30)]
    candidates = [Candidate("/a.wav", t * 0.5, t * 0.5 + 1.0, s) for t, s in enumerate(similarity)]
    regions = merge_regions(candidates)
    assert all(r.end - r.start <= 3.0 for r in regions)  # seed plus one window each side
    assert sum(len(r.candidates) for r in regions) == 30  # every candidate in exactly one region
    assert regions[0].hit_span() == (3.5, 4.5) and regions[1].hit_span() == (10.0, 11.0)


def test_hit_span_prefers_a_nested_short_window_that_scores_almost_as_well():
    region = merge_regions([
        Candidate("/a.wav", 1.0, 2.6, 0.80),
        Candidate("/a.wav", 1.5, 2.0, 0.78),  # inside the best, nearly as good: the hit
        Candidate("/a.wav", 2.4, 2.9, 0.79),  # not nested: ignored
        Candidate("/a.wav", 1.1, 1.6, 0.60),  # nested but much worse: ignored
    ])[0]
    assert region.hit_span() == (1.5, 2.0)
    alone = merge_regions([Candidate("/a.wav", 1.0, 2.6, 0.8), Candidate("/a.wav", 1.2, 1.7, 0.5)])[0]
    assert alone.hit_span() == (1.0, 2.6)
