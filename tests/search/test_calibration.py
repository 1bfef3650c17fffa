"""Score calibration: fitted threshold, monotone [0, 1] map, file round trip, applied only to its scorer."""

import json
from dataclasses import replace

import numpy as np
import pytest

from archive_search import Archive
from archive_search.errors import CheckpointError, EvaluationError
from archive_search.search.calibration import (
    Calibration,
    ScoreCalibration,
    fit_kind,
    load_calibration,
    load_calibrations,
    save_calibration,
    scorer_name,
)
from tests.fakes import fake_bundle, lexicon, write_episodes

SPEECH_S = 3600.0


def test_threshold_is_the_development_mtwv_point():
    # Two terms, one true occurrence each. Every hit scores >= 0.8 and every false alarm below
    # 0.6, so the best cut accepts exactly the hits: the lowest hit score.
    scores = [np.array([0.9, 0.55, 0.5]), np.array([0.8, 0.58, 0.3])]
    correct = [np.array([True, False, False]), np.array([True, False, False])]
    fitted = fit_kind(scores, correct, [1, 1], SPEECH_S)
    assert fitted.threshold == pytest.approx(0.8)
    assert fitted.dev_mtwv == pytest.approx(1.0)
    assert fitted.n_detections == 6 and fitted.slope > 1.0
    assert fitted(0.8) == pytest.approx(0.5)
    values = [fitted(x) for x in (-1.0, 0.3, 0.7, 0.8, 0.95, 1.0)]
    assert values == sorted(values) and all(0.0 <= v <= 1.0 for v in values)


def test_a_false_alarm_above_the_hits_moves_the_threshold_up_when_it_costs_more():
    # With 10 s of speech a false alarm costs beta / 10 ~ 100 terms' worth: accept nothing.
    scores = [np.array([0.95, 0.9])]
    correct = [np.array([False, True])]
    fitted = fit_kind(scores, correct, [1], 10.0)
    assert fitted(0.95) <= 0.5 + 1e-9 and fitted(0.9) < 0.5


def test_fit_needs_a_present_term():
    with pytest.raises(EvaluationError):
        fit_kind([np.array([0.5])], [np.array([False])], [0], SPEECH_S)


def test_file_round_trip_keeps_other_scorers(tmp_path):
    path = tmp_path / "calibration.json"
    first = Calibration("jmcl-a", {"text": ScoreCalibration(0.7, 12.0), "audio": ScoreCalibration(0.9, 30.0)}, "dev")
    save_calibration(path, first)
    save_calibration(path, Calibration("jmcl-b", {"text": ScoreCalibration(0.6, 5.0)}))
    loaded = load_calibration(path, "jmcl-a")
    assert loaded == first
    assert load_calibration(path, "jmcl-b").kinds["text"].threshold == 0.6
    assert load_calibration(path, "other") is None
    assert load_calibration(tmp_path / "missing.json", "jmcl-a") is None
    assert set(load_calibrations(path)) == {"jmcl-a", "jmcl-b"}
    assert loaded.apply("text", 0.7) == pytest.approx(0.5)
    assert Calibration("x", {}).apply("audio", 1.7) == 1.0  # an uncalibrated kind passes through, clipped
    path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="calibration.json"):
        load_calibration(path, "jmcl-a")
    path.write_text(json.dumps({"jmcl-a": {"kinds": {"text": {"threshold": 0.5}}}}))
    with pytest.raises(CheckpointError, match="malformed"):
        load_calibration(path, "jmcl-a")


def test_engine_applies_only_the_calibration_of_its_own_scorer(tmp_path):
    write_episodes(tmp_path / "audio", count=3)
    bundle = fake_bundle(lexicon(), reranker=False)
    archive = Archive.open(tmp_path / "index", bundle)
    assert archive.add([tmp_path / "audio"]).ok
    raw = archive.search("apple", top=5)

    strict = ScoreCalibration(threshold=0.999, slope=20.0)
    own = Calibration(scorer_name(bundle.name, None), {"text": strict})
    calibrated = Archive.open(tmp_path / "index", replace(bundle, calibrations={own.scorer: own})).search("apple", top=5)
    assert [(h.file, h.start) for h in calibrated] == [(h.file, h.start) for h in raw]  # order kept
    assert [h.score for h in calibrated] == pytest.approx([round(strict(h.score), 4) for h in raw], abs=2e-4)
    assert all(h.score < 0.5 for h in calibrated)

    foreign = Calibration(scorer_name(bundle.name, "some-reranker"), {"text": strict})
    untouched = Archive.open(tmp_path / "index", replace(bundle, calibrations={foreign.scorer: foreign})).search("apple", top=5)
    assert [h.score for h in untouched] == [h.score for h in raw]

    both = {own.scorer: own, foreign.scorer: foreign}  # as load_models keeps every scorer's entry
    chosen = Archive.open(tmp_path / "index", replace(bundle, calibrations=both)).search("apple", top=5)
    assert [h.score for h in chosen] == [h.score for h in calibrated]
