"""Lesion inputs for prediction: where each lesion is and how to read its slices in HU.

Every input ends as a :class:`LesionInput` (a slice provider, the key slice, the box in
that slice's pixels, the spacing) that :func:`input_patches` preprocesses exactly as the
patch cache does (``vision.data.preprocess.lesion_patch``). This module reads DeepLesion
folders, DeepLesion PNG slices and boxes files; lesions on CT volumes (voxel box, world
coordinates, masks) are placed by :mod:`vision.data.locate`, batches by :mod:`vision.data.manifest`.
Nothing here imports torch, so bad input is reported before the model loads.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ontology.errors import LesanetError
from vision.data.deeplesion import DataError, read_dl_info, read_slice_hu
from vision.data.preprocess import lesion_patch


class PredictError(LesanetError, ValueError):
    """An input that cannot be predicted (one line naming the file / lesion and the fix)."""


Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class LesionInput:
    """One lesion on a CT: how to read its slices (in HU) and where it is."""

    lesion_id: str
    source: dict[str, Any]
    provider: Callable[[int], np.ndarray | None]  # slice number -> HU (rows × cols) or None
    key_slice: int
    box_px: tuple[float, float, float, float]
    spacing_xy: tuple[float, float]
    slice_interval: float


def parse_box(text: str, where: str = "--box") -> tuple[float, float, float, float]:
    """``x1,y1,x2,y2`` in pixels of the key slice."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise PredictError(f"{where}: {text!r} is not x1,y1,x2,y2 (four numbers)") from None
    if len(values) != 4:
        raise PredictError(f"{where}: {text!r} has {len(values)} numbers; expected x1,y1,x2,y2")
    x1, y1, x2, y2 = values
    if not all(np.isfinite(values)) or x2 <= x1 or y2 <= y1:
        raise PredictError(f"{where}: box {text!r} needs x1 < x2 and y1 < y2")
    if min(values) < 0:
        raise PredictError(
            f"{where}: box {text!r} has a negative coordinate; pixel indices count from 0 "
            "(at the image's top-left corner)"
        )
    return values  # type: ignore[return-value]


MAX_BOXES_LINE = 1024  # characters; a boxes line is five numbers


def read_boxes(path: str | Path) -> tuple[list[tuple[int, int, Box]], list[str]]:
    """A boxes file: one lesion a line as ``slice, x1, y1, x2, y2`` (``#`` comments allowed).

    Returns ``(line, slice, box)`` of the good lines and a ``FILE:LINE: reason`` message for
    each bad one (the good ones are still predicted); an unreadable or empty file raises."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PredictError(f"{path}: cannot read boxes file ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise PredictError(
            f"{path}: not UTF-8 text (byte {exc.start}); a boxes file is lines of five numbers"
        ) from None
    boxes: list[tuple[int, int, Box]] = []
    errors: list[str] = []
    # lines end at "\n" only (str.splitlines also splits at \x1c-\x1e, \x85, \u2028, ...,
    # and the line numbers would no longer be the ones an editor shows)
    for line_no, line in enumerate(text.split("\n"), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            boxes.append((line_no, *_box_line(line, f"{path}:{line_no}")))
        except PredictError as exc:
            errors.append(str(exc))
    if not boxes and not errors:
        raise PredictError(f"{path}: no boxes (one lesion a line: slice, x1, y1, x2, y2)")
    return boxes, errors


def _box_line(line: str, where: str) -> tuple[int, Box]:
    if len(line) > MAX_BOXES_LINE:
        raise PredictError(f"{where}: a line of {len(line):,} characters; expected 'slice, x1, y1, x2, y2'")
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 5:
        raise PredictError(f"{where}: expected 'slice, x1, y1, x2, y2', got {line[:80]!r}")
    try:
        slice_number = int(parts[0])
    except ValueError:
        raise PredictError(f"{where}: slice {parts[0][:40]!r} is not an integer") from None
    if slice_number < 0:
        raise PredictError(f"{where}: slice {slice_number} is negative (slices count from 0)")
    return slice_number, parse_box(",".join(parts[1:]), where)


def read_boxes_file(path: str | Path) -> list[tuple[int, tuple[float, float, float, float]]]:
    """The boxes of a boxes file, all or nothing (the first bad line raises)."""
    boxes, errors = read_boxes(path)
    if errors:
        raise PredictError(errors[0])
    return [(slice_number, box) for _, slice_number, box in boxes]


def parse_spacing(text: str) -> tuple[float, float, float | None]:
    """``--spacing``: ``XY``, ``X,Y`` or ``X,Y,Z`` millimetres (Z = slice interval)."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise PredictError(f"--spacing: {text!r} is not MM, X,Y or X,Y,Z millimetres") from None
    if len(values) not in (1, 2, 3) or not all(np.isfinite(values)) or min(values) <= 0:
        raise PredictError(f"--spacing: {text!r} must be 1 to 3 positive numbers (MM, X,Y or X,Y,Z)")
    if len(values) == 1:
        return values[0], values[0], None
    return values[0], values[1], values[2] if len(values) == 3 else None


def _check_box_inside(box: Sequence[float], shape: tuple[int, ...], where: str) -> None:
    rows, cols = shape[-2:]
    x1, y1, x2, y2 = box
    if x1 < 0 or y1 < 0 or x2 > cols - 1 or y2 > rows - 1:
        raise PredictError(f"{where}: box {list(box)} lies outside the {rows}×{cols} image (x < {cols}, y < {rows})")


