"""Batch jobs behind ``lesanet textmine``: file in, file out, bad records reported."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TextIO

from ontology.batch import BadRecords
from ontology.files import write_lines_atomic
from textmine.pipeline import LabelMiner
from textmine.records import read_jsonl


@dataclass
class RunSummary:
    total: int = 0
    failed: int = 0
    messages: BadRecords = field(default_factory=BadRecords)  # "FILE:LINE: reason", the first N kept

    @property
    def succeeded(self) -> int:
        return self.total - self.failed


def mine_stream(miner: LabelMiner, stream: BinaryIO, source: str, expand: bool, summary: RunSummary) -> Iterator[str]:
    """Output JSON lines for every input line; failures are counted and described in ``summary``."""
    for mined in miner.mine_records(read_jsonl(stream), expand=expand):
        summary.total += 1
        if mined.error is not None:
            summary.failed += 1
            summary.messages.append(f"{source}:{mined.line}: {mined.error}")
        yield json.dumps(mined.to_json(), ensure_ascii=False) + "\n"


def run_file(
    miner: LabelMiner,
    input_path: str,
    output_path: str,
    expand: bool = False,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    max_messages: int = 20,
) -> RunSummary:
    """Mine ``input_path`` (``-`` = stdin) into ``output_path`` (``-`` = stdout, else written atomically).

    Every input line gives one output line; a bad one carries ``error`` and ``line`` and is
    counted in the summary (its first ``max_messages`` messages kept)."""
    summary = RunSummary(messages=BadRecords(max_messages))
    # The lexicon, lemma table and ontology are long-lived: keep them out of the cyclic GC's
    # scans, which otherwise cost ~15% of a batch run (they are never freed before exit anyway).
    gc.freeze()
    source = "<stdin>" if input_path == "-" else input_path
    if input_path == "-":
        handle: BinaryIO = stdin if stdin is not None else sys.stdin.buffer
        lines = mine_stream(miner, handle, source, expand, summary)
        _emit(lines, output_path, stdout)
    else:
        if not Path(input_path).is_file():
            raise FileNotFoundError(f"{input_path}: no such input file (JSONL with id and text per line)")
        with open(input_path, "rb") as handle:
            _emit(mine_stream(miner, handle, source, expand, summary), output_path, stdout)
    return summary


def _emit(lines: Iterator[str], output_path: str, stdout: TextIO | None) -> None:
    if output_path == "-":
        out = stdout if stdout is not None else sys.stdout
        for line in lines:
            out.write(line)
        out.flush()
    else:
        write_lines_atomic(output_path, lines)
