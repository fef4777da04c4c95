"""Multi-label metrics as the paper reports them, on plain arrays.

Conventions (shared by evaluation, calibration and the tables):

- ``scores``: float ``N × C`` probabilities; ``positive``: bool ``N × C``; ``mask``: bool
  ``N × C``, False for lesion-label pairs left out (text-mined uncertain pairs).
- A label is *evaluable* when its kept pairs hold at least one positive and one negative;
  per-class averages use evaluable labels only, as in the paper.
- A decision is ``score >= threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ThresholdChoice:
    """The best-F1 threshold of one label on a calibration set."""

    threshold: float
    f1: float
    calibrated: bool  # False when the set has no positive (threshold falls back to the default)


def best_f1_threshold(scores: np.ndarray, positive: np.ndarray) -> ThresholdChoice:
    """Exact best-F1 threshold of one label, searched over every distinct score.

    Sorting the scores once makes every cut "top k lesions are positive" one cumulative
    sum away, so all N candidate thresholds are scored in O(N log N). The threshold is
    placed half-way between the lowest accepted and the highest rejected score, so that
    test scores near a boundary are not decided by float rounding alone.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and positives {positive.shape} differ in shape")
    n_pos = int(positive.sum())
    if scores.size == 0 or n_pos == 0:
        return ThresholdChoice(DEFAULT_THRESHOLD, 0.0, False)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    true_pos = np.cumsum(positive[order])
    n_accepted = np.arange(1, scores.size + 1)
    # Only a cut after the last of a run of equal scores is reachable with `>=`.
    cut_ok = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    f1 = np.where(cut_ok, 2.0 * true_pos / (n_accepted + n_pos), -1.0)
    best = int(np.argmax(f1))  # first maximum = the highest threshold among ties
    if best + 1 < scores.size:
        threshold = 0.5 * (sorted_scores[best] + sorted_scores[best + 1])
    else:
        threshold = float(sorted_scores[best])
    return ThresholdChoice(float(threshold), float(f1[best]), True)


def calibrate_thresholds(
    scores: np.ndarray, positive: np.ndarray, mask: np.ndarray | None = None
) -> list[ThresholdChoice]:
    """Per-label best-F1 thresholds over the kept (``mask``) pairs."""
    scores, positive, mask = _check_arrays(scores, positive, mask)
    return [best_f1_threshold(scores[mask[:, c], c], positive[mask[:, c], c]) for c in range(scores.shape[1])]


