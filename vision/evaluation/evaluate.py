"""Evaluation as in the paper: calibrated thresholds, Table 1, Table 2, and their breakdowns.

Two kinds of truth:

- *text-mined* (the cache's ``relevant`` / ``uncertain`` labels of a split): positives are
  the relevant labels expanded through the ontology; uncertain lesion-label pairs that
  are not positive are left out of every metric.
- *complete* (``truth`` in the cache index, e.g. the phantom, or a hand-labeled JSON file
  ``[{"lesion_idx", "expanded_terms"}]``): every pair counts.

Thresholds are calibrated per label on the validation split (exact best F1, see
``vision.metrics.multilabel.best_f1_threshold``), saved as ``RUN/thresholds.json`` and applied to
any other split.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ontology.files import write_json_atomic
from ontology.protocol import OntologyLike
from vision.data.cache import PatchCache
from vision.data.deeplesion import read_hand_labeled
from vision.data.labels import build_targets
from vision.engines.infer import Predictor, check_cache_labels, load_predictor, score_selection
from vision.metrics.multilabel import (
    DEFAULT_THRESHOLD,
    Averages,
    LabelMetrics,
    average_metrics,
    decide_thresholds,
    decide_top_k,
    filter_exclusive,
    label_metrics,
)
from vision.metrics.multilabel import (
    calibrate_thresholds as calibrate_label_thresholds,
)
from vision.metrics.thresholds import THRESHOLDS_FILE, EvaluationError, thresholds_document

# The paper's training-frequency groups (number of training positives per label).
FREQUENCY_BINS: tuple[tuple[str, int, float], ...] = (
    ("> 1000", 1001, math.inf),
    ("101-1000", 101, 1000),
    ("<= 100", 0, 100),
)
CATEGORY_ORDER = ("bodypart", "type", "attribute")
# Table 2's columns: one row per label
TABLE2_COLUMNS = (
    "label",
    "category",
    "train_positives",
    "test_positives",
    "auc",
    "precision",
    "recall",
    "f1",
    "threshold",
)


# --------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class Truth:
    """Targets of an evaluation set: ``positive`` and ``mask`` (pairs that count), N × C."""

    kind: str  # "text-mined" | "complete"
    positive: np.ndarray
    mask: np.ndarray
    unknown_labels: tuple[str, ...] = ()  # truth names outside the run's label list (ignored)


def mined_truth(records: Sequence[Mapping[str, Any]], term_list: Sequence[str], onto: OntologyLike) -> Truth:
    """Text-mined truth: relevant labels expanded are positive; uncertain non-positives are left out."""

    targets = build_targets(records, term_list, onto, positives="R", expand=True)
    return Truth("text-mined", np.asarray(targets.positive, dtype=bool), np.asarray(targets.weight) > 0)


def complete_truth(label_sets: Sequence[Iterable[str]], term_list: Sequence[str], onto: OntologyLike) -> Truth:
    """Complete truth: every listed label (expanded) is positive, every other label negative.

    Names are resolved through the ontology (a synonym such as "pericardial" counts as
    its term); names it does not know are reported in ``unknown_labels`` and ignored.
    """
    column = {name: c for c, name in enumerate(term_list)}
    positive = np.zeros((len(label_sets), len(term_list)), dtype=bool)
    unknown: set[str] = set()
    for i, labels in enumerate(label_sets):
        known = set()
        for name in labels:
            try:
                known.add(onto.term(name).name)
            except LookupError:
                unknown.add(name)
        for name in onto.expand(known):
            if name in column:
                positive[i, column[name]] = True
    return Truth("complete", positive, np.ones_like(positive), tuple(sorted(unknown)))


def read_truth_file(path: str | Path) -> dict[int, list[str]]:
    """A hand-labeled file (``[{"lesion_idx": N, "expanded_terms": [...]}, ...]``) by lesion idx."""

    records, _ = read_hand_labeled(path, strict=True)
    return {r.lesion_idx: list(r.expanded_terms) for r in records}


# --------------------------------------------------------------------------- thresholds


# --------------------------------------------------------------------------- result


@dataclass
class EvalResult:
    """Metrics of one run on one evaluation set, with the paper's tables."""

    name: str  # e.g. "test (text-mined)"
    truth_kind: str
    term_list: list[str]
    categories: list[str]
    train_positives: np.ndarray
    thresholds: np.ndarray
    decision: str  # how decisions were made
    n_lesions: int
    metrics: LabelMetrics
    averages: Averages
    by_category: dict[str, Averages]
    by_frequency: dict[str, Averages]
    exclusive_filtered: Averages | None = None
    run: dict[str, Any] = field(default_factory=dict)
    unknown_labels: tuple[str, ...] = ()

    # -- rows

    def label_rows(self, sort: str = "index") -> list[dict[str, Any]]:
        """Table 2: one row per label (evaluable or not), sorted by ``sort``."""
        m = self.metrics
        rows = []
        for c, name in enumerate(self.term_list):
            rows.append(
                {
                    "index": c,
                    "label": name,
                    "category": self.categories[c],
                    "train_positives": int(self.train_positives[c]),
                    "test_positives": int(m.n_pos[c]),
                    "test_negatives": int(m.n_neg[c]),
                    "auc": _num(m.auc[c]),
                    "precision": _num(m.precision[c]) if m.evaluable[c] else None,
                    "recall": _num(m.recall[c]) if m.evaluable[c] else None,
                    "f1": _num(m.f1[c]) if m.evaluable[c] else None,
                    "threshold": float(self.thresholds[c]),
                    "evaluable": bool(m.evaluable[c]),
                }
            )
        if sort != "index":
            if rows and sort not in rows[0]:
                raise EvaluationError(f"cannot sort Table 2 by {sort!r} (columns: {', '.join(rows[0])})")
            descending = sort not in ("label", "category")
            rows.sort(key=lambda r: _sort_key(r[sort], descending))
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "truth": self.truth_kind,
            "decision": self.decision,
            "n_lesions": self.n_lesions,
            "run": self.run,
            "averages": _clean(self.averages.as_dict()),
            "by_category": {k: _clean(v.as_dict()) for k, v in self.by_category.items()},
            "by_frequency": {k: _clean(v.as_dict()) for k, v in self.by_frequency.items()},
            "exclusive_filtered": _clean(self.exclusive_filtered.as_dict()) if self.exclusive_filtered else None,
            "unknown_truth_labels": list(self.unknown_labels),
            "labels": self.label_rows(),
        }

    # -- renderings

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False)

    def to_csv(self, sort: str = "index") -> str:
        """Table 2 as CSV (one row per label)."""
        return _csv(self.label_rows(sort), extra={"set": self.name})

    def to_markdown(self, sort: str = "f1", top: int | None = None) -> str:
        """Averages, breakdowns and Table 2 (``top`` rows, all when None) as Markdown."""
        lines = [f"### {self.name}", ""]
        lines.append(
            f"{self.n_lesions} lesions, {self.averages.n_labels} evaluable labels; decisions: {self.decision}."
        )
        if self.unknown_labels:
            lines.append(f"Truth labels outside the run's label list (ignored): {', '.join(self.unknown_labels)}.")
        lines += ["", breakdown_markdown(self), "", f"Table 2 (per label, sorted by {sort}):", ""]
        rows = self.label_rows(sort)
        rows = rows if top is None else rows[:top]
        lines.append(_markdown(rows, list(TABLE2_COLUMNS)))
        return "\n".join(lines) + "\n"


