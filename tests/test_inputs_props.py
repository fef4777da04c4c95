"""Property tests of the prediction-input parsers: any text gives boxes or named errors, never
another exception, and what is accepted is a valid box."""

from __future__ import annotations

import math
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vision.data.inputs import PredictError, parse_box, parse_spacing, read_boxes

SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # unencodable lone surrogates
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**6), 10**6).map(str),
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=SURROGATES), max_size=6),
)
lines = st.one_of(
    st.lists(numbers, min_size=0, max_size=7).map(", ".join),
    st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=SURROGATES), max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(lines, max_size=12))
def test_any_boxes_file_gives_valid_boxes_and_one_message_per_bad_line(tmp_path_factory, file_lines):
    path = tmp_path_factory.mktemp("boxes") / "boxes.txt"
    path.write_text("\n".join(file_lines) + "\n", encoding="utf-8")
    meaningful = [n for n, line in enumerate(file_lines, 1) if line.split("#", 1)[0].strip()]  # editor lines
    try:
        boxes, errors = read_boxes(path)
    except PredictError as exc:
        assert not meaningful and "no boxes" in str(exc)
        return
    assert (
        sorted([line for line, _, _ in boxes] + [int(e[len(str(path)) + 1 :].split(":")[0]) for e in errors])
        == meaningful
    )
    for _, slice_number, (x1, y1, x2, y2) in boxes:
        assert slice_number >= 0 and 0 <= x1 < x2 and 0 <= y1 < y2 and all(map(math.isfinite, (x1, y1, x2, y2)))
    assert all(e.startswith(f"{path}:") for e in errors)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_box_and_spacing_accept_valid_values_or_name_the_option(text):
    for parse, option in ((parse_box, "--box"), (parse_spacing, "--spacing")):
        try:
            values = parse(text)
        except PredictError as exc:
            assert str(exc).startswith(option)
        else:
            assert all(v is None or (math.isfinite(v) and v >= 0) for v in values)


def test_not_utf8_boxes_file_is_one_clear_error(tmp_path):
    path = tmp_path / "boxes.txt"
    path.write_bytes(b"3, 1, 1, 5, 5\n\xff\xfe\n")
    with pytest.raises(PredictError, match="not UTF-8"):
        read_boxes(path)
