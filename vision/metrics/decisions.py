"""Label decisions that respect the ontology: expansion to ancestors, no exclusive pair.

Thresholding itself is ``vision.metrics.multilabel.decide_thresholds``; these rules turn
its decisions into the ontology-consistent label set a prediction record carries (the
paper's label expansion, and ``predict --exclusive-filter``). Evaluation's filter, which
scores the flat label columns as the paper's tables do, is ``multilabel.filter_exclusive``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ontology.protocol import OntologyLike


def consistent_decisions(
    probs: np.ndarray, decisions: np.ndarray, term_list: Sequence[str], onto: OntologyLike, exclusive: np.ndarray
) -> np.ndarray:
    """Expanded decisions with no exclusive pair: decided labels are taken in descending
    score and one is kept only when the expansion of everything kept so far, with it, is
    still free of exclusions. Filtering before expanding is not enough: ``lung`` and
    ``mass`` imply the composite ``lung mass``, which may clash with a kept ``lung nodule``.
    """
    column = {name: c for c, name in enumerate(term_list)}
    kept = np.zeros_like(decisions, dtype=bool)
    for i in range(decisions.shape[0]):
        chosen = np.flatnonzero(decisions[i])
        names: set[str] = set()
        for c in chosen[np.argsort(-probs[i, chosen], kind="stable")]:
            trial = onto.expand(names | {term_list[c]})
            cols = [column[n] for n in trial if n in column]
            if not exclusive[np.ix_(cols, cols)].any():
                names = trial
        kept[i, [column[n] for n in names if n in column]] = True
    return kept


def expand_decisions(decisions: np.ndarray, term_list: Sequence[str], onto: OntologyLike) -> np.ndarray:
    """Close each lesion's decided labels under the ontology (ancestors, inferred composites)."""
    column = {name: c for c, name in enumerate(term_list)}
    expanded = np.array(decisions, dtype=bool, copy=True)
    for i in range(expanded.shape[0]):
        names = [term_list[c] for c in np.flatnonzero(expanded[i])]
        if names:
            for name in onto.expand(names):
                if name in column:
                    expanded[i, column[name]] = True
    return expanded