def _png_series_provider(folder: Path) -> Callable[[int], np.ndarray | None]:
    """Slices ``NNN.png`` of a DeepLesion series folder, each decoded once."""
    decoded: dict[int, np.ndarray | None] = {}

    def provider(n: int) -> np.ndarray | None:
        if n not in decoded:
            path = folder / f"{n:03d}.png"
            decoded[n] = read_slice_hu(path) if path.is_file() else None
        return decoded[n]

    return provider


def deeplesion_inputs(
    deeplesion_dir: str | Path, lesion_idxs: Sequence[int], dataset: str = "deeplesion", errors: list[str] | None = None
) -> list[LesionInput]:
    """Lesions given as ``DL_info.csv`` rows of a DeepLesion-format folder (``dataset`` names it).

    A lesion that is not a good row raises, or with ``errors`` is reported there and left out."""

    root = Path(deeplesion_dir)
    info = read_dl_info(root / "DL_info.csv", strict=False)
    bad = {e.lesion_idx: str(e) for e in info.errors if e.lesion_idx is not None}
    inputs = []
    for idx in lesion_idxs:
        lesion = info.lesions.get(idx)
        if lesion is None:
            reason = bad.get(idx) or f"lesion {idx} is not a row of {root / 'DL_info.csv'} ({len(info.lesions)} rows)"
            if errors is None:
                raise PredictError(reason)
            errors.append(reason)
            continue
        folder = root / "Images_png" / lesion.series_dir
        key_file = lesion.slice_path(root / "Images_png", lesion.key_slice)
        inputs.append(
            LesionInput(
                lesion_id=f"deeplesion/{idx}",
                source={
                    "dataset": dataset,
                    "lesion_idx": idx,
                    "file": str(key_file.relative_to(root)),
                    "slice": lesion.key_slice,
                    "box_px": [float(v) for v in lesion.box],
                    "spacing_mm": [float(v) for v in lesion.spacing_mm],
                },
                provider=_png_series_provider(folder),
                key_slice=lesion.key_slice,
                box_px=tuple(float(v) for v in lesion.box),  # type: ignore[arg-type]
                spacing_xy=(lesion.spacing_mm[0], lesion.spacing_mm[1]),
                slice_interval=lesion.spacing_mm[2],
            )
        )
    return inputs


def png_inputs(
    png: str | Path, spacing: str, boxes: Sequence[tuple[float, float, float, float]], errors: list[str] | None = None
) -> list[LesionInput]:
    """Lesions on one DeepLesion-format 16-bit PNG slice; neighbours ``NNN.png`` beside it are used.

    A box outside the slice raises, or with ``errors`` is reported there and left out."""
    path = Path(png)
    if not path.is_file():
        raise PredictError(f"{path}: no such PNG file")
    sx, sy, sz = parse_spacing(spacing)
    try:
        key_slice = int(path.stem)
        provider = _png_series_provider(path.parent)
    except ValueError:  # not a DeepLesion slice name: a single slice without neighbours
        key_slice = 0

        image = read_slice_hu(path)
        provider = lambda n: image if n == 0 else None  # noqa: E731
    has_neighbours = provider(key_slice - 1) is not None or provider(key_slice + 1) is not None
    if has_neighbours and sz is None:
        raise PredictError(f"{path}: neighbouring slices exist; give the slice interval as --spacing X,Y,Z")
    key = provider(key_slice)
    if key is None:  # pragma: no cover - the file exists
        raise PredictError(f"{path}: unreadable")
    inputs = []
    for k, box in enumerate(boxes):
        try:
            _check_box_inside(box, key.shape, f"{path}, box {k + 1}")
        except PredictError as exc:
            if errors is None:
                raise
            errors.append(str(exc))
            continue
        inputs.append(
            LesionInput(
                lesion_id=f"png/{path.stem}/{k}",
                source={
                    "dataset": "png",
                    "file": str(path),
                    "slice": key_slice,
                    "box_px": list(box),
                    "spacing_mm": [sx, sy, sz if sz is not None else None],
                },
                provider=provider,
                key_slice=key_slice,
                box_px=box,
                spacing_xy=(sx, sy),
                slice_interval=sz if sz is not None else 2.0,  # no neighbours: every channel is the key slice
            )
        )
    return inputs


def input_patches(
    inputs: Sequence[LesionInput], warn: Callable[[str], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Preprocess every input exactly as the patch cache does (vision.data.preprocess.lesion_patch)."""
    patches, boxes = [], []
    for item in inputs:
        try:
            patch, box = lesion_patch(
                item.provider,
                item.key_slice,
                item.box_px,
                item.spacing_xy,
                item.slice_interval,
                on_warning=_prefixed(warn, item.lesion_id),
            )
        except DataError as exc:
            raise PredictError(f"{item.lesion_id}: {exc}") from None
        patches.append(patch)
        boxes.append(box)
    return np.stack(patches), np.stack(boxes).astype(np.float32)


def _prefixed(warn: Callable[[str], None] | None, lesion_id: str) -> Callable[[str], None]:
    def sink(message: str) -> None:
        text = f"{lesion_id}: {message}"
        if warn is None:
            warnings.warn(text, stacklevel=4)
        else:
            warn(text)

    return sink
