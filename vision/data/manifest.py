"""Batch prediction input: a CSV manifest, one row a lesion (or a mask of lesions).

Columns (a header line names them; order free; unknown names are refused):

=============  ==========================================================================
``image``      CT volume: a file or a DICOM series folder (relative to the manifest's folder)
``lesion_id``  optional; the record's ``lesion_id`` (default ``FORMAT/STEM/row N``)
``slice``      with ``box``: file voxel indices, K along the file's third axis
``box``        ``X1 Y1 X2 Y2`` (spaces or commas; quote commas) along the first and second axes
``world_box``  ``X1 Y1 Z1 X2 Y2 Z2`` mm, two opposite corners
``world_point`` ``X Y Z`` mm, with ``size_mm`` (the lesion's long diameter)
``frame``      ``LPS`` (default, DICOM's patient frame) or ``RAS`` for world coordinates
``mask``       a mask / label image on the image's grid; ``mask_label`` N, ``mask_by`` component|label
``series``     SeriesInstanceUID when ``image`` is a folder with several series
=============  ==========================================================================

Each row gives exactly one of ``slice``+``box``, ``world_box``, ``world_point``, ``mask``.
A bad row (unreadable volume, box outside, a typo) is reported with its row number —
the line of the file, the header being row 1, as a spreadsheet numbers it — and the other
rows are still predicted. Each volume is read once, its lesions preprocessed, then freed.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vision.data.deeplesion import DataError
from vision.data.inputs import LesionInput, PredictError, input_patches
from vision.data.locate import (
    MASK_MODES,
    Location,
    MaskLesions,
    parse_voxel_box,
    parse_world_box,
    parse_world_point,
    volume_inputs,
    volume_stem,
)
from vision.data.volumes import read_volume

COLUMNS = (
    "image",
    "lesion_id",
    "slice",
    "box",
    "world_box",
    "world_point",
    "size_mm",
    "frame",
    "mask",
    "mask_label",
    "mask_by",
    "series",
)


@dataclass(frozen=True)
class ManifestRow:
    row: int  # line of the file (header = 1)
    image: Path
    location: Location
    lesion_id: str | None = None
    series: str | None = None


@dataclass(frozen=True)
class RowError:
    row: int
    message: str


@dataclass
class PreparedBatch:
    """Preprocessed lesions of a manifest (no volumes kept) and the rows that failed."""

    lesion_ids: list[str]
    sources: list[dict[str, Any]]
    patches: np.ndarray  # uint8 N × 3 × P × P
    boxes: np.ndarray  # float32 N × 4
    errors: list[RowError]
    rows: int  # data rows in the manifest


def read_manifest(path: str | Path) -> tuple[list[ManifestRow], list[RowError]]:
    """The good rows and the bad ones; a manifest that cannot be read at all raises PredictError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # a spreadsheet's BOM is not part of the first name
    except OSError as exc:
        raise PredictError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise PredictError(f"{path}: not a UTF-8 text CSV file") from None
    reader = csv.DictReader(text.splitlines())
    names = [(n or "").strip().lower() for n in (reader.fieldnames or [])]
    if "image" not in names:
        raise PredictError(f"{path}: the header has no 'image' column (columns: {', '.join(COLUMNS)})")
    unknown = [n for n in names if n not in COLUMNS]
    if unknown:
        raise PredictError(f"{path}: unknown column {unknown[0]!r}; columns are {', '.join(COLUMNS)}")
    rows: list[ManifestRow] = []
    errors: list[RowError] = []
    for number, raw in enumerate(reader, start=2):
        values = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if None in raw:
            errors.append(RowError(number, f"{path}, row {number}: more fields than header columns"))
            continue
        if not any(values.values()):
            continue  # a blank line
        try:
            rows.append(_parse_row(values, number, path))
        except PredictError as exc:
            errors.append(RowError(number, f"{path}, row {number}: {exc}"))
    if not rows and not errors:
        raise PredictError(f"{path}: no rows (one lesion a row under a header: {', '.join(COLUMNS)})")
    return rows, errors


