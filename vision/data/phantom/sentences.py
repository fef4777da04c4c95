"""Report-like bookmarked sentences for phantom lesions, with gold mentions.

Like real reports (the paper's observations), a sentence names only some of the true
labels (a parent instead of the specific body part, attributes left out), hedges some
("possibly", "versus"), negates others ("not calcified"), and sometimes describes
another lesion next to ``OTHER_BMK``. Wording varies through the ontology's synonyms.
Every mention carries its character span, label and relation (relevant / uncertain /
irrelevant), which is gold by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ontology.protocol import OntologyLike
from ontology.records import Mention, SentenceRecord

RELEVANT, UNCERTAIN, IRRELEVANT = "relevant", "uncertain", "irrelevant"
HEDGES = ("possibly", "probably", "likely", "suspicious for", "may represent", "questionable")
# false attributes a report may deny, with the phrase pattern that denies them
NEGATABLE = ("calcified", "cavitary", "spiculated", "enhancing", "lobular", "heterogeneous")
ALTERNATIVES = {
    "cyst": "nodule",
    "nodule": "cyst",
    "mass": "cyst",
    "lung nodule": "ground-glass opacity",
    "lymphadenopathy": "mass",
    "ground-glass opacity": "lung nodule",
    "lung mass": "consolidation",
}


class _Builder:
    """Appends text pieces, recording mention spans."""

    def __init__(self) -> None:
        self.text = ""
        self.mentions: list[Mention] = []

    def add(self, piece: str, label: str | None = None, relation: str = RELEVANT) -> None:
        if self.text and not self.text.endswith(" ") and not piece.startswith((",", ".", " ")):
            self.text += " "
        start = len(self.text)
        self.text += piece
        if label is not None:
            self.mentions.append(Mention(start, len(self.text), piece, label, relation))


def _options(onto: OntologyLike, label: str) -> list[str]:
    """Usable surface forms: the name and its synonyms, minus truncated stems."""
    forms = [label] + [s for s in onto.term(label).synonyms if s]
    forms = list(dict.fromkeys(forms))
    return [
        f
        for f in forms
        if len(f) >= 3 and not any(o != f and o.startswith(f) and not o[len(f)].isspace() for o in forms)
    ]


_ADJECTIVE_ENDINGS = ("ed", "ic", "ing", "al", "ous", "ar", "ense", "ary", "ive")


def phrase(rng: np.random.Generator, onto: OntologyLike, label: str, adjective: bool | None = None) -> str:
    """A surface form of ``label``: an adjective (True), a noun (False) or any (None)."""
    options = _options(onto, label)
    if adjective is not None:
        chosen = [o for o in options if (" " not in o and o.endswith(_ADJECTIVE_ENDINGS)) == adjective]
        options = chosen or options
    options = [o for o in options if not o.endswith(" lesion")] or options
    return str(options[int(rng.integers(len(options)))])


def _noun_phrase(
    b: _Builder, rng: np.random.Generator, onto: OntologyLike, labels: Sequence[str], relation: str, keep: float
) -> list[str]:
    """attributes + body part + type ("lesion" when the type is left out); returns dropped labels."""
    body = [l for l in labels if onto.category(l) == "bodypart"]
    types = [l for l in labels if onto.category(l) == "type"]
    attrs = [l for l in labels if onto.category(l) == "attribute"]
    modifier_types = [t for t in types if t in ("necrosis",)]
    types = [t for t in types if t not in modifier_types]
    dropped: list[str] = []
    for a in attrs + modifier_types:
        if rng.random() < keep:
            b.add(phrase(rng, onto, a, adjective=True), a, relation)
        else:
            dropped.append(a)
    for i, part in enumerate(body):
        if i > 0 and rng.random() > keep:
            dropped.append(part)
            continue
        shown = part
        parents = sorted(p for p in onto.parents(part) if onto.category(p) == "bodypart")
        if i == 0 and parents and rng.random() < 0.3:  # a vaguer body part than the truth
            shown = parents[int(rng.integers(len(parents)))]
            dropped.append(part)
        b.add(phrase(rng, onto, shown), shown, relation)
    for t in types:
        if rng.random() < min(1.0, keep + 0.3):
            b.add(phrase(rng, onto, t, adjective=False), t, relation)
        else:
            dropped.append(t)
            b.add("lesion")
    if not types:
        b.add("lesion")
    return dropped


def make_sentence(
    rng: np.random.Generator,
    onto: OntologyLike,
    labels: Sequence[str],
    other_labels: Sequence[str] | None,
    false_candidates: Sequence[str],
) -> tuple[str, list[Mention]]:
    """One bookmarked sentence for a lesion with specific ``labels``.

    ``other_labels`` describe another lesion on the slice (mentioned beside OTHER_BMK);
    ``false_candidates`` are labels that are false for this lesion (may be negated).
    """
    b = _Builder()
    types = [l for l in labels if onto.category(l) == "type"]
    hedge = rng.random() < 0.22 and types
    main_labels = [l for l in labels if not (hedge and l == types[0])]
    _noun_phrase(b, rng, onto, main_labels, RELEVANT, keep=0.5)
    b.add("BOOKMARK")
    if hedge:
        t = types[0]
        b.add(",")
        if rng.random() < 0.35 and t in ALTERNATIVES:
            b.add(phrase(rng, onto, t, adjective=False), t, UNCERTAIN)
            b.add("versus")
            alt = ALTERNATIVES[t]
            b.add(phrase(rng, onto, alt, adjective=False), alt, UNCERTAIN)
        else:
            b.add(HEDGES[int(rng.integers(len(HEDGES)))])
            b.add(phrase(rng, onto, t, adjective=False), t, UNCERTAIN)
    negatable = [n for n in NEGATABLE if n in false_candidates]
    if negatable and rng.random() < 0.18:
        n = negatable[int(rng.integers(len(negatable)))]
        b.add(",")
        b.add("not")
        b.add(phrase(rng, onto, n, adjective=True), n, IRRELEVANT)
    if other_labels and rng.random() < 0.3:
        b.add(", and")
        _noun_phrase(b, rng, onto, other_labels, IRRELEVANT, keep=0.5)
        b.add("OTHER_BMK")
    b.add(".")
    text = b.text[0].upper() + b.text[1:]
    return text, [Mention(m.start, m.end, text[m.start : m.end], m.label, m.relation) for m in b.mentions]


def sentence_record(lesion_idx: int, text: str, mentions: Sequence[Mention]) -> SentenceRecord:
    """The sentences.jsonl record of docs/architecture.md."""

    def names(relation: str) -> list[str]:
        return list(dict.fromkeys(m.label for m in mentions if m.relation == relation))

    return {
        "id": str(lesion_idx),
        "lesion_idx": lesion_idx,
        "text": text,
        "mentions": [m.as_record() for m in mentions],
        "relevant": names(RELEVANT),
        "uncertain": names(UNCERTAIN),
        "irrelevant": names(IRRELEVANT),
    }
