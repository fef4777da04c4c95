"""DeepLesion's own file formats: ``DL_info.csv``, ``Images_png/`` slices, the LesaNet
label/split JSON and the hand-labeled JSON.

Readers validate every record and name the bad one (CSV row, JSON key and position)
in a :class:`DataError`; batch readers (``strict=False``) collect those errors and
return the good records. Writers are used by the phantom and write atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ontology.errors import LesanetError
from ontology.files import read_json, write_bytes_atomic

DL_INFO_COLUMNS: tuple[str, ...] = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)
SPLIT_NAMES: dict[int, str] = {1: "train", 2: "val", 3: "test"}
SPLIT_CODES: dict[str, int] = {name: code for code, name in SPLIT_NAMES.items()}
HU_OFFSET = 32768  # DeepLesion PNGs store HU + 32768 as uint16
# The shared README documents DL_info.csv pixel coordinates as 0-based; the original
# 3DCE/MULAN loaders subtract 1. Readers and writers take the base as a parameter.
DEFAULT_COORDINATE_BASE = 0

# What a DL_info.csv row may hold. Beyond these a value is a broken export, not a CT (a
# Patient_index of 1e300 would name a 300-digit folder). Both `data check` and
# `data cache` read rows through _parse_row, so the two refuse exactly the same rows.
INDEX_RANGES: dict[str, tuple[int, int]] = {
    "Patient_index": (0, 999_999),  # folder names have 6 digits (000001_01_01)
    "Study_index": (0, 9_999),
    "Series_ID": (0, 9_999),
    "Key_slice_index": (0, 99_999),  # slice files are NNN.png
}
MAX_IMAGE_SIDE = 4096  # pixels per side of a slice (DeepLesion's are 512); larger PNGs are refused unread
MAX_PIXEL_MM = 10.0  # in-plane pixel spacing, mm (CT: about 0.2 to 1.5)
MAX_SLICE_INTERVAL_MM = 50.0  # slice interval, mm (CT: about 0.5 to 10)
AGE_RANGE = (0.0, 150.0)


class DataError(LesanetError, ValueError):
    """A bad DeepLesion record or file; the message names the file and the record."""

    def __init__(self, message: str, lesion_idx: int | None = None) -> None:
        super().__init__(message)
        self.lesion_idx = lesion_idx


# --------------------------------------------------------------------------- DL_info.csv


@dataclass(frozen=True)
class DLLesion:
    """One row of ``DL_info.csv``; pixel coordinates 0-based, slices as file numbers."""

    lesion_idx: int  # row number from 0 = the lesion index used by the label JSON
    file_name: str
    patient: int
    study: int
    series: int
    key_slice: int
    measurement: tuple[float, ...]  # x1,y1,..,x4,y4: RECIST long + short axis ends
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    diameters_px: tuple[float, float]
    location: tuple[float, float, float]
    coarse_type: int
    possibly_noisy: bool
    slice_range: tuple[int, int]
    spacing_mm: tuple[float, float, float]  # x, y, z (z = slice interval)
    image_size: tuple[int, int]  # rows, cols
    dicom_window: tuple[float, float]
    gender: str
    age: float | None
    split_code: int  # 1 train, 2 val, 3 test

    @property
    def series_dir(self) -> str:
        return series_dir_name(self.patient, self.study, self.series)

    @property
    def split(self) -> str:
        return SPLIT_NAMES[self.split_code]

    def slice_path(self, images_dir: str | os.PathLike[str], slice_number: int) -> Path:
        return Path(images_dir) / self.series_dir / f"{slice_number:03d}.png"


def series_dir_name(patient: int, study: int, series: int) -> str:
    return f"{patient:06d}_{study:02d}_{series:02d}"


@dataclass
class DLInfo:
    """Parsed ``DL_info.csv``: good lesions by index plus the bad rows (batch mode)."""

    path: Path
    lesions: dict[int, DLLesion]
    errors: list[DataError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.lesions)


def _floats(text: str, n: int | None, what: str) -> tuple[float, ...]:
    parts = [p for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a list of numbers") from None
    if n is not None and len(values) != n:
        raise ValueError(f"{what} {text!r} has {len(values)} numbers, expected {n}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} {text!r} holds NaN or infinity")
    return values


def _int(text: str, what: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an integer") from None
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{what} {text!r} is not an integer")
    return int(value)


def _ranged_int(row: dict[str, str], column: str) -> int:
    value = _int(row[column], column)
    lo, hi = INDEX_RANGES[column]
    if not lo <= value <= hi:
        raise ValueError(f"{column} {row[column].strip()!r} is outside {lo}..{hi:,}")
    return value


def _parse_row(row: dict[str, str], lesion_idx: int, base: int) -> DLLesion:
    """One CSV row -> DLLesion; raises ValueError naming the field (ranges: INDEX_RANGES and the MAX_*)."""
    patient = _ranged_int(row, "Patient_index")
    study = _ranged_int(row, "Study_index")
    series = _ranged_int(row, "Series_ID")
    key = _ranged_int(row, "Key_slice_index")
    measurement = tuple(v - base for v in _floats(row["Measurement_coordinates"], None, "Measurement_coordinates"))
    if len(measurement) % 2:
        raise ValueError("Measurement_coordinates has an odd number of values")
    box = tuple(v - base for v in _floats(row["Bounding_boxes"], 4, "Bounding_boxes"))
    if not (box[0] <= box[2] and box[1] <= box[3]):
        raise ValueError(f"Bounding_boxes {row['Bounding_boxes']!r} has x2 < x1 or y2 < y1")
    diameters = _floats(row["Lesion_diameters_Pixel_"], 2, "Lesion_diameters_Pixel_")
    location = _floats(row["Normalized_lesion_location"], 3, "Normalized_lesion_location")
    slice_range = tuple(_int(p, "Slice_range") for p in row["Slice_range"].split(",") if p.strip())
    if len(slice_range) != 2 or not slice_range[0] <= key <= slice_range[1]:
        raise ValueError(f"Slice_range {row['Slice_range']!r} does not hold Key_slice_index {key}")
    if slice_range[0] < 0 or slice_range[1] > INDEX_RANGES["Key_slice_index"][1]:
        raise ValueError(f"Slice_range {row['Slice_range']!r} is outside 0..{INDEX_RANGES['Key_slice_index'][1]:,}")
    spacing = _floats(row["Spacing_mm_px_"], 3, "Spacing_mm_px_")
    if min(spacing) <= 0:
        raise ValueError(f"Spacing_mm_px_ {row['Spacing_mm_px_']!r} is not positive")
    if max(spacing[:2]) > MAX_PIXEL_MM or spacing[2] > MAX_SLICE_INTERVAL_MM:
        raise ValueError(
            f"Spacing_mm_px_ {row['Spacing_mm_px_']!r} is not a CT spacing (pixels up to "
            f"{MAX_PIXEL_MM:g} mm, slice interval up to {MAX_SLICE_INTERVAL_MM:g} mm)"
        )
    size = tuple(_int(p, "Image_size") for p in row["Image_size"].split(",") if p.strip())
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"Image_size {row['Image_size']!r} is not two positive integers")
    if max(size) > MAX_IMAGE_SIDE:
        raise ValueError(f"Image_size {row['Image_size']!r} is over the {MAX_IMAGE_SIDE}-pixel limit per side")
    rows, cols = size
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    if not (0 <= centre_x <= cols - 1 and 0 <= centre_y <= rows - 1):
        raise ValueError(
            f"Bounding_boxes {row['Bounding_boxes']!r} has its centre outside the {rows}×{cols} image (Image_size)"
        )
    window = _floats(row["DICOM_windows"], 2, "DICOM_windows")
    split_code = _int(row["Train_Val_Test"], "Train_Val_Test")
    if split_code not in SPLIT_NAMES:
        raise ValueError(f"Train_Val_Test {row['Train_Val_Test']!r} is not 1, 2 or 3")
    noisy = _int(row["Possibly_noisy"], "Possibly_noisy")
    if noisy not in (0, 1):
        raise ValueError(f"Possibly_noisy {row['Possibly_noisy']!r} is not 0 or 1")
    age_text = (row.get("Patient_age") or "").strip()
    age = None
    if age_text and age_text.lower() != "nan":
        try:
            age = float(age_text)
        except ValueError:
            raise ValueError(f"Patient_age {age_text!r} is not a number") from None
        if not AGE_RANGE[0] <= age <= AGE_RANGE[1]:
            raise ValueError(f"Patient_age {age_text!r} is outside {AGE_RANGE[0]:g}..{AGE_RANGE[1]:g}")
    return DLLesion(
        lesion_idx=lesion_idx,
        file_name=row["File_name"].strip(),
        patient=patient,
        study=study,
        series=series,
        key_slice=key,
        measurement=measurement,
        box=box,  # type: ignore[arg-type]
        diameters_px=diameters,  # type: ignore[arg-type]
        location=location,  # type: ignore[arg-type]
        coarse_type=_int(row["Coarse_lesion_type"], "Coarse_lesion_type"),
        possibly_noisy=bool(noisy),
        slice_range=slice_range,  # type: ignore[arg-type]
        spacing_mm=spacing,  # type: ignore[arg-type]
        image_size=size,  # type: ignore[arg-type]
        dicom_window=window,  # type: ignore[arg-type]
        gender=(row.get("Patient_gender") or "").strip(),
        age=age,
        split_code=split_code,
    )


def read_dl_info(
    path: str | os.PathLike[str], *, strict: bool = True, coordinate_base: int = DEFAULT_COORDINATE_BASE
) -> DLInfo:
    """Read ``DL_info.csv``. Lesion index = data row number from 0.

    ``strict`` raises a DataError on the first bad row; otherwise bad rows are listed
    in ``DLInfo.errors`` and skipped. A missing column is always fatal.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read DL_info.csv ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in DL_INFO_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected the official DL_info.csv header")
    info = DLInfo(path=path, lesions={})
    try:
        for lesion_idx, row in enumerate(reader):
            line = reader.line_num
            try:
                if None in row or any(row.get(c) is None for c in DL_INFO_COLUMNS):
                    raise ValueError("wrong number of fields")
                info.lesions[lesion_idx] = _parse_row(row, lesion_idx, coordinate_base)
            except ValueError as exc:
                error = DataError(f"{path}:{line}: lesion {lesion_idx}: {exc}", lesion_idx)
                if strict:
                    raise error from None
                info.errors.append(error)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from None
    return info