def _parse_row(values: dict[str, str], number: int, manifest: Path) -> ManifestRow:
    image = values.get("image", "")
    if not image:
        raise PredictError("no image path")
    forms = [name for name in ("box", "world_box", "world_point", "mask") if values.get(name)]
    if len(forms) != 1:
        raise PredictError(f"give exactly one of slice+box, world_box, world_point, mask (got {forms or 'none'})")
    form = forms[0]
    frame = values.get("frame") or "LPS"
    location: Location
    if form == "box":
        if not values.get("slice"):
            raise PredictError("box needs slice (the index along the file's third axis)")
        location = parse_voxel_box(values["slice"], values["box"], "box")
    elif form == "world_box":
        location = parse_world_box(values["world_box"], frame, "world_box")
    elif form == "world_point":
        size = values.get("size_mm")
        try:
            size_mm = float(size) if size else None
        except ValueError:
            raise PredictError(f"size_mm {size!r} is not a number") from None
        location = parse_world_point(values["world_point"], size_mm, frame, "world_point")
    else:
        label_text, by = values.get("mask_label"), values.get("mask_by") or "component"
        try:
            label = int(label_text) if label_text else None
        except ValueError:
            raise PredictError(f"mask_label {label_text!r} is not an integer") from None
        if by not in MASK_MODES:
            raise PredictError(f"mask_by {by!r} is not one of {', '.join(MASK_MODES)}")
        location = MaskLesions(str(_resolve(values["mask"], manifest)), label, by)
    return ManifestRow(
        number, _resolve(image, manifest), location, values.get("lesion_id") or None, values.get("series") or None
    )


def _resolve(path: str, manifest: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else manifest.parent / p


def prepare_manifest(
    path: str | Path,
    rows: Sequence[ManifestRow],
    errors: Sequence[RowError],
    force: bool = False,
    warn: Callable[[str], None] | None = None,
) -> PreparedBatch:
    """Read each volume once, place and preprocess its rows' lesions; failures become RowErrors."""

    path = Path(path)
    failed = list(errors)
    by_volume: dict[tuple[str, str | None], list[ManifestRow]] = {}
    for row in rows:
        by_volume.setdefault((str(row.image), row.series), []).append(row)
    done: dict[int, list[tuple[str, dict[str, Any], np.ndarray, np.ndarray]]] = {}
    for (image, series), group in by_volume.items():
        try:
            volume = read_volume(image, series_uid=series, force=force, on_warning=warn)
        except (DataError, PredictError, OSError) as exc:
            failed += [RowError(row.row, f"{path}, row {row.row}: {exc}") for row in group]
            continue
        for row in group:
            try:
                inputs = volume_inputs(
                    volume,
                    [row.location],
                    [row.lesion_id or _default_id(volume, row)],
                    {"manifest": str(path), "row": row.row},
                )
                patches, boxes = input_patches(inputs, warn)
            except (DataError, PredictError) as exc:
                failed.append(RowError(row.row, f"{path}, row {row.row}: {exc}"))
                continue
            done[row.row] = [(item.lesion_id, item.source, patches[i], boxes[i]) for i, item in enumerate(inputs)]
        del volume  # one volume in memory at a time
    ordered = [entry for number in sorted(done) for entry in done[number]]
    failed.sort(key=lambda e: e.row)
    if ordered:
        patches = np.stack([e[2] for e in ordered])
        boxes = np.stack([e[3] for e in ordered]).astype(np.float32)
    else:
        patches, boxes = np.empty((0, 3, 0, 0), np.uint8), np.empty((0, 4), np.float32)
    return PreparedBatch(
        [e[0] for e in ordered], [e[1] for e in ordered], patches, boxes, failed, len(rows) + len(errors)
    )


def prepare_inputs(
    inputs: Sequence[LesionInput], errors: Sequence[str] = (), warn: Callable[[str], None] | None = None
) -> PreparedBatch:
    """Preprocess lesions given on the command line (several --lesion, a --boxes file, a mask)
    one by one, as a manifest's rows: a lesion that fails is reported, the others predicted.
    ``errors`` are the lesions already refused while reading the input (row = their order)."""
    failed = [RowError(i + 1, message) for i, message in enumerate(errors)]
    done: list[tuple[str, dict[str, Any], np.ndarray, np.ndarray]] = []
    for item in inputs:
        try:
            patches, boxes = input_patches([item], warn)
        except PredictError as exc:
            failed.append(RowError(len(failed) + 1, str(exc)))
            continue
        done.append((item.lesion_id, item.source, patches[0], boxes[0]))
    if done:
        patches = np.stack([e[2] for e in done])
        boxes = np.stack([e[3] for e in done]).astype(np.float32)
    else:
        patches, boxes = np.empty((0, 3, 0, 0), np.uint8), np.empty((0, 4), np.float32)
    return PreparedBatch([e[0] for e in done], [e[1] for e in done], patches, boxes, failed, len(inputs) + len(errors))


def _default_id(volume: Any, row: ManifestRow) -> str:
    return f"{volume.format}/{volume_stem(volume.source)}/row{row.row}"