def breakdown_markdown(result: EvalResult) -> str:
    """Averages overall, by category and by training frequency, one Markdown table."""
    rows = [_average_row("all labels", result.averages)]
    rows += [_average_row(f"category: {k}", v) for k, v in result.by_category.items()]
    rows += [_average_row(f"train positives {k}", v) for k, v in result.by_frequency.items()]
    if result.exclusive_filtered is not None:
        rows.append(_average_row("all labels, exclusive-filtered", result.exclusive_filtered))
    return _markdown(rows, ["group", "labels", "AUC", "P", "R", "F1", "micro P", "micro R", "micro F1", "weighted AUC"])


def results_csv(results: Sequence[EvalResult], sort: str = "index") -> str:
    """Table 2 of several evaluation sets in one CSV (a ``set`` column tells them apart)."""
    rows = [{"set": r.name, **row} for r in results for row in r.label_rows(sort)]
    return _csv(rows)


def table1_rows(results: Mapping[str, Sequence[EvalResult]]) -> list[dict[str, Any]]:
    """Table 1: one row per method, AUC/P/R/F1 (per-class means) for each evaluation set."""
    rows = []
    for method, method_results in results.items():
        row: dict[str, Any] = {"method": method}
        for r in method_results:
            a = r.averages
            for key, value in (("AUC", a.auc), ("P", a.precision), ("R", a.recall), ("F1", a.f1)):
                row[f"{r.name} {key}"] = _num(value)
        rows.append(row)
    return rows