def decide_thresholds(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Decisions ``score >= threshold`` per label."""
    return np.asarray(scores, dtype=np.float64) >= np.asarray(thresholds, dtype=np.float64)[None, :]


def decide_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """The K highest-scoring labels of each lesion are decided positive (ranking mode)."""
    scores = np.asarray(scores)
    if k < 1:
        raise ValueError(f"top-K needs K >= 1, got {k}")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    decisions = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(decisions, top, True, axis=1)
    return decisions


def filter_exclusive(scores: np.ndarray, decisions: np.ndarray, exclusive: np.ndarray) -> np.ndarray:
    """Drop decided labels that are exclusive with a higher-scoring decided label.

    Greedy per lesion in descending score: a label is kept when no label kept before it
    is exclusive with it (for a single pair this keeps the higher-scoring one).
    """
    exclusive = np.asarray(exclusive, dtype=bool)
    kept = np.zeros_like(decisions, dtype=bool)
    for i in range(decisions.shape[0]):
        chosen = np.flatnonzero(decisions[i])
        chosen = chosen[np.argsort(-scores[i, chosen], kind="stable")]
        blocked = np.zeros(decisions.shape[1], dtype=bool)
        for c in chosen:
            if not blocked[c]:
                kept[i, c] = True
                blocked |= exclusive[c]
    return kept


@dataclass(frozen=True)
class LabelMetrics:
    """Per-label arrays (length C); NaN where a value is undefined (AUC of a one-class label)."""

    n_pos: np.ndarray
    n_neg: np.ndarray
    auc: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def evaluable(self) -> np.ndarray:
        """Labels with at least one positive and one negative kept pair."""
        return (self.n_pos > 0) & (self.n_neg > 0)


def label_metrics(
    scores: np.ndarray, positive: np.ndarray, decisions: np.ndarray, mask: np.ndarray | None = None
) -> LabelMetrics:
    """AUC, precision, recall and F1 of every label over its kept pairs.

    Precision of a label that is never decided is 0 (scikit-learn's ``zero_division=0``).
    """
    scores, positive, mask = _check_arrays(scores, positive, mask)
    decisions = np.asarray(decisions, dtype=bool)
    if decisions.shape != scores.shape:
        raise ValueError(f"decisions {decisions.shape} and scores {scores.shape} differ in shape")
    pos = positive & mask
    neg = ~positive & mask
    tp = (decisions & pos).sum(0)
    fp = (decisions & neg).sum(0)
    fn = (~decisions & pos).sum(0)
    n_pos, n_neg = pos.sum(0), neg.sum(0)
    from sklearn.metrics import roc_auc_score  # here: predict needs no sklearn (start-up time)

    auc = np.full(scores.shape[1], np.nan)
    for c in np.flatnonzero((n_pos > 0) & (n_neg > 0)):
        keep = mask[:, c]
        auc[c] = roc_auc_score(positive[keep, c], scores[keep, c])
    precision = _safe_div(tp, tp + fp)
    recall = np.where(n_pos > 0, _safe_div(tp, n_pos), np.nan)
    f1 = np.where(n_pos > 0, _safe_div(2 * tp, 2 * tp + fp + fn), np.nan)
    return LabelMetrics(n_pos, n_neg, auc, precision, recall, f1, tp, fp, fn)


@dataclass(frozen=True)
class Averages:
    """Per-class means over evaluable labels, overall (micro) P/R/F1, frequency-weighted AUC."""

    n_labels: int
    auc: float
    precision: float
    recall: float
    f1: float
    micro_precision: float
    micro_recall: float
    micro_f1: float
    weighted_auc: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def average_metrics(metrics: LabelMetrics, labels: np.ndarray | None = None) -> Averages:
    """Averages over the evaluable labels among ``labels`` (a bool mask or index array; default all).

    The frequency-weighted AUC weighs each label by its number of positive pairs.
    """
    chosen = np.zeros(metrics.n_pos.shape, dtype=bool)
    if labels is None:
        chosen[:] = True
    else:
        chosen[np.asarray(labels)] = True
    use = chosen & metrics.evaluable
    n = int(use.sum())
    if n == 0:
        nan = float("nan")
        return Averages(0, nan, nan, nan, nan, nan, nan, nan, nan)
    tp, fp, fn = (int(a[use].sum()) for a in (metrics.tp, metrics.fp, metrics.fn))
    micro_p = float(_safe_div(np.array(tp), np.array(tp + fp)))
    micro_r = float(_safe_div(np.array(tp), np.array(tp + fn)))
    micro_f1 = float(_safe_div(np.array(2 * tp), np.array(2 * tp + fp + fn)))
    weights = metrics.n_pos[use].astype(np.float64)
    return Averages(
        n_labels=n,
        auc=float(np.mean(metrics.auc[use])),
        precision=float(np.mean(metrics.precision[use])),
        recall=float(np.mean(metrics.recall[use])),
        f1=float(np.mean(metrics.f1[use])),
        micro_precision=micro_p,
        micro_recall=micro_r,
        micro_f1=micro_f1,
        weighted_auc=float(np.sum(metrics.auc[use] * weights) / weights.sum()),
    )


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _check_arrays(
    scores: np.ndarray, positive: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    if scores.ndim != 2 or positive.shape != scores.shape:
        raise ValueError(f"scores {scores.shape} and positives {positive.shape} must be the same N × C")
    mask = np.ones(scores.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != scores.shape:
        raise ValueError(f"mask {mask.shape} and scores {scores.shape} differ in shape")
    return scores, positive, mask
