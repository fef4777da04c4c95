"""Input and output records of the miner (format: docs/architecture.md, "Mined-sentence records").

The JSONL reader never raises on a bad line: every input line yields exactly one
:class:`InputRecord`, bad ones with ``error`` set, so a batch reports them and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ontology.batch import RecordError, decode_json_line
from ontology.records import Mention

# Longest accepted input line; a longer one is reported, not processed (a report sentence
# is a few hundred bytes; a megabyte line is a broken export).
MAX_LINE_BYTES = 64 * 1024


@dataclass
class InputRecord:
    """One input line: ``id`` and ``text`` (other keys kept in ``extra``), or an ``error``."""

    line: int
    id: Any
    text: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class MinedSentence:
    """The miner's result for one sentence."""

    id: Any
    text: str | None
    mentions: list[Mention] = field(default_factory=list)
    relevant: list[str] = field(default_factory=list)
    uncertain: list[str] = field(default_factory=list)
    irrelevant: list[str] = field(default_factory=list)
    lesion_idx: int | None = None
    line: int | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id}
        if self.lesion_idx is not None:
            out["lesion_idx"] = self.lesion_idx
        out["text"] = self.text
        out["relevant"] = self.relevant
        out["uncertain"] = self.uncertain
        out["irrelevant"] = self.irrelevant
        out["mentions"] = [m.as_record() for m in self.mentions]
        if self.error is not None:
            out["error"] = self.error
            out["line"] = self.line
        return out


def parse_line(raw: bytes, line: int) -> InputRecord:
    """One JSONL line (bytes, without the newline) -> an :class:`InputRecord`."""
    if len(raw) > MAX_LINE_BYTES:
        return InputRecord(line, None, None, error=f"line is {len(raw)} bytes, over the {MAX_LINE_BYTES}-byte limit")
    if not raw.strip():
        return InputRecord(line, None, None, error="empty line")
    try:
        obj = decode_json_line(raw)
    except RecordError as exc:
        return InputRecord(line, None, None, error=str(exc))
    if not isinstance(obj, dict):
        return InputRecord(line, None, None, error=f"a JSON {type(obj).__name__}, expected an object with id and text")
    rid = obj.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        return InputRecord(line, None, None, obj, error="missing or invalid `id` (a string or integer)")
    text = obj.get("text")
    if not isinstance(text, str):
        return InputRecord(line, rid, None, obj, error="missing `text` (a string)")
    if not text.strip():
        return InputRecord(line, rid, text, obj, error="empty text")
    return InputRecord(line, rid, text, obj)


def read_jsonl(stream: BinaryIO) -> Iterator[InputRecord]:
    """Every line of a binary stream as an :class:`InputRecord` (lines numbered from 1)."""
    for number, raw in enumerate(stream, start=1):
        yield parse_line(raw.rstrip(b"\r\n"), number)


def dumps_jsonl(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    for record in records:
        yield json.dumps(record, ensure_ascii=False) + "\n"
