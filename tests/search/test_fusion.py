"""The one score fusion: feature columns, per-query normalisation and merging of channels."""

import math

import numpy as np
import pytest

from archive_search.errors import CheckpointError
from archive_search.search.engine import _merge_matches
from archive_search.search.fusion import (
    FEATURES,
    PRIOR_FUSION,
    Evidence,
    Fusion,
    QueryContext,
    feature_matrix,
    fuse,
    load_fusions,
    save_fusions,
)
from archive_search.search.transcripts import TranscriptMatch


def match(file="/a.wav", start=1.0, end=1.5, probability=0.8, similarity=1.0, exact=True):
    return TranscriptMatch(file, start, end, probability, similarity, exact, "word")


def test_feature_matrix_by_hand():
    regions = [
        Evidence("/a.wav", 1.0, 1.5, similarity=0.7, rerank=0.6, exact=match()),
        Evidence("/a.wav", 5.0, 5.5, similarity=None, rerank=0.2, phonetic=match(similarity=0.75, probability=0.5, exact=False)),
        Evidence("/b.wav", 0.0, 0.4, similarity=0.4, rerank=0.2),
    ]
    rows = feature_matrix(regions, QueryContext(n_phonemes=5, exact_count=1, in_vocabulary=True, similarity_floor=0.3))
    column = {name: rows[:, i] for i, name in enumerate(FEATURES)}
    assert column["exact"].tolist() == [1, 0, 0]
    assert column["exact_probability"].tolist() == [0.8, 0, 0]
    assert column["phonetic"].tolist() == [1.0, 0.75, 0]  # an exact match is a perfect phonetic one
    assert column["phonetic_probability"].tolist() == [0.8, 0.5, 0]
    assert column["similarity"].tolist() == [0.7, 0.3, 0.4]  # not retrieved: the retrieval floor
    # Kaldi's sum-to-one normalisation: 0.6 / (0.6 + 0.2 + 0.2)
    assert column["rerank_share"] == pytest.approx([0.6, 0.2, 0.2])
    assert column["rerank_mass"] == pytest.approx([math.log(2.0)] * 3)
    assert column["exact_count"] == pytest.approx([math.log(2.0)] * 3)
    assert column["in_vocabulary"].tolist() == [1, 1, 1]
    assert column["query_phonemes"].tolist() == [0.5, 0.5, 0.5]


def test_fuse_is_the_logistic_of_the_named_columns():
    fusion = Fusion(("exact", "rerank"), (2.0, -1.0), 0.5)
    matrix = np.zeros((2, len(FEATURES)))
    matrix[0, FEATURES.index("exact")] = 1.0
    matrix[0, FEATURES.index("rerank")] = 0.5
    matrix[1, FEATURES.index("similarity")] = 9.0  # a column the fusion does not use
    z0 = 2.0 * 1.0 - 1.0 * 0.5 + 0.5
    assert fuse(matrix, fusion) == pytest.approx([1 / (1 + math.exp(-z0)), 1 / (1 + math.exp(-0.5))])
    assert fusion(matrix) == pytest.approx(fuse(matrix, fusion))


def test_fusion_refuses_unknown_features():
    with pytest.raises(CheckpointError):
        Fusion(("exact", "loudness"), (1.0, 1.0), 0.0)
    with pytest.raises(CheckpointError):
        Fusion(("exact",), (1.0, 2.0), 0.0)


def test_prior_fusion_passes_an_exact_match_and_not_a_weak_acoustic_one():
    context = QueryContext(6, 1, True, 0.2)
    regions = [Evidence("/a.wav", 1, 2, similarity=0.2, exact=match(probability=0.9)), Evidence("/a.wav", 4, 5, similarity=0.3, rerank=0.3)]
    exact_score, weak_score = fuse(feature_matrix(regions, context), PRIOR_FUSION)
    assert exact_score > 0.5 > weak_score


def test_fusions_round_trip_through_their_file(tmp_path):
    path = tmp_path / "fusion.json"
    text = Fusion(("exact", "similarity"), (1.5, 2.5), -1.0, "dev", 0.7)
    save_fusions(path, "model+reranker", {"text": text})
    save_fusions(path, "other", {"audio": PRIOR_FUSION})
    loaded = load_fusions(path)
    assert loaded["model+reranker"]["text"] == text
    assert set(loaded) == {"model+reranker", "other"}
    assert load_fusions(tmp_path / "absent.json") == {}


def test_overlapping_candidates_from_different_channels_become_one_region():
    regions = [Evidence("/a.wav", 0.9, 1.9, similarity=0.6, sources={"vectors"}), Evidence("/a.wav", 8.0, 9.0, similarity=0.5, sources={"vectors"})]
    _merge_matches(regions, [
        match(start=1.2, end=1.6),  # inside the first acoustic region: joins it
        match(start=1.25, end=1.65, similarity=0.8, exact=False),  # the same place, phonetically
        match(start=4.0, end=4.5),  # nowhere near: a region of its own
        match(file="/b.wav", start=1.2, end=1.6),  # same times, another file
    ])  # fmt: skip
    assert len(regions) == 4
    first = regions[0]
    assert first.sources == {"vectors", "exact", "phonetic"}
    assert (first.start, first.end) == (1.2, 1.6)  # the words' times are tighter than the window
    assert first.similarity == 0.6 and first.exact is not None and first.phonetic.similarity == 0.8
    assert regions[1].sources == {"vectors"} and regions[1].exact is None
    assert [(r.file, r.start, r.similarity) for r in regions[2:]] == [("/a.wav", 4.0, None), ("/b.wav", 1.2, None)]
