"""Metrics against cases worked out by hand (and against scikit-learn where it has the same metric)."""

import numpy as np
import pytest

from archive_search.errors import EvaluationError
from archive_search.evaluation.metrics import (
    BETA,
    Detection,
    Occurrence,
    absent_term_false_alarms,
    align_term,
    average_precision,
    equal_error_rate,
    maximum_term_weighted_value,
    mean_average_precision,
    mean_precision_at,
    precision_at_k,
    roc_auc,
    roc_curve,
    term_weighted_value,
    twv_curve,
)


def hit(file, start, end, score):
    return Detection(file, start, end, score)


# ----------------------------------------------------------------- binary trials


def test_average_precision_by_hand():
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.6]
    # relevant at ranks 1 and 3: (1/1 + 2/3) / 2
    assert average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    # a third relevant item that was never retrieved lowers the recall base
    assert average_precision(labels, scores, n_positive=3) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision([0, 1], [0.9, 0.1]) == pytest.approx(0.5)
    assert np.isnan(average_precision([0, 0], [0.3, 0.2]))


def test_average_precision_ties_are_accepted_together():
    # two items tied at the top, one relevant: precision 1/2 at recall 1 whatever the order
    assert average_precision([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)


def test_average_precision_and_auc_match_sklearn_on_random_trials():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.normal(size=500) + labels, 1)  # rounding makes many ties
    assert average_precision(labels, scores) == pytest.approx(sklearn_metrics.average_precision_score(labels, scores))
    assert roc_auc(labels, scores) == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores))


def test_precision_at_k():
    labels = [1, 0, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.1, 0.5, 0.4]
    assert precision_at_k(labels, scores, 1) == 1.0
    assert precision_at_k(labels, scores, 3) == pytest.approx(2 / 3)
    assert precision_at_k(labels, scores, 5) == pytest.approx(2 / 5)
    # fewer items than k: the missing ranks count as not relevant
    assert precision_at_k([1, 1], [0.9, 0.8], 5) == pytest.approx(2 / 5)
    with pytest.raises(EvaluationError):
        precision_at_k(labels, scores, 0)


def test_eer_and_auc_by_hand():
    labels = [1, 1, 1, 0, 0, 0]
    scores = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1]
    # at threshold 0.7 one positive of three is missed and one negative of three accepted
    eer = equal_error_rate(labels, scores)
    assert eer.rate == pytest.approx(1 / 3)
    assert eer.threshold == pytest.approx(0.7)
    # positive beats negative in 8 of 9 pairs
    assert roc_auc(labels, scores) == pytest.approx(8 / 9)


def test_eer_interpolates_between_operating_points():
    # one positive, one negative, wrong order: fnr/fpr go (1,0) -> (1,1) -> (0,1); the segment
    # (1,0)-(0,1) is never reached, the crossing is at the second point
    assert equal_error_rate([0, 1], [0.9, 0.1]).rate == pytest.approx(1.0)
    # two positives, two negatives, interleaved: points (fpr, fnr) = (0,1) (0,.5) (.5,.5) ...
    assert equal_error_rate([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]).rate == pytest.approx(0.5)
    # crossing inside a segment: (0, 2/3) -> (1/2, 0) crosses fnr = fpr at 2/7
    labels = [1, 1, 1, 1, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.5, 0.5, 0.5]
    # points: (0, 5/6) (0, 4/6) (0, 3/6) (0, 2/6) then tie group of 2 pos + 2 neg -> (1, 0)
    assert equal_error_rate(labels, scores).rate == pytest.approx((1 / 3) / (1 + 1 / 3))


def test_perfect_separation_has_zero_eer_and_unit_auc():
    labels = [0, 0, 1, 1]
    scores = [0.1, 0.2, 0.8, 0.9]
    assert equal_error_rate(labels, scores).rate == 0.0
    assert roc_auc(labels, scores) == 1.0
    curve = roc_curve(labels, scores)
    assert curve.fpr[0] == 0 and curve.fnr[0] == 1 and curve.fpr[-1] == 1 and curve.fnr[-1] == 0
    assert np.all(np.diff(curve.fpr) >= 0) and np.all(np.diff(curve.fnr) <= 0)


