"""``kg load`` on hostile files: streamed JSON records, every bad line named and skipped,
the documented exit rule, and no good record lost."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_kg import lesanet, make_predictions

import kg.records
from kg.backend import classify_json
from kg.records import iter_json_records
from kg.store import LesionStore
from ontology.batch import BadRecords, RecordError

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_RECORDS = st.dictionaries(st.text(max_size=8), _VALUES, min_size=1, max_size=5)

# Ways a line goes bad; each must be reported with its line number, never parsed.
_CORRUPTIONS = {
    "torn": lambda line: line[: max(1, len(line) // 2)].encode("utf-8"),  # a proper prefix of an object
    "not-utf8": lambda line: b"\xff\xfe" + line.encode("utf-8"),
    "surrogate": lambda line: b'{"id": "\\ud800"}',
    "deep": lambda line: b"[" * 20_000 + b"]" * 20_000,
    "long-number": lambda line: b'{"id": ' + b"7" * 5000 + b"}",
}


@settings(max_examples=120, deadline=None)
@given(
    records=st.lists(_RECORDS, min_size=1, max_size=25),
    corrupt=st.lists(st.tuples(st.integers(0, 24), st.sampled_from(sorted(_CORRUPTIONS))), max_size=6),
)
def test_jsonl_bad_lines_are_named_and_the_rest_is_read(tmp_path_factory, records, corrupt):
    lines = [json.dumps(r).encode("utf-8") for r in records]
    bad = {}
    for index, how in corrupt:
        if index < len(lines):
            lines[index] = _CORRUPTIONS[how](json.dumps(records[index]))
            bad[index + 1] = how
    path = tmp_path_factory.mktemp("jsonl") / "records.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    errors: list[str] = []
    got = list(iter_json_records(path, errors))
    good = [(f"line {i + 1}", r) for i, r in enumerate(records) if i + 1 not in bad]
    assert [(g.where, g.value) for g in got] == good  # no good record lost
    assert [int(e.split(":")[0].removeprefix("line ")) for e in errors] == sorted(bad)


@settings(max_examples=120, deadline=None)
@given(records=st.lists(_RECORDS, max_size=20), indent=st.sampled_from([None, 0, 2]), chunk=st.integers(1, 64))
def test_json_lists_stream_to_the_same_records_as_json_loads(tmp_path_factory, records, indent, chunk):
    path = tmp_path_factory.mktemp("json") / "records.json"
    path.write_text(json.dumps(records, indent=indent), encoding="utf-8")
    with mock.patch.object(kg.records, "_CHUNK", chunk):  # records and numbers cut across reads
        errors: list[str] = []
        got = [item.value for item in iter_json_records(path, errors)]
    assert got == json.loads(path.read_text()) and errors == []


def test_json_list_steps_over_unusable_elements_and_stops_at_a_syntax_error(tmp_path):
    good = [{"i": i} for i in range(6)]
    text = (
        "[\n"
        + ",\n".join(
            [
                json.dumps(good[0]),
                "[" * 20_000 + "]" * 20_000,
                json.dumps(good[1]),
                '{"i": ' + "9" * 5000 + "}",
                *map(json.dumps, good[2:]),
            ]
        )
        + "\n]\n"
    )
    path = tmp_path / "records.json"
    path.write_text(text)
    errors: list[str] = []
    got = list(iter_json_records(path, errors))
    assert [g.value for g in got] == good
    assert errors == [
        "record 2 (line 3): JSON nested too deep",
        "record 4 (line 5): a number of more than 4,300 digits",
    ]
    path.write_text(text.replace('{"i": 4}', '{"i": 4,,}'))
    errors = []
    got = list(iter_json_records(path, errors))
    assert [g.value for g in got] == good[:4]
    assert errors[-1].startswith("line 8: not valid JSON") and errors[-1].endswith("the records after it are not read")
    path.write_text(text[: len(text) // 2 + 3])  # truncated file
    errors = []
    list(iter_json_records(path, errors))
    assert "not valid JSON" in errors[-1] or "not closed" in errors[-1]


def test_a_torn_jsonl_file_is_never_taken_for_json_ld(tmp_path, shipped_ontology):
    lines = [json.dumps(r) for r in make_predictions(shipped_ontology, n=3, seed=2)]
    path = tmp_path / "p.jsonl"
    path.write_text(lines[0][:100] + "\n" + "\n".join(lines[1:]) + "\n")
    assert classify_json(path) == "predictions"
    torn_first = tmp_path / "p.json"
    torn_first.write_text(lines[0][:100] + "\n" + "\n".join(lines[1:]) + "\n")
    assert classify_json(torn_first) == "predictions"
    document = tmp_path / "doc.json"
    document.write_text(json.dumps({"@context": {"ex": "http://example.org/"}, "@id": "ex:a", "ex:p": "v"}, indent=2))
    assert classify_json(document) == "json-ld"


def test_bad_records_keep_the_first_messages_and_count_all():
    errors = BadRecords(keep=3)
    errors.extend(f"line {i}: bad" for i in range(1, 1001))
    assert (
        list(errors) == ["line 1: bad", "line 2: bad", "line 3: bad"] and errors.total == 1000 and errors.hidden == 997
    )


def _lesions(store_dir: Path) -> set[str]:
    store = LesionStore(store_dir, read_only=True)
    rows = store.query("SELECT ?id WHERE { ?l a kg:Lesion ; kg:lesionId ?id }").values()
    return {r["id"] for r in rows}


def test_cli_load_reports_each_bad_line_and_follows_the_exit_rule(capsys, tmp_path, shipped_ontology):
    records = make_predictions(shipped_ontology, n=30, seed=5)
    lines = [json.dumps(r) for r in records]
    lines[2] = lines[2][:300]  # torn
    broken = json.loads(lines[4])
    broken["labels"][3]["score"] = 2.0
    lines[4] = json.dumps(broken)
    lines[6] = json.dumps(records[6]).replace(records[6]["lesion_id"], records[6]["lesion_id"] + "\\ud800", 1)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(("\n".join(lines) + "\n").encode("utf-8") + b"\xff\xfe not text\n")
    bad_ttl = tmp_path / "bad.ttl"
    bad_ttl.write_text('@prefix x: <http://x/> .\nx:a x:b x:c .\nx:a x:b "open .\n')
    store = tmp_path / "store"

    code, _, err = lesanet(capsys, "kg", "load", str(mixed), str(bad_ttl), "--store", str(store), "--max-messages", "3")
    assert code == 3, err
    assert f"skipped {mixed}: line 3: not valid JSON" in err
    assert f"skipped {mixed}: line 5 ({records[4]['lesion_id']}): labels[3].score must be in [0.0, 1.0], got 2.0" in err
    assert f"skipped {mixed}: line 7: a string holds a lone surrogate" in err
    assert "skipped 2 more bad records (not shown; --max-messages)" in err  # line 31 and bad.ttl
    assert "kg load: 5 skipped" in err and "Traceback" not in err
    expected = {r["lesion_id"] for i, r in enumerate(records) if i not in (2, 4, 6)}
    assert _lesions(store) == expected  # every good record is in the store

    allbad = tmp_path / "allbad.jsonl"
    allbad.write_text('{"lesion_id": "a"\n{"lesion_id\n')
    code, _, err = lesanet(capsys, "kg", "load", str(allbad), "--store", str(tmp_path / "store2"))
    assert code == 1 and f"skipped {allbad}: line 2: not valid JSON" in err
    assert err.strip().splitlines()[-1] == "lesanet: error: nothing loaded: 2 bad records or files (see above)"

    good = tmp_path / "good.json"
    good.write_text(json.dumps(records[:5], indent=1))
    code, _, err = lesanet(capsys, "kg", "load", str(good), "--store", str(tmp_path / "store3"))
    assert code == 0 and "skipped" not in err, err
    with pytest.raises(RecordError, match=r"bad.ttl: not loaded: Parser error .*line 3"):
        LesionStore(tmp_path / "store4").load_files([bad_ttl])
