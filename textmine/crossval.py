"""k-fold cross-validation of the miner on a hand-labeled gold file, with error classes.

The dev set is cut into ``k`` seeded folds. Each fold is scored as a held-out set, with the
same scoring as ``lesanet textmine eval`` (expanded relevant + uncertain against
``expanded_terms``); the reported figures are the mean of the held-out-fold micro / macro F1
and the pooled held-out counts. The rules have no fitted parameters, so a rule choice is made
by comparing the held-out-fold figures of its alternatives (as ``next_to_organ`` in
``data/derivations.yaml`` was); the training folds' error lists are what rules are designed
from (``training_errors``), never the held-out fold's.

Each wrong label is put in one error class, read off the ontology and the mined mentions:

* extra: ``composite`` (an inferred composite the gold lacks), ``parent`` (an ancestor added
  by expansion the gold lacks), ``mention`` (a label the text was read to say; by category);
* missed: ``more specific`` (the gold has a descendant of a label that was found: the
  specific term was lost to a parent), ``not found`` (by category).
"""

from __future__ import annotations

import random
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from textmine.context import IRRELEVANT
from textmine.errors import TextmineError
from textmine.evaluate import LabelScores, _canonical
from textmine.pipeline import LabelMiner
from textmine.records import InputRecord


def kfold_indices(n: int, k: int, seed: int = 0) -> list[list[int]]:
    """``k`` folds of ``range(n)`` after a seeded shuffle (sizes differ by at most one)."""
    if k < 2 or k > n:
        raise TextmineError(f"--folds must be between 2 and the number of texts ({n}), not {k}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [sorted(order[i::k]) for i in range(k)]


@dataclass
class TextResult:
    text: str
    gold: set[str]
    pred: set[str]
    classes: list[tuple[str, str]]  # (error class, label)


@dataclass
class CVResult:
    folds: list[LabelScores]
    pooled: LabelScores
    whole: LabelScores
    errors: Counter = field(default_factory=Counter)
    per_text: list[TextResult] = field(default_factory=list)
    fold_of: list[int] = field(default_factory=list)

    def mean(self, what: str) -> tuple[float, float]:
        values = [s.micro.f1 if what == "micro" else s.macro()["f1"] for s in self.folds]
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    def training_errors(self, fold: int) -> list[TextResult]:
        """Wrong texts outside ``fold``: what a rule for that fold may be designed from."""
        return [t for t, f in zip(self.per_text, self.fold_of) if f != fold and t.classes]

    def as_dict(self) -> dict[str, Any]:
        micro, micro_sd = self.mean("micro")
        macro, macro_sd = self.mean("macro")
        return {
            "folds": [
                {"texts": s.n_texts, "micro_f1": round(s.micro.f1, 4), "macro_f1": s.macro()["f1"]} for s in self.folds
            ],
            "cv_mean": {
                "micro_f1": round(micro, 4),
                "micro_sd": round(micro_sd, 4),
                "macro_f1": round(macro, 4),
                "macro_sd": round(macro_sd, 4),
            },
            "cv_pooled": {"micro": self.pooled.micro.as_dict(), "macro": self.pooled.macro()},
            "whole": {"micro": self.whole.micro.as_dict(), "macro": self.whole.macro()},
            "error_classes": dict(self.errors.most_common()),
        }

    def report(self, label_set: str, seed: int, examples: int = 0) -> str:
        """The table ``lesanet textmine cv`` prints: folds, CV mean, whole set, error classes
        and the first ``examples`` wrong texts (of every fold but the first)."""
        d = self.as_dict()
        lines = [
            f"{len(self.per_text)} texts, {len(self.folds)} folds (seed {seed}), labels: {label_set}",
            f"{'fold':>4} {'texts':>5} {'micro F1':>9} {'macro F1':>9}",
        ]
        for i, f in enumerate(d["folds"], start=1):
            lines.append(f"{i:>4} {f['texts']:>5} {f['micro_f1']:>9.4f} {f['macro_f1']:>9.4f}")
        m, w = d["cv_mean"], d["whole"]
        lines.append(
            f"CV mean of held-out folds: micro F1 {m['micro_f1']:.4f} ± {m['micro_sd']:.4f}, "
            f"macro F1 {m['macro_f1']:.4f} ± {m['macro_sd']:.4f}"
        )
        lines.append(f"whole set:                 micro F1 {w['micro']['f1']:.4f}, macro F1 {w['macro']['f1']:.4f}")
        lines.append("error classes (wrong labels over all held-out folds):")
        lines += [f"  {count:>4}  {name}" for name, count in d["error_classes"].items()]
        for t in self.training_errors(0)[:examples]:
            lines.append(f"- {t.text!r}: " + "; ".join(f"{c} {label}" for c, label in t.classes))
        return "\n".join(lines) + "\n"


def classify_errors(miner: LabelMiner, mentioned: set[str], gold: set[str], pred: set[str]) -> list[tuple[str, str]]:
    """One error class per wrong label (see the module docstring)."""
    onto = miner.onto
    out = []
    for label in sorted(pred - gold):
        term = onto.terms.get(label)
        category = term.category if term is not None else "?"
        if label in mentioned:
            out.append((f"extra: mention ({category})", label))
        elif (term is not None and term.composite_of) or label in miner.composer.terms:
            out.append(("extra: composite the gold lacks", label))
        else:
            out.append(("extra: parent the gold lacks", label))
    for label in sorted(gold - pred):
        term = onto.terms.get(label)
        if term is None:
            out.append(("missed: not an ontology label", label))
            continue
        if onto.ancestors(label) & mentioned:
            out.append(("missed: more specific than found", label))
        else:
            out.append((f"missed: not found ({term.category})", label))
    return out


def _score_items(
    miner: LabelMiner, items: Sequence[dict[str, Any]], allowed: set[str] | None
) -> tuple[LabelScores, list[TextResult]]:
    records = [InputRecord(i + 1, i, item["text"]) for i, item in enumerate(items)]
    scores, results = LabelScores(), []
    for item, mined in zip(items, miner.mine_records(records, expand=True)):
        if mined.error:
            scores.errors.append(f"item {mined.id}: {mined.error}")
        gold = {_canonical(miner.onto, name) for name in item["expanded_terms"]}
        pred = set(mined.relevant) | set(mined.uncertain)
        mentioned = {m.label for m in mined.mentions if m.relation != IRRELEVANT}
        if allowed is not None:
            gold, pred = gold & allowed, pred & allowed
        scores.add(gold, pred)
        results.append(TextResult(item["text"], gold, pred, classify_errors(miner, mentioned, gold, pred)))
    return scores, results


def cross_validate(
    miner: LabelMiner,
    items: Sequence[dict[str, Any]],
    k: int = 5,
    seed: int = 0,
    label_set: Iterable[str] | None = None,
) -> CVResult:
    """Held-out-fold scores of ``miner`` on ``k`` folds of ``items``, pooled counts and error classes."""
    allowed = set(label_set) if label_set is not None else None
    folds = kfold_indices(len(items), k, seed)
    fold_of = [0] * len(items)
    for f, idx in enumerate(folds):
        for i in idx:
            fold_of[i] = f
    whole, per_text = _score_items(miner, items, allowed)
    fold_scores = []
    for idx in folds:
        s = LabelScores()
        for i in idx:
            s.add(per_text[i].gold, per_text[i].pred)
        fold_scores.append(s)
    errors: Counter = Counter(cls for t in per_text for cls, _ in t.classes)
    return CVResult(fold_scores, whole, whole, errors, per_text, fold_of)
