"""DeepLesion readers: DL_info.csv, label/split JSON, hand-labeled JSON, PNG slices.

Property tests mutate rows and records: a reader either loads them or names the bad
row / record in a DataError, never a traceback of another kind.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vision.data.deeplesion import (
    DL_INFO_COLUMNS,
    DataError,
    DLLesion,
    LesionLabels,
    encode_slice_png,
    label_split_json,
    read_dl_info,
    read_hand_labeled,
    read_label_split,
    read_slice_hu,
    write_dl_info,
)

TERMS = ["chest", "lung", "liver", "nodule", "cyst"]


def _lesion(idx: int, **changes) -> DLLesion:
    fields: dict[str, Any] = dict(
        lesion_idx=idx,
        file_name=f"000001_01_01_{10 + idx:03d}.png",
        patient=1,
        study=1,
        series=1,
        key_slice=10 + idx,
        measurement=(10.0, 10.0, 20.0, 12.0, 15.0, 8.0, 15.0, 14.0),
        box=(8.0, 6.0, 22.0, 16.0),
        diameters_px=(10.2, 6.0),
        location=(0.4, 0.5, 0.6),
        coarse_type=-1,
        possibly_noisy=idx == 2,
        slice_range=(5 + idx, 15 + idx),
        spacing_mm=(0.7, 0.7, 5.0),
        image_size=(512, 512),
        dicom_window=(-175.0, 275.0),
        gender="F",
        age=61.0,
        split_code=1 + idx % 3,
    )
    fields.update(changes)
    return DLLesion(**fields)


@pytest.fixture()
def dl_info_text(tmp_path) -> str:
    path = tmp_path / "DL_info.csv"
    write_dl_info(path, [_lesion(i) for i in range(4)])
    return path.read_text()


def test_dl_info_round_trip_and_coordinate_base(tmp_path):
    lesions = [_lesion(i) for i in range(4)]
    path = tmp_path / "DL_info.csv"
    write_dl_info(path, lesions)
    assert read_dl_info(path).lesions == {l.lesion_idx: l for l in lesions}
    assert path.read_text().splitlines()[0].split(",") == list(DL_INFO_COLUMNS)
    write_dl_info(path, lesions, coordinate_base=1)  # 1-based file -> same 0-based lesions
    assert read_dl_info(path, coordinate_base=1).lesions[0].box == lesions[0].box
    assert read_dl_info(path).lesions[0].box == tuple(v + 1 for v in lesions[0].box)


def test_missing_column_is_fatal_and_named(tmp_path, dl_info_text):
    path = tmp_path / "bad.csv"
    path.write_text(dl_info_text.replace("Spacing_mm_px_", "Spacing"))
    with pytest.raises(DataError, match="missing column.*Spacing_mm_px_"):
        read_dl_info(path, strict=False)


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("Bounding_boxes", "1, 2, 3", "Bounding_boxes"),
        ("Bounding_boxes", "30, 2, 10, 40", "x2 < x1"),
        ("Spacing_mm_px_", "nan, nan, 5", "NaN"),
        ("Key_slice_index", "abc", "Key_slice_index"),
        ("Train_Val_Test", "4", "Train_Val_Test"),
        ("Slice_range", "1, 2", "Slice_range"),
    ],
)
def test_bad_row_is_named(tmp_path, dl_info_text, column, value, message):
    rows = list(csv.reader(io.StringIO(dl_info_text)))
    rows[2][DL_INFO_COLUMNS.index(column)] = value
    path = tmp_path / "DL_info.csv"
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(DataError, match=rf"DL_info.csv:3: lesion 1: .*{message}"):
        read_dl_info(path)
    info = read_dl_info(path, strict=False)  # batch mode: the rest loads
    assert sorted(info.lesions) == [0, 2, 3] and info.errors[0].lesion_idx == 1


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    row=st.integers(1, 4),
    column=st.integers(0, len(DL_INFO_COLUMNS) - 1),
    value=st.one_of(st.text(max_size=12), st.just("nan"), st.just(""), st.just("1, 2"), st.floats().map(str)),
    raw=st.booleans(),
)
def test_mutated_dl_info_rows_load_or_name_the_row(tmp_path, dl_info_text, row, column, value, raw):
    lines = dl_info_text.splitlines()
    if raw:  # a whole line replaced by arbitrary text
        lines[row] = value
        text = "\n".join(lines) + "\n"
    else:
        rows = list(csv.reader(io.StringIO(dl_info_text)))
        rows[row][column] = value
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        text = buffer.getvalue()
    path = tmp_path / "DL_info.csv"
    path.write_text(text)
    try:
        info = read_dl_info(path)
    except DataError as exc:
        assert "DL_info.csv" in str(exc) and (f"lesion {row - 1}" in str(exc) or "CSV" in str(exc))
    else:
        assert len(info) >= 3
    batch = None
    try:
        batch = read_dl_info(path, strict=False)
    except DataError as exc:  # only a malformed CSV as a whole stops batch mode
        assert "malformed CSV" in str(exc)
    if batch is not None:
        assert len(batch.lesions) + len(batch.errors) >= 3


def _labels_json() -> dict:
    lesions = [
        LesionLabels(0, "train", ("chest", "lung", "nodule"), (), ("liver",)),
        LesionLabels(1, "train", (), (), ()),  # no label: dropped
        LesionLabels(2, "val", ("liver", "cyst"), ("nodule",), ()),  # possibly noisy: dropped
        LesionLabels(3, "test", ("liver",), (), ()),
    ]
    return label_split_json(TERMS, lesions)


def test_label_json_round_trip_and_paper_drops(tmp_path):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(_labels_json()))
    dl_path = tmp_path / "DL_info.csv"
    write_dl_info(dl_path, [_lesion(i) for i in range(4)])
    result = read_label_split(path, dl_info=read_dl_info(dl_path))
    assert [l.lesion_idx for l in result.lesions] == [0, 3]
    assert result.dropped == {"possibly_noisy": 1, "no_label": 1}
    assert result.lesions[0].irrelevant == ("liver",) and result.lesions[1].split == "test"


def test_label_name_the_ontology_lacks_is_named(tmp_path):
    data = _labels_json()
    data["term_list"][2] = "livre"
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="'livre' is not in the ontology"):
        read_label_split(path, known_labels=set(TERMS))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 8) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(_labels_json())), pos=st.integers(0, 3), value=_json, whole=st.booleans())
def test_mutated_label_json_loads_or_names_the_record(tmp_path, key, pos, value, whole):
    data = _labels_json()
    if whole or not isinstance(data[key], list) or pos >= len(data[key]):
        data[key] = value
    else:
        data[key][pos] = value
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    for strict in (True, False):
        try:
            result = read_label_split(path, strict=strict)
        except DataError as exc:
            assert "labels.json" in str(exc)
        else:
            assert all(set(l.relevant) <= set(result.term_list) for l in result.lesions)


def test_hand_labeled_reader_names_bad_records(tmp_path):
    path = tmp_path / "hand.json"
    path.write_text(json.dumps([{"lesion_idx": 4, "expanded_terms": ["liver"], "text": "x"}, {"lesion_idx": "a"}]))
    with pytest.raises(DataError, match="record 1"):
        read_hand_labeled(path)
    records, errors = read_hand_labeled(path, strict=False)
    assert [r.lesion_idx for r in records] == [4] and len(errors) == 1


def test_official_files_load(lesanet_data, shipped_ontology):
    names = set(shipped_ontology.terms)
    splits = read_label_split(lesanet_data / "text_mined_labels_171_and_split.json", known_labels=names)
    assert splits.term_list == shipped_ontology.label_set("lesanet171")
    assert len(splits.lesions) + splits.dropped["no_label"] == 20266 + 1976 + 1879
    assert all(len(set(l.relevant)) == len(l.relevant) for l in splits.lesions)  # repeated ids collapse
    resolve = lambda name: shipped_ontology.term(name).name  # noqa: E731 - the file uses synonyms
    records, errors = read_hand_labeled(lesanet_data / "hand_labeled_dev.json", resolve_label=resolve)
    assert len(records) == 250 and not errors
    assert all(set(r.expanded_terms) <= names for r in records)


def test_png_slices_store_hu_plus_32768(tmp_path):
    hu = np.array([[-1024, 0], [40, 3071]], dtype=np.int32)
    path = tmp_path / "001.png"
    path.write_bytes(encode_slice_png(hu))
    np.testing.assert_array_equal(read_slice_hu(path), hu)
    path.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="unreadable PNG"):
        read_slice_hu(path)