def _fmt(values: Iterable[float]) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def dl_info_row(lesion: DLLesion, coordinate_base: int = DEFAULT_COORDINATE_BASE) -> list[str]:
    """The CSV fields of one lesion, in DL_INFO_COLUMNS order."""
    return [
        lesion.file_name,
        str(lesion.patient),
        str(lesion.study),
        str(lesion.series),
        str(lesion.key_slice),
        _fmt(v + coordinate_base for v in lesion.measurement),
        _fmt(v + coordinate_base for v in lesion.box),
        _fmt(lesion.diameters_px),
        _fmt(lesion.location),
        str(lesion.coarse_type),
        str(int(lesion.possibly_noisy)),
        f"{lesion.slice_range[0]}, {lesion.slice_range[1]}",
        _fmt(lesion.spacing_mm),
        f"{lesion.image_size[0]}, {lesion.image_size[1]}",
        _fmt(lesion.dicom_window),
        lesion.gender,
        "" if lesion.age is None else f"{lesion.age:g}",
        str(lesion.split_code),
    ]


def write_dl_info(
    path: str | os.PathLike[str], lesions: Sequence[DLLesion], coordinate_base: int = DEFAULT_COORDINATE_BASE
) -> None:
    """Write ``DL_info.csv``; lesions must be in lesion_idx order from 0."""
    for i, lesion in enumerate(lesions):
        if lesion.lesion_idx != i:
            raise ValueError(f"lesion {lesion.lesion_idx} at row {i}: DL_info.csv rows must be in index order")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(DL_INFO_COLUMNS)
    for lesion in lesions:
        writer.writerow(dl_info_row(lesion, coordinate_base))
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