def table1_markdown(results: Mapping[str, Sequence[EvalResult]]) -> str:
    rows = table1_rows(results)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return _markdown(rows, columns)


def table1_csv(results: Mapping[str, Sequence[EvalResult]]) -> str:
    return _csv(table1_rows(results))


# --------------------------------------------------------------------------- arrays -> result


def evaluate_scores(
    name: str,
    scores: np.ndarray,
    truth: Truth,
    term_list: Sequence[str],
    categories: Sequence[str],
    train_positives: np.ndarray,
    thresholds: np.ndarray | None = None,
    top_k: int | None = None,
    exclusive: np.ndarray | None = None,
    run: Mapping[str, Any] | None = None,
    decision_note: str | None = None,
) -> EvalResult:
    """All metrics of one evaluation set from its score matrix.

    ``top_k`` decides the K best labels per lesion instead of thresholds. ``exclusive``
    (a C × C bool matrix) adds averages after exclusive-label filtering, reported separately.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != truth.positive.shape:
        raise EvaluationError(f"scores {scores.shape} and truth {truth.positive.shape} differ in shape")
    if thresholds is None:
        thresholds = np.full(len(term_list), DEFAULT_THRESHOLD)
        decision = decision_note or f"fixed threshold {DEFAULT_THRESHOLD}"
    else:
        decision = decision_note or "calibrated thresholds"
    if top_k is not None:
        decisions = decide_top_k(scores, top_k)
        decision = f"top-{top_k} labels per lesion"
    else:
        decisions = decide_thresholds(scores, thresholds)
    metrics = label_metrics(scores, truth.positive, decisions, truth.mask)
    categories = list(categories)
    cats = np.array(categories)
    by_category = {c: average_metrics(metrics, cats == c) for c in CATEGORY_ORDER if (cats == c).any()}
    by_frequency = {
        label: average_metrics(metrics, (train_positives >= lo) & (train_positives <= hi))
        for label, lo, hi in FREQUENCY_BINS
    }
    filtered = None
    if exclusive is not None:
        kept = filter_exclusive(scores, decisions, exclusive)
        filtered = average_metrics(label_metrics(scores, truth.positive, kept, truth.mask))
    return EvalResult(
        name=name,
        truth_kind=truth.kind,
        term_list=list(term_list),
        categories=categories,
        train_positives=np.asarray(train_positives),
        thresholds=np.asarray(thresholds, dtype=np.float64),
        decision=decision,
        n_lesions=int(scores.shape[0]),
        metrics=metrics,
        averages=average_metrics(metrics),
        by_category=by_category,
        by_frequency=by_frequency,
        exclusive_filtered=filtered,
        run=dict(run or {}),
        unknown_labels=truth.unknown_labels,
    )


def calibrate_on_scores(scores: np.ndarray, truth: Truth) -> list[Any]:
    """Per-label best-F1 thresholds of a validation score matrix (ThresholdChoice list)."""
    return calibrate_label_thresholds(scores, truth.positive, truth.mask)


# --------------------------------------------------------------------------- formatting helpers


def _num(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _clean(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in d.items()}


def _sort_key(value: Any, descending: bool) -> tuple[int, Any]:
    if value is None:
        return (1, 0)
    if isinstance(value, str):
        return (0, value.lower())
    return (0, -value if descending else value)


def _average_row(group: str, a: Averages) -> dict[str, Any]:
    return {
        "group": group,
        "labels": a.n_labels,
        "AUC": _num(a.auc),
        "P": _num(a.precision),
        "R": _num(a.recall),
        "F1": _num(a.f1),
        "micro P": _num(a.micro_precision),
        "micro R": _num(a.micro_recall),
        "micro F1": _num(a.micro_f1),
        "weighted AUC": _num(a.weighted_auc),
    }


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def _csv(rows: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None = None) -> str:
    out = io.StringIO()
    if not rows:
        return ""
    columns = [*(extra or {}), *rows[0].keys()]
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**(extra or {}), **{k: ("" if v is None else v) for k, v in row.items()}})
    return out.getvalue()


# --------------------------------------------------------------------------- runs


def train_positive_counts(
    cache_records: Sequence[Mapping[str, Any]], term_list: Sequence[str], onto: OntologyLike, config: Any
) -> np.ndarray:
    """Training positives per label, counted the way training builds its targets."""

    train = [r for r in cache_records if r.get("split") == "train"]
    if not train:
        return np.zeros(len(term_list), dtype=np.int64)
    targets = build_targets(train, term_list, onto, positives=config.labels.positives, expand=config.labels.expand)
    return np.asarray(targets.positive, dtype=bool).sum(0).astype(np.int64)


SPLIT_TITLES = {"train": "train", "val": "val", "test": "test", "hand": "hand"}


def _selection_and_truth(predictor: Any, cache: str | Path, split: str, truth: str | Path | None):
    """Rows to evaluate and their truth: mined labels for val/test, complete truth for hand."""

    if split not in SPLIT_TITLES:
        raise EvaluationError(f"unknown split {split!r} (val, test, hand)")
    if truth is not None:
        by_idx = read_truth_file(truth)
        everything = PatchCache(cache).select("all")
        rows = np.array(
            [r for r, rec in zip(everything.rows, everything.records) if rec["lesion_idx"] in by_idx], dtype=np.int64
        )
        if rows.size == 0:
            raise EvaluationError(f"{truth}: none of its {len(by_idx)} lesions is in the cache {cache}")
        selection = everything.only(rows)
        check_cache_labels(predictor.term_list, selection)
        sets = [by_idx[rec["lesion_idx"]] for rec in selection.records]
        return selection, complete_truth(sets, predictor.term_list, predictor.onto), "hand (complete truth)"
    selection = PatchCache(cache).select(split)
    check_cache_labels(predictor.term_list, selection)
    if selection.rows.size == 0:
        hint = " (no test lesion has a complete truth; pass --truth FILE)" if split == "hand" else ""
        raise EvaluationError(f"{cache}: split {split!r} has no lesions{hint}")
    if split == "hand":
        sets = [rec["truth"] for rec in selection.records]
        return selection, complete_truth(sets, predictor.term_list, predictor.onto), "hand (complete truth)"
    return selection, mined_truth(selection.records, predictor.term_list, predictor.onto), f"{split} (text-mined)"


def calibrate_thresholds(
    run_dir: str | Path | Any, cache: str | Path, split: str = "val", batch_size: int = 64
) -> dict[str, Any]:
    """Calibrate per-label best-F1 thresholds on ``split`` of ``cache``; writes RUN/thresholds.json."""

    predictor = run_dir if isinstance(run_dir, Predictor) else load_predictor(run_dir)
    selection, truth, _ = _selection_and_truth(predictor, cache, split, None)
    scored = score_selection(predictor.model, selection, batch_size, predictor.device)
    choices = calibrate_on_scores(scored.probs, truth)
    doc = thresholds_document(
        predictor.term_list, choices, predictor.info.checkpoint_sha256, split, int(selection.rows.size)
    )
    write_json_atomic(Path(predictor.info.run_dir) / THRESHOLDS_FILE, doc)
    predictor.thresholds = np.array([c.threshold for c in choices])
    predictor.calibrated = True
    return doc


def evaluate_run(
    run_dir: str | Path | Any,
    cache: str | Path,
    split: str = "test",
    truth: str | Path | None = None,
    decision: str = "calibrated",
    top_k: int | None = None,
    exclusive_filter: bool = False,
    batch_size: int = 64,
) -> EvalResult:
    """Evaluate a run on a cache split (``val``, ``test``, or ``hand`` / ``truth`` = complete truth).

    ``decision``: ``"calibrated"`` (RUN/thresholds.json; calibrated on val first when
    missing), ``"fixed"`` (0.5) or ``"top-k"`` (``top_k`` labels per lesion).
    """

    predictor = run_dir if isinstance(run_dir, Predictor) else load_predictor(run_dir)
    if decision not in ("calibrated", "fixed", "top-k"):
        raise EvaluationError(f"unknown decision mode {decision!r} (calibrated, fixed, top-k)")
    if decision == "top-k" and not top_k:
        raise EvaluationError("decision mode top-k needs top_k >= 1")
    selection, truth_arrays, name = _selection_and_truth(predictor, cache, split, truth)
    thresholds: np.ndarray | None = None
    note = None
    if decision == "calibrated":
        if not predictor.calibrated:
            calibrate_thresholds(predictor, cache, "val", batch_size)
        thresholds = predictor.thresholds
        note = "calibrated thresholds (best F1 on val)"
    scored = score_selection(predictor.model, selection, batch_size, predictor.device)
    term_list = predictor.term_list
    onto = predictor.onto
    info = predictor.info
    everything = selection.cache.records
    return evaluate_scores(
        name,
        scored.probs,
        truth_arrays,
        term_list,
        [onto.category(t) for t in term_list],
        train_positive_counts(everything, term_list, onto, info.config),
        thresholds=thresholds,
        top_k=top_k if decision == "top-k" else None,
        exclusive=onto.exclusive_matrix(term_list) if exclusive_filter else None,
        run={
            "run_dir": str(info.run_dir),
            "config": info.config.name,
            "epoch": info.epoch,
            "checkpoint_sha256": info.checkpoint_sha256,
            "cache": str(cache),
        },
        decision_note=note,
    )


def evaluate_splits(
    predictor: Predictor,
    cache: str | Path,
    split: str,
    truth: str | Path | None = None,
    skipped: Callable[[str, EvaluationError], None] | None = None,
    **options: Any,
) -> list[EvalResult]:
    """:func:`evaluate_run` on one split, or on ``all`` (test, then hand with ``truth``).

    With ``all`` a set that cannot be evaluated (no truth file, no hand-labeled lesions) is
    left out and handed to ``skipped``; a single split raises instead."""
    results = []
    for name in ("test", "hand") if split == "all" else (split,):
        try:
            results.append(evaluate_run(predictor, cache, name, truth if name == "hand" else None, **options))
        except EvaluationError as exc:
            if split != "all":
                raise
            if skipped is not None:
                skipped(name, exc)
    return results


def results_report(
    results: Sequence[EvalResult], method: str, fmt: str = "md", sort: str = "index", top: int | None = None
) -> str:
    """The evaluation's report: ``json`` (Table 1 and every set), ``csv`` (Table 2) or ``md`` (Markdown: Table 1, then each set)."""
    if fmt == "json":
        doc = {"table1": table1_rows({method: results}), "sets": [r.as_dict() for r in results]}
        return json.dumps(doc, indent=2, ensure_ascii=False)
    if fmt == "csv":
        return results_csv(results, sort)
    text = "## Table 1\n\n" + table1_markdown({method: results}) + "\n\n"
    return text + "\n".join(r.to_markdown(sort, top) for r in results)
