"""Property-based tests: arbitrary bytes, text and JSON never crash the reader or the miner."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textmine.pipeline import LabelMiner
from textmine.records import parse_line, read_jsonl

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

words = st.sampled_from(
    [
        "BOOKMARK",
        "OTHER_BMK",
        "no",
        "possibly",
        "or",
        "versus",
        "renal",
        "cyst",
        "mass",
        "left",
        "lower",
        "lobe",
        "nodule",
        ",",
        ";",
        ".",
        "(",
        ")",
        "-",
        "/",
        "2.3",
        "cm",
        "previously",
        "the",
        "medial",
        "to",
        "spleen",
    ]
)
texts = st.one_of(st.text(max_size=200), st.lists(words, max_size=30).map(" ".join))


@pytest.fixture(scope="module")
def miner(shipped_ontology) -> LabelMiner:
    return LabelMiner(shipped_ontology)


@SETTINGS
@given(raw=st.binary(max_size=300))
def test_reader_never_raises(raw):
    record = parse_line(raw, 1)
    assert (record.error is None) == (record.text is not None and bool(record.text.strip()) and record.id is not None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@SETTINGS
@given(
    lines=st.lists(
        st.one_of(
            st.builds(lambda i, t: json.dumps({"id": i, "text": t}), st.integers(), texts),
            st.builds(json.dumps, json_values),
            st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s),
        ),
        max_size=8,
    ),
    expand=st.booleans(),
)
def test_one_output_line_per_input_line(miner, lines, expand):
    stream = io.BytesIO("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
    out = list(miner.mine_records(read_jsonl(stream), expand=expand))
    assert len(out) == len(lines)
    for number, result in enumerate(out, start=1):
        record = result.to_json()
        json.dumps(record)  # always serialisable
        if result.error is not None:
            assert result.line == number
        else:
            text = result.text or ""
            for m in result.mentions:
                assert text[m.start : m.end] == m.text and m.relation in {"relevant", "uncertain", "irrelevant"}
            assert not set(result.relevant) & set(result.uncertain)


@SETTINGS
@given(text=texts)
def test_mining_any_text(miner, text):
    result = miner.mine([text])[0]
    if result.error is None:
        for m in result.mentions:
            assert 0 <= m.start < m.end <= len(text) and m.label in miner.onto.terms