def test_curves_need_both_classes():
    with pytest.raises(EvaluationError):
        equal_error_rate([1, 1], [0.2, 0.3])
    with pytest.raises(EvaluationError):
        roc_auc([1, 0], [0.2])


# ----------------------------------------------------------------- term detection


def two_terms():
    truth = {
        "cat": [Occurrence("a.wav", 1.0, 1.4), Occurrence("b.wav", 5.0, 5.5)],
        "dog": [Occurrence("a.wav", 3.0, 3.3)],
    }
    return truth


def test_perfect_hits_give_twv_one():
    truth = two_terms()
    alignments = [
        align_term(term, [hit(o.file, o.start, o.end, 0.9) for o in occ], occ) for term, occ in truth.items()
    ]
    assert all(a.correct.all() for a in alignments)
    assert term_weighted_value(alignments, speech_seconds=600) == pytest.approx(1.0)
    assert maximum_term_weighted_value(alignments, 600)[0] == pytest.approx(1.0)
    assert mean_average_precision(alignments) == pytest.approx(1.0)


def test_no_hits_give_twv_zero():
    truth = two_terms()
    alignments = [align_term(term, [], occ) for term, occ in truth.items()]
    assert term_weighted_value(alignments, 600) == 0.0
    mtwv, threshold = maximum_term_weighted_value(alignments, 600)
    assert mtwv == 0.0 and threshold == np.inf


def test_one_false_alarm_costs_beta_over_non_target_trials():
    truth = two_terms()
    speech = 600.0
    alignments = [
        align_term("cat", [hit(o.file, o.start, o.end, 0.9) for o in truth["cat"]] + [hit("b.wav", 20, 20.4, 0.5)], truth["cat"]),
        align_term("dog", [hit("a.wav", 3.0, 3.3, 0.8)], truth["dog"]),
    ]
    # "cat" has N_true = 2: its P_FA = 1 / (600 - 2); averaged over K = 2 terms
    expected = 1.0 - BETA / (speech - 2) / 2
    assert term_weighted_value(alignments, speech) == pytest.approx(expected)
    # MTWV drops the false alarm with a threshold above 0.5
    mtwv, threshold = maximum_term_weighted_value(alignments, speech)
    assert mtwv == pytest.approx(1.0) and threshold > 0.5
    assert term_weighted_value(alignments, speech, threshold=0.6) == pytest.approx(1.0)


def test_tolerance_and_each_occurrence_matched_once():
    occurrences = [Occurrence("a.wav", 10.0, 10.4)]
    detections = [
        hit("a.wav", 10.0, 10.4, 0.9),  # exact
        hit("a.wav", 10.3, 10.9, 0.8),  # midpoint 10.6 is within 0.5 s, but the occurrence is taken
        hit("b.wav", 10.0, 10.4, 0.7),  # right time, wrong file
    ]
    alignment = align_term("x", detections, occurrences)
    assert alignment.correct.tolist() == [True, False, False]
    # midpoint 10.85 is 0.45 s after the end: a hit; midpoint 10.95: a miss
    assert align_term("x", [hit("a.wav", 10.6, 11.1, 1.0)], occurrences).correct.tolist() == [True]
    assert align_term("x", [hit("a.wav", 10.7, 11.2, 1.0)], occurrences).correct.tolist() == [False]
    assert align_term("x", [hit("a.wav", 9.4, 9.8, 1.0)], occurrences).correct.tolist() == [True]
    assert align_term("x", [hit("a.wav", 9.0, 9.4, 1.0)], occurrences).correct.tolist() == [False]


def test_two_close_occurrences_each_get_their_nearest_detection():
    occurrences = [Occurrence("a.wav", 1.0, 1.3), Occurrence("a.wav", 1.6, 1.9)]
    detections = [hit("a.wav", 1.6, 1.9, 0.9), hit("a.wav", 1.0, 1.3, 0.8)]
    assert align_term("x", detections, occurrences).correct.tolist() == [True, True]


