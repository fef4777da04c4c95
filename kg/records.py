"""Checked, typed views of the JSON records that the kg room reads.

Formats are fixed in docs/architecture.md ("Prediction records", "Mined-sentence
records"). A bad record raises :class:`~ontology.batch.RecordError` naming the record and the field; the
batch converters in :mod:`kg.rdf` collect those and go on with the rest.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ontology.batch import ErrorSink, RecordError, check_text, decode_json_line, json_failure
from ontology.protocol import OntologyLike
from ontology.records import Mention


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
class MinedSentence:
    sentence_id: str
    lesion_idx: int
    text: str
    relations: tuple[tuple[str, str, str], ...]  # (relation, label name, class IRI)
    mentions: tuple[Mention, ...]


RELATIONS = ("relevant", "uncertain", "irrelevant")


@dataclass(frozen=True)
class Located:
    """A record with where it came from (``line 12``, ``record 3 (line 40)``)."""

    where: str
    value: Any


MAX_LINE_BYTES = 64 << 20  # a JSON line or array element beyond this is refused, not read
_CHUNK = 1 << 20
NOT_JSON = "not valid JSON"  # kg's word for a line or array that does not parse


def _json_lines(handle: Any, errors: ErrorSink | None) -> Iterator[Located]:
    lineno = 0
    while True:
        raw = handle.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return
        lineno += 1
        where = f"line {lineno}"
        try:
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := handle.readline(_CHUNK)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the over-long line
                raise RecordError(f"{where}: longer than {MAX_LINE_BYTES >> 20} MiB; not read")
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw.strip():
                continue
            yield Located(where, decode_json_line(raw, where, not_json=NOT_JSON))
        except RecordError as exc:
            if errors is None:
                raise
            errors.append(str(exc))


def _skip_value(text: str, pos: int) -> int | None:
    """The end of the (syntactically valid) JSON value at ``pos``, found by matching
    brackets outside strings; None when ``text`` ends first. Used to step over an
    element that parses but cannot be taken (nested too deep, a 5,000-digit number)."""
    depth, in_string, escaped = 0, False, False
    for i in range(pos, len(text)):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth <= 0:
                return i + 1 if depth == 0 else i
        elif depth == 0 and (char == "," or char.isspace()):
            return i
    return None


class _ArrayReader:
    """The elements of a top-level JSON array, one at a time, from a text stream:
    memory is one chunk plus the largest element, not the file."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._buffer = ""
        self._pos = 0
        self._line_base = 1  # line number of _buffer[0]
        self._eof = False
        self._decoder = json.JSONDecoder()

    def _more(self, at_least: int = _CHUNK) -> bool:
        if self._eof:
            return False
        if self._pos > len(self._buffer) // 2:  # drop what was consumed
            self._line_base += self._buffer.count("\n", 0, self._pos)
            self._buffer = self._buffer[self._pos :]
            self._pos = 0
        chunk = self._handle.read(at_least)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def line_at(self, pos: int) -> int:
        return self._line_base + self._buffer.count("\n", 0, pos)

    def _skip_space(self) -> str | None:
        while True:
            while self._pos < len(self._buffer) and self._buffer[self._pos].isspace():
                self._pos += 1
            if self._pos < len(self._buffer):
                return self._buffer[self._pos]
            if not self._more():
                return None

    def items(self, errors: ErrorSink | None) -> Iterator[Located]:
        if self._skip_space() != "[":
            raise RecordError("line 1: expected a JSON array")
        self._pos += 1
        index, need_comma = 0, False
        while True:
            char = self._skip_space()
            if char is None:
                raise RecordError(f"line {self.line_at(self._pos)}: the JSON array is not closed (file truncated?)")
            if char == "]":
                self._pos += 1
                if self._skip_space() is not None:
                    raise RecordError(f"line {self.line_at(self._pos)}: text after the end of the JSON array")
                return
            if need_comma:
                if char != ",":
                    raise RecordError(f"line {self.line_at(self._pos)}: expected ',' or ']' between records")
                self._pos += 1
                need_comma = False
                continue
            index += 1
            where = f"record {index} (line {self.line_at(self._pos)})"
            try:
                value = self._element(where)
            except _Fatal:
                raise
            except RecordError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
                need_comma = True
                continue
            need_comma = True
            yield Located(where, value)

    def _element(self, where: str) -> Any:
        chunk = _CHUNK
        while True:
            start = self._pos
            try:
                value, end = self._decoder.raw_decode(self._buffer, start)
            except json.JSONDecodeError as exc:
                # Text cut at the end of the buffer, not a syntax error: read on.
                cut = exc.pos >= len(self._buffer) - 8 or exc.msg.startswith("Unterminated string")
                if cut and len(self._buffer) - start <= MAX_LINE_BYTES and self._more(chunk):
                    chunk = min(chunk * 2, MAX_LINE_BYTES)
                    continue
                line = self.line_at(exc.pos)
                # A syntax error leaves no way to tell where the next record starts.
                reason = exc.msg.removesuffix(" at")
                raise _Fatal(f"line {line}: {NOT_JSON} ({reason}); the records after it are not read") from exc
            except (RecursionError, ValueError) as exc:
                skipped_to = _skip_value(self._buffer, start)
                if skipped_to is None:
                    if self._more(chunk):
                        chunk = min(chunk * 2, MAX_LINE_BYTES)
                        continue
                    raise _Fatal(f"{where}: {NOT_JSON}; the records after it are not read") from exc
                self._pos = skipped_to
                raise RecordError(f"{where}: {json_failure(exc)}") from exc
            if end == len(self._buffer) and self._more(chunk):
                continue  # a number may go on in the next chunk: decode again with more text
            if end - start > MAX_LINE_BYTES:
                self._pos = end
                raise RecordError(f"{where}: longer than {MAX_LINE_BYTES >> 20} MiB; not read")
            self._pos = end
            check_text(value, self._buffer[start:end], where)
            return value


