"""The records the rooms exchange as files (docs/architecture.md), as types.

On the wire they stay plain JSON objects; these types say what they hold, so the contracts
between textmine, vision and kg are code. ``Mention`` is the one mention value: the
phantom writes gold ones, the miner writes what it found (``textmine.records``), kg
reads them back (with the label's class IRI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

RELATIONS = ("relevant", "uncertain", "irrelevant")


class MentionRecord(TypedDict):
    """One mention in a sentence record: a character span of ``text`` and its label."""

    start: int
    end: int
    text: str
    label: str
    relation: NotRequired[str]  # relevant / uncertain / irrelevant
    iri: NotRequired[str]  # added by `lesanet textmine run`
    cue: NotRequired[str | None]


class SentenceRecord(TypedDict):
    """A line of sentences.jsonl (phantom gold, textmine input and output)."""

    id: str
    lesion_idx: int | None
    text: str
    mentions: list[MentionRecord]
    relevant: list[str]
    uncertain: list[str]
    irrelevant: list[str]
    error: NotRequired[str]


class LabelDecision(TypedDict):
    """One label of a prediction record."""

    label: str
    iri: str
    score: float
    threshold: float
    decision: bool


class PredictionRecord(TypedDict):
    """One predicted lesion (vision predict -> kg)."""

    lesion_id: str
    source: dict[str, Any]
    labels: list[LabelDecision]
    model: dict[str, Any]
    ontology_version: str
    neighbors: NotRequired[list[dict[str, Any]]]


@dataclass(frozen=True)
class Mention:
    """A label mention: ``text[start:end]``, its label, its relation to the bookmarked lesion.

    ``iri`` is the label's ontology class where the producer resolved it (the miner, kg's
    reader); ``cue`` what decided the relation (a ConText phrase, ``model``…), as
    ``lesanet textmine run`` writes it.
    """

    start: int
    end: int
    text: str
    label: str
    relation: str = "relevant"
    iri: str = ""
    cue: str | None = None

    def as_record(self) -> MentionRecord:
        """The JSON object of a sentence record: a resolved mention (``iri`` set) also
        carries ``iri`` and ``cue``, as the miner's output does; a gold one does not. The keys
        keep the order ``lesanet textmine run`` has always written."""
        record: MentionRecord = {"start": self.start, "end": self.end, "text": self.text, "label": self.label}
        if self.iri:
            record["iri"] = self.iri
        record["relation"] = self.relation
        if self.iri:
            record["cue"] = self.cue
        return record
