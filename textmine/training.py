"""Training the relation CNN from annotated sentence JSONL files (``train-relations``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ontology.batch import BadRecords
from ontology.errors import LesanetError
from textmine.pipeline import LabelMiner
from textmine.records import parse_line
from textmine.relcnn import Example, RelationConfig, RelationModel, accuracy, examples_from_record, train


class TrainingDataError(LesanetError, ValueError):
    """No usable training record at all."""


@dataclass
class TrainingData:
    """Examples grouped per sentence (so a held-out split never cuts a sentence)."""

    sentences: list[list[Example]] = field(default_factory=list)
    bad_records: BadRecords = field(default_factory=BadRecords)  # "FILE:LINE: reason", the first N kept
    lines_read: int = 0

    @property
    def examples(self) -> list[Example]:
        return [ex for sentence in self.sentences for ex in sentence]


def read_training_files(miner: LabelMiner, paths: Sequence[str | Path], max_messages: int = 20) -> TrainingData:
    """Annotated JSONL (``text`` + ``mentions`` with start/end/relation); bad lines are reported."""
    data = TrainingData(bad_records=BadRecords(max_messages))
    for path in paths:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue  # a blank line (e.g. at the end) is no record
                data.lines_read += 1
                record = parse_line(raw.rstrip(b"\r\n"), number)
                if record.error is not None or record.text is None:
                    data.bad_records.append(f"{path}:{number}: {record.error}")
                    continue
                pieces, _ = miner.pieces_and_mentions(record.text)
                try:
                    data.sentences.append(examples_from_record(record.extra, pieces))
                except (ValueError, TypeError) as exc:  # a mention of the wrong shape
                    data.bad_records.append(f"{path}:{number}: {exc}")
    return data


@dataclass
class TrainingReport:
    model: RelationModel
    n_train: int
    n_heldout: int
    heldout_accuracy: float | None
    bad_records: BadRecords
    records_read: int = 0
    records_used: int = 0


def train_relations(
    miner: LabelMiner,
    paths: Sequence[str | Path],
    config: RelationConfig | None = None,
    heldout_fraction: float = 0.0,
    max_messages: int = 20,
) -> TrainingReport:
    """Train on ``paths``; optionally hold out a fraction of the sentences for an accuracy figure.

    Bad lines are reported and skipped; :class:`TrainingDataError` when no line is usable."""
    config = config or RelationConfig()
    data = read_training_files(miner, paths, max_messages)
    if not data.sentences:
        shown = "; ".join(data.bad_records[:3])
        raise TrainingDataError(
            f"no usable annotated sentence in {', '.join(map(str, paths))} "
            f"({data.bad_records.total:,} bad lines{': ' + shown if shown else ''})"
        )
    sentences = list(data.sentences)
    random.Random(config.seed).shuffle(sentences)
    n_held = int(round(len(sentences) * heldout_fraction))
    held = [ex for s in sentences[:n_held] for ex in s]
    fit = [ex for s in sentences[n_held:] for ex in s]
    model = train(fit, config, val=held)
    return TrainingReport(
        model,
        len(fit),
        len(held),
        accuracy(model, held) if held else None,
        data.bad_records,
        data.lines_read,
        len(data.sentences),
    )
