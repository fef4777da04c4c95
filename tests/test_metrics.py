"""Metrics against hand-computed values and a brute-force threshold search."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vision.metrics.multilabel import (
    average_metrics,
    best_f1_threshold,
    calibrate_thresholds,
    decide_thresholds,
    decide_top_k,
    filter_exclusive,
    label_metrics,
)

# Three labels, six lesions; label 1 has one uncertain pair (masked), label 2 no positive.
SCORES = np.array(
    [
        [0.9, 0.1, 0.3],
        [0.8, 0.3, 0.2],
        [0.7, 0.6, 0.1],
        [0.6, 0.2, 0.7],
        [0.4, 0.9, 0.2],
        [0.2, 0.55, 0.1],
    ]
)
POSITIVE = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
MASK = np.ones_like(POSITIVE)
MASK[5, 1] = False


def test_label_metrics_match_hand_computed_values() -> None:
    decisions = decide_thresholds(SCORES, np.full(3, 0.5))
    m = label_metrics(SCORES, POSITIVE, decisions, MASK)
    # label 0: positives score 0.9, 0.8, 0.6 vs negatives 0.7, 0.4, 0.2 -> 8 of 9 pairs ordered
    assert m.auc[0] == pytest.approx(8 / 9)
    assert (m.tp[0], m.fp[0], m.fn[0]) == (3, 1, 0)
    assert m.precision[0] == pytest.approx(0.75)
    assert m.recall[0] == pytest.approx(1.0)
    assert m.f1[0] == pytest.approx(6 / 7)
    # label 1: the masked 0.55 false positive does not count
    assert m.auc[1] == pytest.approx(1.0)
    assert (m.tp[1], m.fp[1], m.fn[1]) == (2, 0, 0)
    assert m.f1[1] == pytest.approx(1.0)
    # label 2: no positive -> not evaluable, AUC undefined
    assert list(m.evaluable) == [True, True, False]
    assert np.isnan(m.auc[2])

    avg = average_metrics(m)
    assert avg.n_labels == 2
    assert avg.auc == pytest.approx((8 / 9 + 1) / 2)
    assert avg.precision == pytest.approx(0.875)
    assert avg.recall == pytest.approx(1.0)
    assert avg.f1 == pytest.approx((6 / 7 + 1) / 2)
    assert avg.micro_precision == pytest.approx(5 / 6)
    assert avg.micro_recall == pytest.approx(1.0)
    assert avg.micro_f1 == pytest.approx(10 / 11)
    assert avg.weighted_auc == pytest.approx((3 * 8 / 9 + 2 * 1.0) / 5)
    # a subset of labels averages only those
    assert average_metrics(m, np.array([1])).f1 == pytest.approx(1.0)


def test_best_f1_threshold_hand_example() -> None:
    choice = best_f1_threshold(SCORES[:, 0], POSITIVE[:, 0])
    # top-4 cut (0.9, 0.8, 0.7, 0.6) gives F1 6/7; threshold half-way to the next score 0.4
    assert choice.f1 == pytest.approx(6 / 7)
    assert choice.threshold == pytest.approx(0.5)
    assert choice.calibrated
    no_positive = best_f1_threshold(SCORES[:, 2], POSITIVE[:, 2])
    assert not no_positive.calibrated and no_positive.threshold == 0.5


def test_threshold_with_tied_scores_never_splits_a_tie() -> None:
    scores = np.array([0.8, 0.5, 0.5, 0.5, 0.1])
    positive = np.array([1, 1, 0, 0, 0], dtype=bool)
    choice = best_f1_threshold(scores, positive)
    decided = scores >= choice.threshold
    f1 = 2 * (decided & positive).sum() / (decided.sum() + positive.sum())
    assert f1 == pytest.approx(choice.f1)
    assert choice.f1 == pytest.approx(2 / 3)  # only 0.8 accepted (top-1), F1 = 2/3


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_exact_search_equals_brute_force(pairs: list[tuple[float, bool]]) -> None:
    scores = np.array([p[0] for p in pairs])
    positive = np.array([p[1] for p in pairs])
    choice = best_f1_threshold(scores, positive)
    if not positive.any():
        assert not choice.calibrated
        return
    best = 0.0
    for t in np.unique(scores):
        decided = scores >= t
        best = max(best, 2 * (decided & positive).sum() / (decided.sum() + positive.sum()))
    assert choice.f1 == pytest.approx(best)
    decided = scores >= choice.threshold
    achieved = 2 * (decided & positive).sum() / (decided.sum() + positive.sum())
    assert achieved == pytest.approx(best)


def test_calibrated_thresholds_beat_fixed_half_on_their_set() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random((200, 5)) < 0.2
    scores = np.clip(0.15 + 0.3 * positive + rng.normal(0, 0.12, positive.shape), 0, 1)
    choices = calibrate_thresholds(scores, positive)
    thresholds = np.array([c.threshold for c in choices])
    calibrated = label_metrics(scores, positive, decide_thresholds(scores, thresholds))
    fixed = label_metrics(scores, positive, decide_thresholds(scores, np.full(5, 0.5)))
    assert np.all(calibrated.f1 >= fixed.f1 - 1e-12)
    assert average_metrics(calibrated).f1 > average_metrics(fixed).f1


def test_top_k_and_exclusive_filter() -> None:
    top2 = decide_top_k(SCORES, 2)
    assert top2.sum(1).tolist() == [2] * 6
    assert top2[0].tolist() == [True, False, True]
    exclusive = np.zeros((3, 3), dtype=bool)
    exclusive[0, 1] = exclusive[1, 0] = True
    decisions = np.ones((1, 3), dtype=bool)
    kept = filter_exclusive(np.array([[0.6, 0.8, 0.3]]), decisions, exclusive)
    assert kept.tolist() == [[False, True, True]]  # label 1 wins over its exclusive label 0
    with pytest.raises(ValueError, match="K >= 1"):
        decide_top_k(SCORES, 0)


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="same N × C"):
        label_metrics(SCORES, POSITIVE[:, :2], POSITIVE)
