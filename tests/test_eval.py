"""Evaluation on arrays: truth building, breakdowns, tables and the thresholds file."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from vision.evaluation.evaluate import (
    complete_truth,
    evaluate_scores,
    mined_truth,
    read_truth_file,
    table1_csv,
    table1_markdown,
)
from vision.metrics.multilabel import calibrate_thresholds
from vision.metrics.thresholds import EvaluationError, read_thresholds, thresholds_document

TERMS = ["abdomen", "kidney", "cyst", "kidney cyst", "liver", "lung"]


def test_mined_truth_expands_relevant_and_leaves_uncertain_out(shipped_ontology) -> None:
    records = [{"relevant": ["kidney cyst"], "uncertain": ["liver"]}, {"relevant": ["lung"], "uncertain": []}]
    truth = mined_truth(records, TERMS, shipped_ontology)
    assert truth.positive[0].tolist() == [True, True, True, True, False, False]
    assert truth.mask[0].tolist() == [True, True, True, True, False, True]  # liver uncertain
    assert truth.positive[1].tolist() == [False] * 5 + [True]
    assert truth.mask[1].all()


def test_complete_truth_reports_unknown_names(shipped_ontology) -> None:
    truth = complete_truth([["kidney", "abdomen"], ["no such thing", "lung"]], TERMS, shipped_ontology)
    assert truth.positive[0, :2].tolist() == [True, True]
    assert truth.positive[1, 5]
    assert truth.mask.all()
    assert truth.unknown_labels == ("no such thing",)


def _result(shipped_ontology, **kwargs):
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1, 0.2], [0.7, 0.2, 0.6, 0.1, 0.8, 0.1], [0.2, 0.1, 0.1, 0.1, 0.2, 0.9]])
    truth = complete_truth([["kidney cyst"], ["liver"], ["lung"]], TERMS, shipped_ontology)
    return evaluate_scores(
        "hand (complete truth)",
        scores,
        truth,
        TERMS,
        [shipped_ontology.category(t) for t in TERMS],
        np.array([2000, 500, 500, 50, 1500, 3000]),
        run={"run_dir": "r"},
        **kwargs,
    )


def test_breakdowns_and_renderings(shipped_ontology) -> None:
    result = _result(shipped_ontology, exclusive=np.zeros((6, 6), dtype=bool))
    assert result.averages.n_labels == 6
    n_types = sum(shipped_ontology.category(t) == "type" for t in TERMS)
    assert result.by_category["type"].n_labels == n_types
    # abdomen (0.7 on a liver lesion) is a true positive after expansion; cyst 0.6 on it a false one
    assert result.metrics.fp[TERMS.index("cyst")] == 1
    assert result.metrics.tp[TERMS.index("abdomen")] == 2
    assert result.by_frequency["> 1000"].n_labels == 3
    assert result.by_frequency["<= 100"].n_labels == 1
    assert result.exclusive_filtered is not None
    md = result.to_markdown(sort="train_positives")
    assert "| kidney cyst | bodypart |" in md or "| kidney cyst |" in md
    assert "train positives > 1000" in md and "category: type" in md
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [r["label"] for r in rows] == TERMS and rows[0]["set"] == "hand (complete truth)"
    payload = json.loads(result.to_json())
    assert payload["averages"]["n_labels"] == 6 and len(payload["labels"]) == 6
    top1 = _result(shipped_ontology, top_k=1)
    assert "top-1" in top1.decision
    with pytest.raises(EvaluationError, match="cannot sort"):
        result.label_rows("nope")


def test_table1_has_a_column_group_per_set(shipped_ontology) -> None:
    result = _result(shipped_ontology)
    md = table1_markdown({"LesaNet": [result]})
    assert "hand (complete truth) AUC" in md.splitlines()[0]
    rows = list(csv.DictReader(io.StringIO(table1_csv({"LesaNet": [result], "baseline": [result]}))))
    assert [r["method"] for r in rows] == ["LesaNet", "baseline"]


def test_thresholds_file_roundtrip_and_refusals(tmp_path) -> None:
    scores = np.array([[0.9, 0.2], [0.4, 0.7], [0.1, 0.3]])
    positive = np.array([[1, 0], [0, 1], [0, 0]], dtype=bool)
    choices = calibrate_thresholds(scores, positive)
    doc = thresholds_document(["a", "b"], choices, "abc", "val", 3)
    (tmp_path / "thresholds.json").write_text(json.dumps(doc))
    thresholds = read_thresholds(tmp_path, ["a", "b"], "abc")
    assert thresholds is not None
    assert thresholds.tolist() == [c.threshold for c in choices]
    with pytest.raises(EvaluationError, match="another checkpoint"):
        read_thresholds(tmp_path, ["a", "b"], "other")
    with pytest.raises(EvaluationError, match="label list differs"):
        read_thresholds(tmp_path, ["a", "c"], "abc")
    assert read_thresholds(tmp_path / "none", ["a"], "abc") is None


def test_truth_file_errors_name_the_record(tmp_path) -> None:
    good = tmp_path / "truth.json"
    good.write_text(json.dumps([{"lesion_idx": 3, "expanded_terms": ["lung"], "text": "x"}]))
    assert read_truth_file(good) == {3: ["lung"]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"lesion_idx": 3, "expanded_terms": ["lung"]}, {"lesion_idx": "x"}]))
    with pytest.raises(ValueError, match="record 1"):
        read_truth_file(bad)
    broken = tmp_path / "broken.json"
    broken.write_text("[\n{")
    with pytest.raises(ValueError, match=":2: not valid JSON"):
        read_truth_file(broken)


def test_official_hand_labeled_file_reads_as_complete_truth(lesanet_data, shipped_ontology) -> None:
    truth = read_truth_file(lesanet_data / "hand_labeled_dev.json")
    assert len(truth) == 250
    term_list = shipped_ontology.label_set("lesanet171")
    built = complete_truth(list(truth.values()), term_list, shipped_ontology)
    assert built.unknown_labels == ()  # "pericardial" is a synonym of pericardium
    assert built.positive[:, term_list.index("pericardium")].any()
    assert built.positive.shape == (250, 171) and built.positive.sum(1).min() >= 1