def test_phrase_spans_are_matched_as_one_occurrence():
    # "new york" spoken 2.0-2.3 + 2.3-2.8: one occurrence 2.0-2.8
    phrase = [Occurrence("a.wav", 2.0, 2.8)]
    good = [hit("a.wav", 1.9, 2.9, 0.9)]
    assert align_term("new york", good, phrase).correct.tolist() == [True]
    # a region over only the first word still has its midpoint inside the phrase span
    assert align_term("new york", [hit("a.wav", 2.0, 2.3, 0.9)], phrase).correct.tolist() == [True]
    # a region 1 s after the phrase ends is a false alarm
    assert align_term("new york", [hit("a.wav", 3.5, 4.0, 0.9)], phrase).correct.tolist() == [False]
    # the same phrase found twice at once counts once
    twice = align_term("new york", [hit("a.wav", 2.0, 2.3, 0.9), hit("a.wav", 2.3, 2.8, 0.8)], phrase)
    assert twice.correct.tolist() == [True, False]
    assert twice.n_true == 1


def test_twv_sweep_miss_rate_and_precision_by_hand():
    occurrences = [Occurrence("a.wav", t, t + 0.4) for t in (10.0, 20.0, 30.0, 40.0)]
    detections = [
        hit("a.wav", 10.0, 10.4, 0.9),
        hit("a.wav", 20.0, 20.4, 0.8),
        hit("a.wav", 50.0, 50.4, 0.7),  # false alarm
        hit("a.wav", 30.0, 30.4, 0.6),
        hit("a.wav", 60.0, 60.4, 0.5),  # false alarm
    ]
    alignment = align_term("x", detections, occurrences)
    speech = 3600.0
    fa_cost = BETA / (speech - 4)
    curve = twv_curve([alignment], speech)
    assert curve.thresholds.tolist() == [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5]
    expected = [0.0, 0.25, 0.5, 0.5 - fa_cost, 0.75 - fa_cost, 0.75 - 2 * fa_cost]
    assert curve.twv == pytest.approx(expected)
    assert curve.mtwv == pytest.approx(0.5) and curve.mtwv_threshold == 0.8
    # ATWV at a threshold between scores accepts the detections above it
    assert term_weighted_value([alignment], speech, threshold=0.65) == pytest.approx(0.5 - fa_cost)
    assert term_weighted_value([alignment], speech, threshold=0.95) == 0.0
    # one term, one hour: at most one false alarm leaves 3 of 4 found
    assert curve.miss_rate_at_fa_per_hour(1.0) == pytest.approx(0.25)
    assert curve.miss_rate_at_fa_per_hour(0.5) == pytest.approx(0.5)
    # AP over N_true = 4: (1 + 1 + 3/4) / 4 ; P@5 = 3/5
    assert alignment.average_precision() == pytest.approx((1 + 1 + 3 / 4) / 4)
    assert mean_precision_at([alignment], 5) == pytest.approx(3 / 5)


def test_absent_terms_are_left_out_of_twv_and_counted_as_false_alarms():
    truth = two_terms()
    present = align_term("dog", [hit("a.wav", 3.0, 3.3, 0.8)], truth["dog"])
    absent = align_term("zebra", [hit("a.wav", 7.0, 7.4, 0.6), hit("b.wav", 1.0, 1.4, 0.3)], [])
    assert absent.n_true == 0 and not absent.correct.any()
    assert term_weighted_value([present, absent], 600) == pytest.approx(1.0)
    assert absent_term_false_alarms([present, absent]) == 2
    assert absent_term_false_alarms([present, absent], threshold=0.5) == 1
    assert np.isnan(absent.average_precision())


def test_twv_rejects_bad_durations():
    alignment = align_term("x", [], [Occurrence("a.wav", 0, 1)])
    with pytest.raises(EvaluationError):
        twv_curve([alignment], 0.0)
