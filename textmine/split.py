"""Mined sentences -> the official ``text_mined_labels_171_and_split.json`` format.

Several sentences may describe one lesion (same ``lesion_idx``): their labels are merged
(relevant wins over uncertain, both over irrelevant). A lesion's split comes from the
record's ``split`` key, else from a reference split file (e.g. the official one), else
from a seeded random draw with the given fractions. Label ids index ``term_list``; labels
outside it are dropped and counted.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textmine.errors import TextmineError
from textmine.records import parse_line

SPLITS = ("train", "val", "test")


@dataclass
class LesionLabels:
    relevant: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)
    irrelevant: set[str] = field(default_factory=set)
    split: str | None = None


@dataclass
class SplitResult:
    data: dict[str, Any]
    bad_records: list[str]
    dropped_labels: dict[str, int]

    def summary(self) -> str:
        sizes = ", ".join(f"{s} {len(self.data[f'{s}_lesion_idxs'])}" for s in SPLITS)
        dropped = sum(self.dropped_labels.values())
        return f"{sizes} lesions; {len(self.bad_records)} bad records; {dropped} label mentions outside term_list"


def collect_lesions(records: Iterable[tuple[int, dict[str, Any]]]) -> tuple[dict[int, LesionLabels], list[str]]:
    """Merge (line number, record) pairs per ``lesion_idx``; returns lesions and bad-record messages."""
    lesions: dict[int, LesionLabels] = {}
    bad: list[str] = []
    for line, rec in records:
        if rec.get("error"):
            bad.append(f"{line}: skipped, the miner reported: {rec['error']}")
            continue
        idx = rec.get("lesion_idx")
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            bad.append(f"{line}: no `lesion_idx` (a DL_info.csv row number); add it to the input records")
            continue
        lists = {k: rec.get(k, []) for k in ("relevant", "uncertain", "irrelevant")}
        if not all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists.values()):
            bad.append(f"{line}: relevant/uncertain/irrelevant must be lists of label names")
            continue
        split = rec.get("split")
        if split is not None and split not in SPLITS:
            bad.append(f"{line}: split {split!r} is not one of {', '.join(SPLITS)}")
            continue
        lesion = lesions.setdefault(idx, LesionLabels())
        lesion.relevant.update(lists["relevant"])
        lesion.uncertain.update(lists["uncertain"])
        lesion.irrelevant.update(lists["irrelevant"])
        lesion.split = lesion.split or split
    for lesion in lesions.values():
        lesion.uncertain -= lesion.relevant
        lesion.irrelevant -= lesion.relevant | lesion.uncertain
    return lesions, bad


def read_mined_jsonl(path: str | Path) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line, record) pairs of a mined-sentences JSONL file; unreadable lines become error records."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            parsed = parse_line(raw.rstrip(b"\r\n"), number)
            if parsed.error is not None and not parsed.extra:
                yield number, {"error": parsed.error}
            else:
                yield number, dict(parsed.extra)


def reference_splits(path: str | Path) -> dict[int, str]:
    """lesion_idx -> split from an official-format split file."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    out: dict[int, str] = {}
    for split in SPLITS:
        for idx in data.get(f"{split}_lesion_idxs", []):
            out[int(idx)] = split
    return out


def build_split(
    lesions: dict[int, LesionLabels],
    term_list: Sequence[str],
    reference: dict[int, str] | None = None,
    fractions: tuple[float, float, float] = (0.86, 0.07, 0.07),
    seed: int = 0,
    bad_records: Sequence[str] = (),
) -> SplitResult:
    """The official split JSON for ``lesions`` (label ids index ``term_list``)."""
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise TextmineError(f"split fractions {fractions} must be >= 0 and sum to 1")
    index = {name: i for i, name in enumerate(term_list)}
    rng = random.Random(seed)
    dropped: dict[str, int] = {}
    data: dict[str, Any] = {"term_list": list(term_list)}
    for split in SPLITS:
        data[f"{split}_lesion_idxs"] = []
        data[f"{split}_relevant_labels"] = []
        data[f"{split}_uncertain_labels"] = []
    data["train_irrelevant_labels"] = []

    def ids(names: set[str]) -> list[int]:
        out = []
        for name in sorted(names):
            if name in index:
                out.append(index[name])
            else:
                dropped[name] = dropped.get(name, 0) + 1
        return sorted(out)

    for idx in sorted(lesions):
        lesion = lesions[idx]
        chosen = lesion.split or (reference or {}).get(idx)
        split = chosen if chosen is not None else rng.choices(SPLITS, weights=fractions)[0]
        data[f"{split}_lesion_idxs"].append(idx)
        data[f"{split}_relevant_labels"].append(ids(lesion.relevant))
        data[f"{split}_uncertain_labels"].append(ids(lesion.uncertain))
        if split == "train":
            data["train_irrelevant_labels"].append(ids(lesion.irrelevant))
    return SplitResult(data, list(bad_records), dropped)
