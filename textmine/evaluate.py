"""Scoring the miner against gold labels.

Two gold formats:

* hand-labeled JSON (``hand_labeled_dev.json``): a list of ``{"text", "expanded_terms"}``.
  A prediction is the expansion of the relevant and uncertain labels (the gold lists every
  label that describes the lesion, hedged or not). Micro and macro P/R/F1 over labels;
  macro averages the labels that occur in the gold.
* relation JSONL (``text``, ``relevant``, ``uncertain``, ``irrelevant``; the phantom's
  ``sentences.jsonl`` or hand-annotated sentences): P/R/F1 of the expanded relevant and
  uncertain sets, and a confusion matrix of relations (gold x predicted): per mention (spans
  overlap) when the gold has mentions, else per label.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ontology.protocol import OntologyLike
from textmine.context import RELATIONS
from textmine.errors import TextmineError
from textmine.pipeline import LabelMiner
from textmine.records import InputRecord, parse_line

NONE = "none"


@dataclass
class PRF:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, gold: set[str], pred: set[str]) -> None:
        self.tp += len(gold & pred)
        self.fp += len(pred - gold)
        self.fn += len(gold - pred)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


@dataclass
class LabelScores:
    """Micro and macro scores over labels, with the per-label counts."""

    micro: PRF = field(default_factory=PRF)
    per_label: dict[str, PRF] = field(default_factory=dict)
    n_texts: int = 0
    errors: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, gold: set[str], pred: set[str]) -> None:
        self.n_texts += 1
        self.micro.add(gold, pred)
        for label in gold | pred:
            self.per_label.setdefault(label, PRF()).add(gold & {label}, pred & {label})

    def macro(self) -> dict[str, float]:
        """Mean P/R/F1 over the labels that occur in the gold."""
        rows = [s for s in self.per_label.values() if s.tp + s.fn > 0]
        if not rows:
            return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "labels": 0}
        return {
            "precision": round(sum(s.precision for s in rows) / len(rows), 4),
            "recall": round(sum(s.recall for s in rows) / len(rows), 4),
            "f1": round(sum(s.f1 for s in rows) / len(rows), 4),
            "labels": len(rows),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "texts": self.n_texts,
            "micro": self.micro.as_dict(),
            "macro": self.macro(),
            "per_label": {
                k: v.as_dict() for k, v in sorted(self.per_label.items(), key=lambda kv: -(kv[1].tp + kv[1].fn))
            },
            "errors": self.errors,
        }


def load_hand_labeled(path: str | Path) -> list[dict[str, Any]]:
    """The hand-labeled JSON list; raises ValueError naming the bad item."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TextmineError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, list):
        raise TextmineError(f"{path}: expected a JSON list of {{text, expanded_terms}} objects")
    for i, item in enumerate(data):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("text"), str)
            and isinstance(item.get("expanded_terms"), list)
        ):
            raise TextmineError(f"{path}: item {i} lacks `text` (string) or `expanded_terms` (list)")
    return data


def score_hand_labeled(
    miner: LabelMiner, items: Sequence[dict[str, Any]], label_set: Iterable[str] | None = None
) -> LabelScores:
    """Micro/macro scores of expanded relevant+uncertain labels against ``expanded_terms``.

    ``label_set`` restricts both sides to those labels (e.g. the 171 LesaNet labels).
    """
    allowed = set(label_set) if label_set is not None else None
    records = [InputRecord(i + 1, i, item["text"]) for i, item in enumerate(items)]
    scores = LabelScores()
    for item, mined in zip(items, miner.mine_records(records, expand=True)):
        if mined.error:
            scores.errors.append(f"item {mined.id}: {mined.error}")
        gold = {_canonical(miner.onto, name) for name in item["expanded_terms"]}
        pred = set(mined.relevant) | set(mined.uncertain)
        if allowed is not None:
            gold &= allowed
            pred &= allowed
        scores.add(gold, pred)
        if gold != pred:
            scores.examples.append({"text": item["text"], "missed": sorted(gold - pred), "extra": sorted(pred - gold)})
    return scores


def _canonical(onto: OntologyLike, name: str) -> str:
    """The ontology's rdfs:label for a gold name (the official file writes some synonyms,
    e.g. 'pericardial' for pericardium); unknown names stay as they are and count as misses."""
    if name in onto.terms:
        return name
    try:
        return onto.term(name).name
    except LookupError:
        return name


@dataclass
class RelationScores:
    relevant: PRF = field(default_factory=PRF)
    uncertain: PRF = field(default_factory=PRF)
    confusion: Counter = field(default_factory=Counter)  # (gold relation, predicted relation) per label
    n_texts: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        classes = [*RELATIONS, NONE]
        return {
            "texts": self.n_texts,
            "relevant": self.relevant.as_dict(),
            "uncertain": self.uncertain.as_dict(),
            "confusion": {
                "rows_gold_cols_pred": classes,
                "matrix": [[self.confusion[(g, p)] for p in classes] for g in classes],
            },
            "errors": self.errors,
        }


def read_relation_jsonl(path: str | Path) -> tuple[list[tuple[InputRecord, dict[str, Any]]], list[str]]:
    """Gold relation records; returns (good records with their gold object, bad-line messages)."""
    good, bad = [], []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            record = parse_line(raw.rstrip(b"\r\n"), number)
            if record.error is None:
                missing = [k for k in RELATIONS if not isinstance(record.extra.get(k), list)]
                if missing:
                    record.error = f"gold lacks list(s) {', '.join(missing)}"
            if record.error is not None:
                bad.append(f"{path}:{number}: {record.error}")
            else:
                good.append((record, record.extra))
    return good, bad


