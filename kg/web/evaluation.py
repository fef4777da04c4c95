"""Per-label figures shown on label pages: a run's calibrated thresholds and an evaluation.

``--run RUN`` reads ``RUN/thresholds.json`` (per-label threshold and validation F1, written
by ``lesanet evaluate --calibrate``); ``--evaluation FILE`` reads the output of
``lesanet evaluate --format json`` (per-label AUC, precision, recall, F1, threshold of its
first evaluated set). Both are plain JSON files; a malformed one is an error at start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ontology.errors import LesanetError

THRESHOLDS_FORMAT_FILE = "thresholds.json"
_METRICS = ("auc", "precision", "recall", "f1", "threshold", "test_positives", "train_positives")


class EvaluationError(LesanetError, ValueError):
    """A run or evaluation file that cannot be read; the message names it."""


@dataclass
class LabelFigures:
    """What is known about one label's quality; absent figures are None."""

    calibrated_threshold: float | None = None
    validation_f1: float | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)  # metric -> value
    evaluation_set: str | None = None


@dataclass
class Evaluation:
    run: Path | None = None
    evaluation_file: Path | None = None
    labels: dict[str, LabelFigures] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.run is not None or self.evaluation_file is not None

    def figures(self, name: str) -> LabelFigures | None:
        return self.labels.get(name)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluationError(f"{path}: no such file ({what})") from None
    except (OSError, ValueError) as exc:
        raise EvaluationError(f"{path}: unreadable ({what}): {exc}") from None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def load_evaluation(run: str | Path | None = None, evaluation_file: str | Path | None = None) -> Evaluation:
    result = Evaluation(Path(run) if run else None, Path(evaluation_file) if evaluation_file else None)
    if result.run is not None:
        path = result.run / THRESHOLDS_FORMAT_FILE
        if not result.run.is_dir():
            raise EvaluationError(f"{result.run}: no such run folder (--run)")
        if path.is_file():
            doc = _read_json(path, "calibrated thresholds")
            entries = doc.get("labels") if isinstance(doc, dict) else None
            if not isinstance(entries, list):
                raise EvaluationError(f"{path}: no 'labels' list; re-run `lesanet evaluate RUN --calibrate`")
            for number, entry in enumerate(entries):
                if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
                    raise EvaluationError(f"{path}: labels[{number}] has no label name")
                figures = result.labels.setdefault(entry["label"], LabelFigures())
                figures.calibrated_threshold = _number(entry.get("threshold"))
                figures.validation_f1 = _number(entry.get("f1"))
    if result.evaluation_file is not None:
        path = result.evaluation_file
        doc = _read_json(path, "lesanet evaluate --format json output")
        sets = doc.get("sets") if isinstance(doc, dict) else None
        if (
            not isinstance(sets, list)
            or not sets
            or not isinstance(sets[0], dict)
            or not isinstance(sets[0].get("labels"), list)
        ):
            raise EvaluationError(f"{path}: not `lesanet evaluate --format json` output (no sets[0].labels)")
        first = sets[0]
        set_name = str(first.get("name") or first.get("split") or "evaluation")
        for number, entry in enumerate(first["labels"]):
            if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
                raise EvaluationError(f"{path}: sets[0].labels[{number}] has no label name")
            figures = result.labels.setdefault(entry["label"], LabelFigures())
            figures.evaluation = {k: entry[k] for k in _METRICS if _number(entry.get(k)) is not None}
            figures.evaluation_set = set_name
    return result