class _Fatal(RecordError):
    """A JSON array broken so that no further record can be found."""


def iter_json_records(path: str | Path, errors: ErrorSink | None = None) -> Iterator[Located]:
    """Stream the records of a JSON-list or JSON-lines file, each with its line.

    A bad line (torn, not UTF-8, nested too deep…) is reported in ``errors`` (or raised
    when it is None) and the next line is read. In a JSON list, an element that is valid
    JSON but unusable is stepped over; a syntax error ends the file, reported likewise.
    """
    path = Path(path)
    with path.open("rb") as probe:
        head = probe.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"[") and path.suffix.lower() != ".jsonl":  # .jsonl is lines, whatever line 1 holds
        with path.open("r", encoding="utf-8-sig", errors="strict", newline="") as handle:
            try:
                yield from _ArrayReader(handle).items(errors)
            except UnicodeDecodeError as exc:
                _report(errors, f"{path}: not UTF-8 text ({exc.reason}); the records after it are not read")
            except RecordError as exc:
                _report(errors, str(exc))
        return
    with path.open("rb") as handle:
        yield from _json_lines(handle, errors)


def _report(errors: ErrorSink | None, message: str) -> None:
    if errors is None:
        raise RecordError(message)
    errors.append(message)


def read_json_records(path: str | Path) -> list[Any]:
    """A JSON list or JSONL file as a list of records; the first bad record raises
    :class:`RecordError` naming the file and line. (Batch jobs stream with
    :func:`iter_json_records` instead.)"""
    try:
        return [item.value for item in iter_json_records(path)]
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from exc


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
            Neighbor(
                _string(item.get("lesion_id"), f"{at}.lesion_id"), _number(item.get("distance"), f"{at}.distance", 0)
            )
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
        given = item.get("relation")
        mentions.append(Mention(start, end, text[start:end], name, given if isinstance(given, str) else "", class_iri))
    return MinedSentence(sentence_id, lesion_idx, text, tuple(relations), tuple(mentions))


def numbered(records: Iterable[Any]) -> Iterator[tuple[str, Any]]:
    """Records with the prefix used in error messages: a :class:`Located` record's own
    (``line 12``), else ``record N`` (N from 1)."""
    for i, record in enumerate(records, start=1):
        if isinstance(record, Located):
            yield record.where, record.value
        else:
            yield f"record {i}", record
