"""Per-lesion training targets from mined labels, through the ontology.

For each lesion: positives are the relevant labels (plus uncertain ones for the paper's
best setting "RU", plus irrelevant ones when the text-mined filter is off, "RUI"),
expanded with ancestors and inferred composites; uncertain labels that are not positive
get loss weight 0; reliable pairs for relational hard example mining (RHEM) are the
positives and their inherited exclusives (labels that cannot co-occur with a positive).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ontology.protocol import OntologyLike
from vision.data.deeplesion import DataError

POSITIVE_MODES = {"R": ("relevant",), "RU": ("relevant", "uncertain"), "RUI": ("relevant", "uncertain", "irrelevant")}


@dataclass(frozen=True)
class LabelTargets:
    """Targets for N lesions × C labels (columns follow ``term_list``)."""

    term_list: tuple[str, ...]
    positive: np.ndarray  # bool N × C
    weight: np.ndarray  # float32 N × C: 0 = ignored (uncertain, not positive)
    reliable: np.ndarray  # bool N × C: positives and their inherited exclusives

    @property
    def reliable_negative(self) -> np.ndarray:
        return self.reliable & ~self.positive


def build_targets(
    records: Sequence[Mapping[str, object]],
    term_list: Sequence[str],
    onto: OntologyLike,
    positives: str = "RU",
    expand: bool = True,
) -> LabelTargets:
    """Targets from records with ``relevant`` / ``uncertain`` / ``irrelevant`` label names.

    Names outside ``term_list`` still take part in expansion (a mined "left kidney" makes
    "kidney" positive) and are then dropped. An unknown name is an error naming the record.
    """
    if positives not in POSITIVE_MODES:
        raise DataError(f"positives={positives!r}: use one of {', '.join(POSITIVE_MODES)}")
    column = {name: j for j, name in enumerate(term_list)}
    unknown_columns = [n for n in term_list if n not in onto.terms]
    if unknown_columns:
        raise DataError(
            f"label list disagrees with the ontology ({onto.source}): unknown {', '.join(unknown_columns[:5])}"
        )
    n, c = len(records), len(term_list)
    positive = np.zeros((n, c), dtype=bool)
    ignored = np.zeros((n, c), dtype=bool)

    def names_of(record: Mapping[str, Any], keys: Sequence[str], i: int) -> set[str]:
        names: set[str] = set()
        for key in keys:
            for name in record.get(key) or ():
                if name not in onto.terms:
                    where = record.get("lesion_idx", i)
                    raise DataError(f"lesion {where}: label {name!r} ({key}) is not in the ontology {onto.source}")
                names.add(str(name))
        return onto.expand(names) if expand and names else names

    for i, record in enumerate(records):
        pos = names_of(record, POSITIVE_MODES[positives], i)
        unsure = names_of(record, ("uncertain",), i) - pos
        positive[i, [column[m] for m in pos if m in column]] = True
        ignored[i, [column[m] for m in unsure if m in column]] = True

    exclusive = onto.exclusive_matrix(list(term_list))
    reliable_negative = (positive.astype(np.uint8) @ exclusive.astype(np.uint8)) > 0
    reliable = (positive | reliable_negative) & ~ignored
    weight = np.where(ignored, 0.0, 1.0).astype(np.float32)
    return LabelTargets(tuple(term_list), positive, weight, reliable)
