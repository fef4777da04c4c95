"""Checked, typed views of the JSON records that the kg room reads.

Formats are fixed in docs/architecture.md ("Prediction records", "Mined-sentence
records"). A bad record raises :class:`RecordError` naming the record and the field; the
batch converters in :mod:`kg.rdf` collect those and go on with the rest.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Protocol


class RecordError(ValueError):
    """A record that cannot be converted; the message names the record and the field."""


class TermLike(Protocol):
    name: str
    iri: str


class OntologyLike(Protocol):
    """The part of ``ontology.Ontology`` that kg uses (see docs/architecture.md)."""

    version: str

    @property
    def terms(self) -> Mapping[str, Any]: ...

    def term(self, name_or_iri: str) -> TermLike: ...

    def parents(self, name: str) -> set[str]: ...

    def exclusive(self, name: str) -> set[str]: ...

    def iri(self, name: str) -> str: ...


@dataclass(frozen=True)
class ScoredLabels:
    """A record's scored labels, column-wise: 171 per lesion, so no object per label."""

    class_iris: tuple[str, ...]
    scores: tuple[float, ...]
    thresholds: tuple[float, ...]
    decisions: tuple[bool, ...]


@dataclass(frozen=True)
class Neighbor:
    lesion_id: str
    distance: float


@dataclass(frozen=True)
class Prediction:
    lesion_id: str
    dataset: str
    lesion_idx: int | None
    file: str | None
    slice_index: int | None
    box_px: tuple[float, float, float, float] | None
    spacing_mm: tuple[float, ...] | None
    labels: ScoredLabels
    model: Mapping[str, Any]
    ontology_version: str
    neighbors: tuple[Neighbor, ...]


@dataclass(frozen=True)
class Mention:
    start: int
    end: int
    text: str
    label: str
    class_iri: str


@dataclass(frozen=True)
class MinedSentence:
    sentence_id: str
    lesion_idx: int
    text: str
    relations: tuple[tuple[str, str, str], ...]  # (relation, label name, class IRI)
    mentions: tuple[Mention, ...]


RELATIONS = ("relevant", "uncertain", "irrelevant")