# --------------------------------------------------------------------------- PNG slices


def read_slice_hu(path: str | os.PathLike[str]) -> np.ndarray:
    """A DeepLesion 16-bit PNG slice as HU (int32, rows × cols).

    The size is read from the header first: a slice over MAX_IMAGE_SIDE pixels a side (a
    decompression bomb, or not a CT slice) is refused before any pixel is decoded."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE:
                raise DataError(
                    f"{path}: a {width}×{height} PNG, over the {MAX_IMAGE_SIDE}-pixel limit per side "
                    "of a CT slice; not decoded"
                )
            if image.mode not in ("I;16", "I;16B", "I", "I;16L"):
                raise DataError(f"{path}: PNG mode {image.mode!r} is not 16-bit greyscale")
            pixels = np.asarray(image)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit, hit while opening
        raise DataError(
            f"{path}: a PNG over the {MAX_IMAGE_SIDE}-pixel limit per side of a CT slice "
            f"(a decompression bomb? {exc}); not decoded"
        ) from None
    except (OSError, ValueError, SyntaxError, MemoryError) as exc:
        raise DataError(f"{path}: unreadable PNG slice ({exc})") from None
    return pixels.astype(np.int32) - HU_OFFSET


def encode_slice_png(hu: np.ndarray) -> bytes:
    """HU array -> DeepLesion 16-bit PNG bytes (value = HU + 32768, clipped to uint16)."""
    stored = np.clip(np.rint(hu) + HU_OFFSET, 0, 65535).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


# --------------------------------------------------------------------------- label JSON


@dataclass(frozen=True)
class LesionLabels:
    """Labels of one lesion as names; ``truth`` is the complete set when known."""

    lesion_idx: int
    split: str
    relevant: tuple[str, ...]
    uncertain: tuple[str, ...]
    irrelevant: tuple[str, ...]


@dataclass
class LabelSplit:
    term_list: list[str]
    lesions: list[LesionLabels]
    dropped: dict[str, int]  # reason -> count (noisy, no label)
    errors: list[DataError] = field(default_factory=list)


_SPLITS = ("train", "val", "test")


def _id_list(value: object, n_terms: int, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where} is {type(value).__name__}, expected a list of label ids")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n_terms:
            raise ValueError(f"{where} holds {v!r}, not a label id in 0..{n_terms - 1}")
    return tuple(dict.fromkeys(value))  # official lists repeat ids; keep first order


def read_label_split(
    path: str | os.PathLike[str],
    *,
    dl_info: DLInfo | None = None,
    known_labels: set[str] | None = None,
    strict: bool = True,
    drop_unlabeled: bool = True,
) -> LabelSplit:
    """Read the official ``text_mined_labels_171_and_split.json`` format.

    Lesions marked ``Possibly_noisy`` in ``dl_info`` and lesions with neither relevant
    nor uncertain labels are dropped, as in the paper. ``known_labels`` (e.g. the
    ontology's names) rejects a term_list name it lacks.
    """
    path = Path(path)
    data = read_json(path, DataError, "label JSON")
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with term_list and *_lesion_idxs")
    term_list = data.get("term_list")
    if not isinstance(term_list, list) or not term_list or not all(isinstance(t, str) and t for t in term_list):
        raise DataError(f"{path}: 'term_list' must be a non-empty list of label names")
    if len(set(term_list)) != len(term_list):
        raise DataError(f"{path}: 'term_list' repeats a label name")
    if known_labels is not None:
        unknown = [t for t in term_list if t not in known_labels]
        if unknown:
            raise DataError(f"{path}: term_list label {unknown[0]!r} is not in the ontology ({len(unknown)} unknown)")
    result = LabelSplit(term_list=list(term_list), lesions=[], dropped={"possibly_noisy": 0, "no_label": 0})
    seen: dict[int, str] = {}
    for split in _SPLITS:
        key = f"{split}_lesion_idxs"
        idxs = data.get(key, [] if split != "train" else None)
        if not isinstance(idxs, list):
            raise DataError(f"{path}: '{key}' must be a list of DL_info.csv row numbers")
        columns = {}
        for kind in ("relevant", "uncertain", "irrelevant"):
            ckey = f"{split}_{kind}_labels"
            column = data.get(ckey)
            if column is None and (kind == "irrelevant" or not idxs):
                column = [[] for _ in idxs]  # official file has irrelevant labels for train only
            if not isinstance(column, list) or len(column) != len(idxs):
                raise DataError(f"{path}: '{ckey}' must be a list as long as '{key}' ({len(idxs)})")
            columns[kind] = column
        for pos, idx in enumerate(idxs):
            try:
                if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
                    raise ValueError(f"{key}[{pos}] = {idx!r} is not a row number")
                if idx in seen:
                    raise ValueError(f"{key}[{pos}]: lesion {idx} already listed in {seen[idx]}")
                ids = {
                    kind: _id_list(columns[kind][pos], len(term_list), f"{split}_{kind}_labels[{pos}]")
                    for kind in columns
                }
                if dl_info is not None and idx not in dl_info.lesions:
                    raise ValueError(f"{key}[{pos}]: lesion {idx} is not a good row of {dl_info.path.name}")
            except ValueError as exc:
                error = DataError(f"{path}: {exc}")
                if strict:
                    raise error from None
                result.errors.append(error)
                continue
            seen[idx] = split
            if dl_info is not None and dl_info.lesions[idx].possibly_noisy:
                result.dropped["possibly_noisy"] += 1
                continue
            if drop_unlabeled and not ids["relevant"] and not ids["uncertain"]:
                result.dropped["no_label"] += 1
                continue
            result.lesions.append(
                LesionLabels(
                    lesion_idx=idx,
                    split=split,
                    relevant=tuple(term_list[i] for i in ids["relevant"]),
                    uncertain=tuple(term_list[i] for i in ids["uncertain"]),
                    irrelevant=tuple(term_list[i] for i in ids["irrelevant"]),
                )
            )
    return result


def label_split_json(term_list: Sequence[str], lesions: Sequence[LesionLabels]) -> dict[str, object]:
    """The official label/split JSON object for ``lesions`` (names -> ids of term_list)."""
    index = {name: i for i, name in enumerate(term_list)}
    data: dict[str, object] = {"term_list": list(term_list)}
    for split in _SPLITS:
        chosen = [lesion for lesion in lesions if lesion.split == split]
        data[f"{split}_lesion_idxs"] = [lesion.lesion_idx for lesion in chosen]
        for kind in ("relevant", "uncertain") + (("irrelevant",) if split == "train" else ()):
            try:
                data[f"{split}_{kind}_labels"] = [[index[n] for n in getattr(lesion, kind)] for lesion in chosen]
            except KeyError as exc:
                raise ValueError(f"label {exc.args[0]!r} is not in term_list") from None
    return data


# --------------------------------------------------------------------------- hand-labeled JSON


@dataclass(frozen=True)
class HandLabeled:
    lesion_idx: int
    text: str
    expanded_terms: tuple[str, ...]


def read_hand_labeled(
    path: str | os.PathLike[str],
    *,
    known_labels: set[str] | None = None,
    resolve_label: Callable[[str], str] | None = None,
    strict: bool = True,
) -> tuple[list[HandLabeled], list[DataError]]:
    """Read ``hand_labeled_dev.json`` / phantom ``truth.json``: a list of
    ``{"lesion_idx", "expanded_terms", "text"?}``. Returns (records, errors).

    ``resolve_label`` maps a name or synonym to its ontology name (the official file
    uses some synonyms, e.g. "pericardial") and raises LookupError for unknown ones;
    ``known_labels`` instead demands exact names.
    """
    path = Path(path)
    data = read_json(path, DataError, "hand-labeled JSON")
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of {{lesion_idx, expanded_terms}} records")
    records: list[HandLabeled] = []
    errors: list[DataError] = []
    seen: set[int] = set()
    for pos, item in enumerate(data):
        try:
            if not isinstance(item, dict):
                raise ValueError("not an object")
            idx = item.get("lesion_idx")
            if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
                raise ValueError(f"lesion_idx {idx!r} is not a row number")
            if idx in seen:
                raise ValueError(f"lesion {idx} listed twice")
            terms = item.get("expanded_terms")
            if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
                raise ValueError("expanded_terms must be a list of label names")
            if known_labels is not None:
                unknown = [t for t in terms if t not in known_labels]
                if unknown:
                    raise ValueError(f"label {unknown[0]!r} is not in the ontology")
            if resolve_label is not None:
                try:
                    terms = [resolve_label(t) for t in terms]
                except LookupError as exc:
                    raise ValueError(f"unknown label: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
            text = item.get("text", "")
            if not isinstance(text, str):
                raise ValueError("text must be a string")
        except ValueError as exc:
            error = DataError(f"{path}: record {pos}: {exc}")
            if strict:
                raise error from None
            errors.append(error)
            continue
        seen.add(idx)
        records.append(HandLabeled(lesion_idx=idx, text=text, expanded_terms=tuple(dict.fromkeys(terms))))
    return records, errors
