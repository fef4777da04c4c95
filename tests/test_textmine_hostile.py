"""Hostile lines never sink `textmine run` / `train-relations`: each is reported with file
and line, the rest is mined, and the exit code follows the one batch rule (0 / 3 / 1)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ontology.batch import EXIT_SOME_FAILED, BadRecords, RecordError, batch_exit_code, decode_json_line
from textmine.records import InputRecord, parse_line

GOOD = json.dumps({"id": "ok", "lesion_idx": 3, "text": "Right renal cyst BOOKMARK."}).encode()

# (line, a piece of the reason): every way a line was seen to sink a batch, and more
HOSTILE = [
    (b'{"id": "s", "text": "cyst \\ud800 BOOKMARK"}', "lone surrogate"),
    (b'{"id": "d", "text": "x", "deep": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "nested too deep"),
    (b'{"id": ' + b"9" * 5_000 + b', "text": "lung nodule BOOKMARK"}', "digits"),
    (b'{"id": "u", "text": "caf\xe9 BOOKMARK"}', "not UTF-8"),
    (b'{"id": "t", "text": "torn', "not JSON"),
    (b"[1, 2, 3]", "a JSON list"),
    (b'{"id": true, "text": "x"}', "invalid `id`"),
    (b'{"id": "n"}', "missing `text`"),
    (b"\x00\x00\x00", "not JSON"),
    (b'{"id": "big", "text": "' + b"a" * 70_000 + b'"}', "byte limit"),
    (b'{"id": "nan", "text": NaN}', "missing `text`"),
]


def test_each_hostile_line_is_one_error_record_and_the_good_lines_are_mined(tmp_path, capsys):
    from cli import main

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join([GOOD, *(line for line, _ in HOSTILE), GOOD]) + b"\n")
    out = tmp_path / "out.jsonl"
    code = main(["textmine", "run", str(src), "-o", str(out)])
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert code == EXIT_SOME_FAILED
    assert len(lines) == len(HOSTILE) + 2  # one output line per input line: no record lost
    assert "kidney cyst" in lines[0]["relevant"] and lines[0]["relevant"] == lines[-1]["relevant"]
    for number, (_, reason) in enumerate(HOSTILE, start=2):
        assert reason in lines[number - 1]["error"] and lines[number - 1]["line"] == number
        assert f"{src}:{number}: " in err
    assert f"{len(HOSTILE)} of {len(HOSTILE) + 2} records failed" in err
    assert "Traceback" not in err
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_messages_are_summarised_after_max_messages(tmp_path, capsys):
    from cli import main

    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD + b"\n" + b"not json\n" * 50)
    code = main(["textmine", "run", str(src), "-o", str(tmp_path / "out.jsonl"), "--max-messages", "5"])
    err = capsys.readouterr().err
    assert code == EXIT_SOME_FAILED
    assert err.count(": not JSON") == 5 and "and 45 more bad records" in err


def test_nothing_mined_is_exit_1(tmp_path, capsys):
    from cli import main

    src = tmp_path / "in.jsonl"
    src.write_bytes(b"not json\n" + HOSTILE[0][0] + b"\n")
    assert main(["textmine", "run", str(src), "-o", str(tmp_path / "out.jsonl")]) == 1
    assert "nothing usable: all 2 records failed" in capsys.readouterr().err


def test_train_relations_skips_hostile_lines(tmp_path, capsys):
    from cli import main

    good = json.dumps(
        {"id": 1, "text": "Liver mass BOOKMARK", "mentions": [{"start": 0, "end": 5, "relation": "relevant"}]}
    )
    src = tmp_path / "train.jsonl"
    src.write_bytes(
        good.encode()
        + b"\n"
        + b"\n".join(line for line, _ in HOSTILE[:4])
        + b"\n"
        + b'{"id": 9, "text": "Liver mass", "mentions": [{"start": [], "end": {}, "relation": []}]}\n'
    )
    code = main(["textmine", "train-relations", str(src), "-o", str(tmp_path / "m.safetensors"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == EXIT_SOME_FAILED and (tmp_path / "m.safetensors").is_file()
    for number in range(2, 7):
        assert f"{src}:{number}: " in err
    assert "Traceback" not in err


def test_train_relations_with_no_usable_line_is_a_clear_error(tmp_path, capsys):
    from cli import main

    src = tmp_path / "train.jsonl"
    src.write_bytes(b"not json\n")
    assert main(["textmine", "train-relations", str(src), "-o", str(tmp_path / "m.safetensors")]) == 1
    assert "no usable annotated sentence" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize(("succeeded", "failed", "code"), [(5, 0, 0), (4, 1, 3), (0, 5, 1), (0, 0, 0)])
def test_the_exit_rule(succeeded, failed, code):
    assert batch_exit_code(succeeded, failed) == code


def test_bad_records_keep_the_first_n():
    bad = BadRecords(keep=2)
    bad.extend(f"line {i}" for i in range(7))
    assert list(bad) == ["line 0", "line 1"] and bad.total == 7 and bad.hidden == 5
    assert bad.lines()[-1] == "... and 5 more bad records (not shown)"


# ---------------------------------------------------------------------------- properties

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_value_or_a_record_error(raw):
    try:
        value = decode_json_line(raw)
    except RecordError as exc:
        assert str(exc)
    else:
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # whatever is accepted can be written back


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_parse_line_never_raises_on_any_bytes(raw):
    record = parse_line(raw, 7)
    assert isinstance(record, InputRecord) and record.line == 7
    assert (record.error is None) == (isinstance(record.text, str) and bool(record.text.strip()))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.integers(min_value=-(10**100), max_value=10**100)), st.text(min_size=1), json_values)
def test_parse_line_keeps_any_good_record(rid, text, extra):
    raw = json.dumps({"id": rid, "text": text, "extra": extra}).encode()
    record = parse_line(raw, 1)
    if text.strip():
        assert record.error is None and record.id == rid and record.text == text
    else:
        assert record.error == "empty text"