def read_json_records(path: str | Path) -> list[Any]:
    """A JSON list or JSONL file as a list of records; errors name the file and line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
        return list(data)
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}:{lineno}: not a JSON object ({exc.msg}); expected JSON lines") from exc
    return records


def _number(value: Any, where: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{where} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RecordError(f"{where} must be in [{low}, {high}], got {value!r}")
    return float(value)


def _optional_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"{where} must be an integer, got {value!r}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError(f"{where} must be a non-empty string, got {value!r}")
    return value


class LabelResolver:
    """Label name / synonym / IRI -> (ontology name, class IRI), cached per label."""

    def __init__(self, onto: OntologyLike) -> None:
        self._onto = onto
        self._cache: dict[str, tuple[str, str]] = {}
        self._sequences: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def resolve(self, key: str, where: str) -> tuple[str, str]:
        found = self._cache.get(key)
        if found is None:
            try:
                term = self._onto.term(key)
            except LookupError as exc:
                raise RecordError(f"{where}: {exc}") from exc
            found = (term.name, str(term.iri))
            self._cache[key] = found
        return found

    def class_iris(self, keys: tuple[Any, ...]) -> tuple[str, ...] | None:
        """The class IRIs of a record's label keys, cached per key sequence (records of
        one model list the same labels); None if any key is bad (the caller then finds
        which one)."""
        found = self._sequences.get(keys)
        if found is None:
            if not all(isinstance(k, str) and k for k in keys):
                return None
            try:
                found = tuple(self.resolve(k, "")[1] for k in keys)
            except RecordError:
                return None
            self._sequences[keys] = found
        return found


def _unit_floats(values: tuple[Any, ...]) -> bool:
    # NaN fails the comparison; ints and bools take the checked path (which converts them).
    return all(type(v) is float and 0.0 <= v <= 1.0 for v in values)


def _scored_labels(labels_in: list[Any], resolver: LabelResolver, where: str) -> ScoredLabels:
    """Check a record's labels in bulk (one pass per field); only when that fails, walk
    them one by one to name the first bad item and field."""
    if all(type(item) is dict for item in labels_in):
        keys = tuple([item.get("iri") or item.get("label") for item in labels_in])
        scores = tuple([item.get("score") for item in labels_in])
        thresholds = tuple([item.get("threshold") for item in labels_in])
        decisions = tuple([item.get("decision") for item in labels_in])
        class_iris = resolver.class_iris(keys)
        if (
            class_iris is not None
            and _unit_floats(scores)
            and _unit_floats(thresholds)
            and all(type(d) is bool for d in decisions)
        ):
            return ScoredLabels(class_iris, scores, thresholds, decisions)
    iris, score_list, threshold_list, decision_list = [], [], [], []
    for i, item in enumerate(labels_in):
        at = f"{where}: labels[{i}]"
        if not isinstance(item, Mapping):
            raise RecordError(f"{at} must be an object")
        key = item.get("iri") or item.get("label")
        _name, class_iri = resolver.resolve(_string(key, f"{at}.label"), at)
        decision = item.get("decision")
        if not isinstance(decision, bool):
            raise RecordError(f"{at}.decision must be true or false, got {decision!r}")
        iris.append(class_iri)
        score_list.append(_number(item.get("score"), f"{at}.score", 0.0, 1.0))
        threshold_list.append(_number(item.get("threshold"), f"{at}.threshold", 0.0, 1.0))
        decision_list.append(decision)
    return ScoredLabels(tuple(iris), tuple(score_list), tuple(threshold_list), tuple(decision_list))


def parse_prediction(record: Any, resolver: LabelResolver, where: str) -> Prediction:
    """Check one prediction record; ``where`` prefixes every error (e.g. ``record 3``)."""
    if not isinstance(record, Mapping):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    lesion_id = _string(record.get("lesion_id"), f"{where}: lesion_id")
    where = f"{where} ({lesion_id})"
    source = record.get("source") or {}
    if not isinstance(source, Mapping):
        raise RecordError(f"{where}: source must be an object")
    dataset = _string(source.get("dataset", "deeplesion"), f"{where}: source.dataset")
    box = source.get("box_px")
    box_px = None
    if box is not None:
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise RecordError(f"{where}: source.box_px must be [x1, y1, x2, y2], got {box!r}")
        x1, y1, x2, y2 = (_number(v, f"{where}: source.box_px", 0) for v in box)
        if x2 < x1 or y2 < y1:
            raise RecordError(f"{where}: source.box_px has x2 < x1 or y2 < y1: {box!r}")
        box_px = (x1, y1, x2, y2)
    spacing = source.get("spacing_mm")
    spacing_mm = None
    if spacing is not None:
        if not isinstance(spacing, (list, tuple)) or len(spacing) not in (2, 3):
            raise RecordError(f"{where}: source.spacing_mm must be [x, y] or [x, y, z] in mm, got {spacing!r}")
        spacing_mm = tuple(_number(v, f"{where}: source.spacing_mm", 0) for v in spacing)
    file = source.get("file")
    if file is not None:
        file = _string(file, f"{where}: source.file")
    labels_in = record.get("labels")
    if not isinstance(labels_in, list):
        raise RecordError(f"{where}: labels must be a list")
    labels = _scored_labels(labels_in, resolver, where)
    model = record.get("model")
    if not isinstance(model, Mapping) or not model.get("name"):
        raise RecordError(f"{where}: model must be an object with at least a name")
    neighbors = []
    for i, item in enumerate(record.get("neighbors") or []):
        at = f"{where}: neighbors[{i}]"
        if not isinstance(item, Mapping):
            raise RecordError(f"{at} must be an object")
        neighbors.append(
            Neighbor(_string(item.get("lesion_id"), f"{at}.lesion_id"), _number(item.get("distance"), f"{at}.distance", 0))
        )
    return Prediction(
        lesion_id=lesion_id,
        dataset=dataset,
        lesion_idx=_optional_int(source.get("lesion_idx"), f"{where}: source.lesion_idx"),
        file=file,
        slice_index=_optional_int(source.get("slice"), f"{where}: source.slice"),
        box_px=box_px,
        spacing_mm=spacing_mm,
        labels=labels,
        model=dict(model),
        ontology_version=_string(record.get("ontology_version"), f"{where}: ontology_version"),
        neighbors=tuple(neighbors),
    )


def parse_sentence(record: Any, resolver: LabelResolver, where: str) -> MinedSentence:
    """Check one mined-sentence record (gold or ``lesanet textmine run`` output)."""
    if not isinstance(record, Mapping):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if record.get("error"):
        raise RecordError(f"{where}: the miner marked this record as bad: {record['error']}")
    lesion_idx = _optional_int(record.get("lesion_idx"), f"{where}: lesion_idx")
    if lesion_idx is None:
        raise RecordError(f"{where}: lesion_idx is missing")
    sentence_id = str(record.get("id", lesion_idx))
    where = f"{where} (sentence {sentence_id})"
    text = record.get("text")
    if not isinstance(text, str):
        raise RecordError(f"{where}: text must be a string")
    relations = []
    for relation in RELATIONS:
        names = record.get(relation) or []
        if not isinstance(names, list):
            raise RecordError(f"{where}: {relation} must be a list of label names")
        for name in dict.fromkeys(names):  # keep order, drop repeats
            resolved = resolver.resolve(_string(name, f"{where}: {relation}"), f"{where}: {relation}")
            relations.append((relation, *resolved))
    mentions = []
    for i, item in enumerate(record.get("mentions") or []):
        at = f"{where}: mentions[{i}]"
        if not isinstance(item, Mapping):
            raise RecordError(f"{at} must be an object")
        start = _optional_int(item.get("start"), f"{at}.start")
        end = _optional_int(item.get("end"), f"{at}.end")
        if start is None or end is None or not 0 <= start <= end <= len(text):
            raise RecordError(f"{at}: start/end must be offsets inside the text, got {start!r}..{end!r}")
        key = item.get("iri") or item.get("label")
        name, class_iri = resolver.resolve(_string(key, f"{at}.label"), at)
        mentions.append(Mention(start, end, text[start:end], name, class_iri))
    return MinedSentence(sentence_id, lesion_idx, text, tuple(relations), tuple(mentions))


def numbered(records: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Records with the ``record N`` prefix used in error messages (N from 1)."""
    for i, record in enumerate(records, start=1):
        yield f"record {i}", record
