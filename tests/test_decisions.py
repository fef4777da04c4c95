"""Decisions with exclusive-label filtering stay free of exclusions after expansion."""

from __future__ import annotations

import itertools

import numpy as np

from vision.metrics.decisions import consistent_decisions


def test_composite_does_not_bring_back_an_exclusion(shipped_ontology):
    onto = shipped_ontology
    term_list = onto.label_set()
    col = {n: i for i, n in enumerate(term_list)}
    probs = np.zeros((1, len(term_list)))
    for name, p in {"lung nodule": 0.95, "lung": 0.9, "nodule": 0.8, "mass": 0.7}.items():
        probs[0, col[name]] = p
    decisions = probs > 0.5
    kept = consistent_decisions(probs, decisions, term_list, onto, onto.exclusive_matrix(term_list))
    names = {term_list[c] for c in np.flatnonzero(kept[0])}
    # "mass" with "lung" would imply "lung mass", exclusive with the higher-scoring "lung nodule"
    assert "mass" not in names and "lung mass" not in names
    assert {"lung nodule", "lung", "nodule", "chest"} <= names
    assert not any(b in onto.exclusive(a) for a, b in itertools.combinations(names, 2))
    assert onto.expand(names) & set(term_list) == names
