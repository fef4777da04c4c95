"""A run's calibrated thresholds (``RUN/thresholds.json``): the document and its reader.

Below both inference (which applies the thresholds) and evaluation (which calibrates them),
so neither imports the other for them. ``EvaluationError`` lives here for the same reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ontology.errors import LesanetError
from ontology.files import read_versioned_json

THRESHOLDS_FILE = "thresholds.json"
THRESHOLDS_FORMAT = "lesanet-thresholds"


class EvaluationError(LesanetError, ValueError):
    """A bad truth file, split or thresholds file (one line)."""


def thresholds_document(
    term_list: Sequence[str], choices: Sequence[Any], checkpoint_sha256: str, split: str, n_lesions: int
) -> dict[str, Any]:
    """The ``thresholds.json`` body: one entry per label in the run's label order."""
    return {
        "format": THRESHOLDS_FORMAT,
        "version": 1,
        "checkpoint_sha256": checkpoint_sha256,
        "calibrated_on": split,
        "n_lesions": n_lesions,
        "rule": "per-label best F1, exact search over sorted scores; decision = score >= threshold",
        "labels": [
            {"label": name, "threshold": c.threshold, "f1": c.f1, "calibrated": c.calibrated}
            for name, c in zip(term_list, choices)
        ],
    }


def read_thresholds(run_dir: str | Path, term_list: Sequence[str], checkpoint_sha256: str) -> np.ndarray | None:
    """The calibrated thresholds of a run in label order, or None when not calibrated yet."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    doc = read_versioned_json(
        path, THRESHOLDS_FORMAT, 1, EvaluationError, "; re-run `lesanet evaluate RUN --calibrate`"
    )
    if doc.get("checkpoint_sha256") != checkpoint_sha256:
        raise EvaluationError(f"{path}: calibrated for another checkpoint; re-run `lesanet evaluate RUN --calibrate`")
    names = [entry.get("label") for entry in doc.get("labels", [])]
    if names != list(term_list):
        raise EvaluationError(
            f"{path}: its label list differs from the run's; re-run `lesanet evaluate RUN --calibrate`"
        )
    return np.array([float(entry["threshold"]) for entry in doc["labels"]])


def thresholds_note(run_dir: str | Path, calibrated: bool) -> str:
    """Which thresholds a run's decisions use, in one line for the reader of its output."""
    path = Path(run_dir) / THRESHOLDS_FILE
    if not calibrated:
        return (
            f"{run_dir} has no {THRESHOLDS_FILE}; deciding at 0.5 for every label "
            "(calibrate with `lesanet evaluate RUN --data CACHE --calibrate`)"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        where = f"calibrated on {doc.get('calibrated_on', '?')} ({doc.get('n_lesions', '?')} lesions)"
    except (OSError, ValueError):
        where = "calibrated"
    return f"thresholds: {path}, per-label, {where}"