def score_relations(miner: LabelMiner, path: str | Path) -> RelationScores:
    """Relevant/uncertain set scores after expansion, plus the per-label relation confusion."""
    good, bad = read_relation_jsonl(path)
    scores = RelationScores(errors=bad)
    mined_all = miner.mine_records([r for r, _ in good], expand=False)
    for (record, gold), mined in zip(good, mined_all):
        if mined.error:
            scores.errors.append(f"{path}:{record.line}: {mined.error}")
            continue
        scores.n_texts += 1
        g_rel = set(gold["relevant"])
        g_unc = set(gold["uncertain"]) - g_rel
        g_irr = set(gold["irrelevant"]) - g_rel - g_unc
        p_rel, p_unc, p_irr = set(mined.relevant), set(mined.uncertain), set(mined.irrelevant)
        g_rel_x = miner.expand(g_rel)
        p_rel_x = miner.expand(p_rel)
        scores.relevant.add(g_rel_x, p_rel_x)
        scores.uncertain.add(miner.expand(g_rel | g_unc) - g_rel_x, miner.expand(p_rel | p_unc) - p_rel_x)
        gold_mentions = gold.get("mentions")
        if isinstance(gold_mentions, list) and gold_mentions:
            _confuse_mentions(scores.confusion, gold_mentions, mined.mentions)
        else:
            for label in g_rel | g_unc | g_irr | p_rel | p_unc | p_irr:
                scores.confusion[
                    (_relation_of(label, g_rel, g_unc, g_irr), _relation_of(label, p_rel, p_unc, p_irr))
                ] += 1
    return scores


def _confuse_mentions(confusion: Counter, gold: list[Any], predicted: Sequence[Any]) -> None:
    """Mention-level confusion: gold and predicted mentions pair up when their spans overlap."""
    used: set[int] = set()
    for g in gold:
        if not (isinstance(g, dict) and isinstance(g.get("start"), int) and isinstance(g.get("end"), int)):
            continue
        overlapping = [k for k, p in enumerate(predicted) if p.start < g["end"] and g["start"] < p.end]
        relation = g.get("relation") if g.get("relation") in RELATIONS else NONE
        if overlapping:
            # the prediction that fits the gold span best speaks for it
            def fit(k: int) -> tuple[int, int]:
                p = predicted[k]
                return min(p.end, g["end"]) - max(p.start, g["start"]), -abs(
                    (p.end - p.start) - (g["end"] - g["start"])
                )

            best = max(overlapping, key=fit)
            confusion[(relation, predicted[best].relation)] += 1
            used.update(overlapping)
        else:
            confusion[(relation, NONE)] += 1
    for k, p in enumerate(predicted):
        if k not in used:
            confusion[(NONE, p.relation)] += 1


def _relation_of(label: str, rel: set[str], unc: set[str], irr: set[str]) -> str:
    if label in rel:
        return "relevant"
    if label in unc:
        return "uncertain"
    if label in irr:
        return "irrelevant"
    return NONE


def detect_gold_format(path: str | Path) -> str:
    """``"hand"`` for a JSON list, ``"relations"`` for JSONL."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith(b"["):
        return "hand"
    if head.startswith(b"{"):
        return "relations"
    raise TextmineError(f"{path}: neither a hand-labeled JSON list nor relation JSONL (one object a line)")


# --------------------------------------------------------------------------- the tables `textmine eval` prints


def hand_labeled_table(result: Mapping[str, Any], label_set: str, top: int) -> str:
    """Micro / macro scores and the per-label table (``top`` rows, 0 = all) of a hand-labeled score."""
    micro, macro = result["micro"], result["macro"]
    lines = [
        f"{result['texts']} texts, expanded relevant+uncertain vs expanded_terms, labels: {label_set}",
        f"micro  P {micro['precision']:.4f}  R {micro['recall']:.4f}  F1 {micro['f1']:.4f}",
        f"macro  P {macro['precision']:.4f}  R {macro['recall']:.4f}  F1 {macro['f1']:.4f}"
        f"  ({macro['labels']} labels in the gold)",
        f"{'label':<32} {'gold':>5} {'P':>6} {'R':>6} {'F1':>6}",
    ]
    rows = list(result["per_label"].items())
    for name, s in rows if top == 0 else rows[:top]:
        lines.append(f"{name:<32} {s['tp'] + s['fn']:>5} {s['precision']:>6.3f} {s['recall']:>6.3f} {s['f1']:>6.3f}")
    return "\n".join(lines) + "\n"


def relations_table(result: Mapping[str, Any]) -> str:
    """Set scores and the relation confusion matrix of a relation-gold score."""
    lines = [f"{result['texts']} sentences, sets after expansion"]
    for key in ("relevant", "uncertain"):
        s = result[key]
        lines.append(f"{key:<10} P {s['precision']:.4f}  R {s['recall']:.4f}  F1 {s['f1']:.4f}")
    classes = result["confusion"]["rows_gold_cols_pred"]
    lines.append("relations (rows gold, columns predicted; per mention when the gold has mentions):")
    lines.append(f"{'':>12}" + "".join(f"{c:>12}" for c in classes))
    for name, row in zip(classes, result["confusion"]["matrix"]):
        lines.append(f"{name:>12}" + "".join(f"{v:>12}" for v in row))
    return "\n".join(lines) + "\n"
