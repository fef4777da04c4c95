"""Where a lesion is on a CT volume, in the forms users have, and what the record says.

Four forms, each turned into a key slice and a box on the volume's internal axial frame
(``vision.data.volumes``), which is what the preprocessing reads:

* :class:`VoxelBox` — file voxel indices, as numpy / nibabel / ITK-SNAP / 3D Slicer show
  them: ``K`` along the file's third axis, ``X1, X2`` along the first, ``Y1, Y2`` along
  the second (for a DICOM series, ITK's series order: by position along the slice normal).
  The tool converts to its internal frame, never the user.
* :class:`WorldBox` — two opposite corners in mm, LPS (DICOM's patient frame) or RAS.
* :class:`WorldPoint` — a centre in mm with the lesion's size (a point has no extent).
* :class:`MaskLesions` — a mask / label image on the same grid: each connected component
  (26-connected, per label value) or each label value is one lesion, placed on its
  largest axial cross-section (DeepLesion's key slices are the measured, largest ones)
  with the component's box on that slice.

Every record's ``source`` gives the key slice and box back in file voxel indices
(``slice``, ``box_px``), the box centre in mm (``center_mm``, LPS), how the lesion was
given (``location``) and, for DICOM, the key slice's SOP Instance UID.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vision.data.deeplesion import DataError
from vision.data.inputs import Box, LesionInput, PredictError, parse_box
from vision.data.volumes import read_label_image, read_volume

Point = tuple[float, float, float]
FRAMES = ("LPS", "RAS")
MASK_MODES = ("component", "label")
SINGLE_SLICE_INTERVAL = 2.0  # one slice only: each channel falls back to the key slice


@dataclass(frozen=True)
class VoxelBox:
    slice: int  # index along the file's third axis
    box: Box  # x1, y1, x2, y2 along the file's first and second axes
    where: str = field(default="", compare=False)  # where the user gave it (e.g. "boxes.txt:3"), for messages


@dataclass(frozen=True)
class WorldBox:
    corner1: Point
    corner2: Point
    frame: str = "LPS"


@dataclass(frozen=True)
class WorldPoint:
    point: Point
    size_mm: float  # the lesion's extent (box side) in the axial plane
    frame: str = "LPS"


@dataclass(frozen=True)
class MaskLesions:
    path: str
    label: int | None = None  # only this label value
    by: str = "component"  # "component" | "label"


Location = VoxelBox | WorldBox | WorldPoint | MaskLesions


@dataclass(frozen=True)
class Placement:
    """One lesion on the internal frame, and how the user gave it."""

    key_slice: int
    box: Box  # internal pixels of the key slice
    given: dict[str, Any]


# --------------------------------------------------------------------------- text forms


def parse_numbers(text: str, count: int, where: str, what: str) -> tuple[float, ...]:
    """``count`` numbers separated by commas or spaces."""
    parts = [p for p in str(text).replace(",", " ").split() if p]
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        raise PredictError(f"{where}: {text!r} is not {what}") from None
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise PredictError(f"{where}: {text!r} has {len(values)} numbers; expected {what}")
    return values


def parse_world_box(text: str, frame: str = "LPS", where: str = "--world-box") -> WorldBox:
    v = parse_numbers(text, 6, where, "X1,Y1,Z1,X2,Y2,Z2 (two corners in mm)")
    return WorldBox(v[:3], v[3:], _frame(frame, where))  # type: ignore[arg-type]


def parse_world_point(text: str, size_mm: float | None, frame: str = "LPS", where: str = "--world-point") -> WorldPoint:
    v = parse_numbers(text, 3, where, "X,Y,Z (mm)")
    if size_mm is None:
        raise PredictError(
            f"{where}: a point has no extent; give the lesion's size in mm too (--size MM, its long diameter)"
        )
    if not (math.isfinite(size_mm) and size_mm > 0):
        raise PredictError(f"{where}: size {size_mm!r} mm must be a positive number")
    return WorldPoint(v, float(size_mm), _frame(frame, where))  # type: ignore[arg-type]


def parse_voxel_box(slice_text: Any, box_text: str, where: str = "--box") -> VoxelBox:
    try:
        k = int(str(slice_text).strip())
    except ValueError:
        raise PredictError(f"{where}: slice {slice_text!r} is not an integer") from None
    return VoxelBox(k, parse_box(box_text, where))


def _frame(frame: str, where: str) -> str:
    name = str(frame or "LPS").upper()
    if name not in FRAMES:
        raise PredictError(f"{where}: frame {frame!r} is not LPS or RAS")
    return name


def to_lps(point: Sequence[float], frame: str) -> np.ndarray:
    p = np.asarray(point, dtype=np.float64)
    return p * np.array([-1.0, -1.0, 1.0]) if frame == "RAS" else p


# --------------------------------------------------------------------------- placing


def place(volume: Any, location: Location) -> list[Placement]:
    """The lesion(s) of one location on ``volume`` (a vision.data.volumes.Volume)."""
    if isinstance(location, VoxelBox):
        return [_place_voxel(volume, location)]
    if isinstance(location, WorldBox):
        corners = np.stack([to_lps(location.corner1, location.frame), to_lps(location.corner2, location.frame)])
        given: dict[str, Any] = {
            "form": "world-box",
            "frame": location.frame,
            "corners_mm": [list(location.corner1), list(location.corner2)],
        }
        return [_place_internal(volume, volume.from_world(corners), given, f"world box {_mm(location)}")]
    if isinstance(location, WorldPoint):
        centre = volume.from_world(to_lps(location.point, location.frame))[0]
        half = np.array([location.size_mm / 2 / volume.spacing_mm[0], location.size_mm / 2 / volume.spacing_mm[1], 0])
        given = {
            "form": "world-point",
            "frame": location.frame,
            "point_mm": list(location.point),
            "size_mm": location.size_mm,
        }
        return [
            _place_internal(volume, np.stack([centre - half, centre + half]), given, f"world point {_mm(location)}")
        ]
    if isinstance(location, MaskLesions):
        return mask_placements(volume, location)
    raise TypeError(f"unknown lesion location {location!r}")


def _mm(location: WorldBox | WorldPoint) -> str:
    points = [location.point] if isinstance(location, WorldPoint) else [location.corner1, location.corner2]
    return " – ".join("(" + ", ".join(f"{v:g}" for v in p) + ")" for p in points) + f" mm {location.frame}"


def _place_voxel(volume: Any, location: VoxelBox) -> Placement:
    size_i, size_j, size_k = volume.file_grid.size
    k, (x1, y1, x2, y2) = location.slice, location.box
    if not 0 <= k < size_k:
        raise PredictError(
            f"{volume.source}: slice {k} is out of range (the volume has slices 0..{size_k - 1}); "
            "K counts along the file's third axis"
        )
    if x1 < 0 or y1 < 0 or x2 > size_i - 1 or y2 > size_j - 1:
        raise PredictError(
            f"{volume.source}, slice {k}: box {list(location.box)} lies outside the "
            f"{size_j}×{size_i} slice (x < {size_i} along the file's first axis, "
            f"y < {size_j} along its second)"
        )
    if not volume.axial_file_slices and not volume.resampled:
        raise PredictError(
            f"{volume.source}: the file's slices (its third axis) are not axial; a box on them "
            "is not an axial box. Give the lesion with --world-box / --world-point or --mask"
        )
    corners = np.array([[x1, y1, k], [x2, y1, k], [x1, y2, k], [x2, y2, k]], dtype=np.float64)
    given = {"form": "voxel", "slice": k, "box_px": [float(v) for v in location.box]}
    return _place_internal(volume, volume.from_file(corners), given, f"box {list(location.box)} on slice {k}")


def _place_internal(volume: Any, corners: np.ndarray, given: dict[str, Any], what: str) -> Placement:
    """Key slice (nearest the corners' centre) and the xy box of the corners, checked inside."""
    z_size, rows, cols = volume.hu.shape
    centre = corners.mean(axis=0)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    limits = np.array([cols, rows, z_size]) - 0.5
    if not (np.all(lo[:2] >= -0.5 - 1e-6) and np.all(hi[:2] <= limits[:2] + 1e-6) and -0.5 <= centre[2] <= limits[2]):
        raise PredictError(f"{volume.source}: {what} lies outside the volume ({_extent_text(volume)})")
    key = int(np.clip(round(float(centre[2])), 0, z_size - 1))
    box = (
        float(np.clip(lo[0], 0, cols - 1)),
        float(np.clip(lo[1], 0, rows - 1)),
        float(np.clip(hi[0], 0, cols - 1)),
        float(np.clip(hi[1], 0, rows - 1)),
    )
    return Placement(key, box, given)  # type: ignore[arg-type]


def _extent_text(volume: Any) -> str:
    z, y, x = volume.hu.shape
    corners = np.array([[i, j, k] for i in (-0.5, x - 0.5) for j in (-0.5, y - 0.5) for k in (-0.5, z - 0.5)])
    world = volume.to_world(corners)
    lo, hi = world.min(axis=0), world.max(axis=0)
    return ", ".join(f"{a} {l:.1f}..{h:.1f}" for a, l, h in zip("xyz", lo, hi)) + " mm LPS"


# --------------------------------------------------------------------------- masks


def mask_placements(volume: Any, location: MaskLesions) -> list[Placement]:
    """One placement per connected component (or label value) of a mask on ``volume``'s grid."""
    from scipy import ndimage  # local: scipy costs predict ~0.2 s of start-up, and only --mask needs it

    if location.by not in MASK_MODES:
        raise PredictError(f"{location.path}: mask mode {location.by!r} is not one of {', '.join(MASK_MODES)}")
    try:
        labels = read_label_image(location.path, volume)
    except DataError as exc:
        raise PredictError(str(exc)) from None
    if (labels < 0).any():
        raise PredictError(f"{location.path}: negative label values; give 0 for background and 1..N for lesions")
    values = [location.label] if location.label is not None else [int(v) for v in np.unique(labels) if v > 0]
    extents = ndimage.find_objects(labels)  # per label value: its bounding box (None when absent)
    placements: list[Placement] = []
    for value in values:
        extent = extents[value - 1] if 0 < value <= len(extents) else None
        if extent is None:
            present = [int(v) for v in np.unique(labels) if v > 0][:10]
            raise PredictError(f"{location.path}: no voxel has label {value} (labels present: {present or 'none'})")
        chosen = labels[extent] == value  # only the label's box: label maps may hold 100+ organs
        start = np.array([s.start for s in extent])
        if location.by == "label":
            parts = [(chosen, start)]
        else:
            numbered, count = ndimage.label(chosen, structure=np.ones((3, 3, 3), dtype=bool))
            boxes = ndimage.find_objects(numbered)
            parts = [(numbered[boxes[n]] == n + 1, start + [s.start for s in boxes[n]]) for n in range(count)]
        for region, offset in parts:
            placements.append(_largest_cross_section(region, offset, value, location, len(placements)))
    if not placements:
        raise PredictError(f"{location.path}: the mask is empty (no voxel above 0); nothing to predict")
    return placements


def _largest_cross_section(
    region: np.ndarray, offset: np.ndarray, value: int, location: MaskLesions, number: int
) -> Placement:
    """The slice with the most voxels (the middle one of ties) and the voxels' box on it;
    ``offset`` is the region's corner (z, y, x) in the volume."""
    areas = region.reshape(region.shape[0], -1).sum(axis=1)
    best = np.flatnonzero(areas == areas.max())
    z = int(best[len(best) // 2])
    ys, xs = np.nonzero(region[z])
    x1, x2 = float(xs.min() + offset[2]), float(xs.max() + offset[2])
    y1, y2 = float(ys.min() + offset[1]), float(ys.max() + offset[1])
    given = {
        "form": "mask",
        "file": str(location.path),
        "by": location.by,
        "label": int(value),
        "lesion": number + 1,
        "voxels": int(region.sum()),
        "key_area_voxels": int(areas.max()),
    }
    return Placement(int(z + offset[0]), (x1, y1, x2, y2), given)


# --------------------------------------------------------------------------- records


def placement_source(volume: Any, placement: Placement) -> dict[str, Any]:
    """The record's ``source``: key slice and box in file voxel indices, centre in mm (LPS)."""
    x1, y1, x2, y2 = placement.box
    z = placement.key_slice
    centre_mm = volume.to_world([[(x1 + x2) / 2, (y1 + y2) / 2, z]])[0]
    source: dict[str, Any] = {"dataset": volume.format, "file": str(volume.source)}
    given = placement.given
    if given["form"] == "voxel" and not volume.resampled:
        file_slice, box_px = int(given["slice"]), list(given["box_px"])
    else:
        corners = volume.to_file([[x1, y1, z], [x2, y1, z], [x1, y2, z], [x2, y2, z]])
        if volume.axial_file_slices or volume.resampled:
            file_slice = int(round(float(corners[:, 2].mean())))
            box_px = [
                _tidy(corners[:, 0].min()),
                _tidy(corners[:, 1].min()),
                _tidy(corners[:, 0].max()),
                _tidy(corners[:, 1].max()),
            ]
        else:  # the file's slices are not axial: the box has no single file slice
            file_slice, box_px = None, None
            source["box_ijk"] = [[_tidy(v) for v in corners.min(axis=0)], [_tidy(v) for v in corners.max(axis=0)]]
    source.update(
        {
            "slice": file_slice,
            "box_px": box_px,
            "spacing_mm": [float(s) for s in volume.file_grid.spacing],
            "center_mm": [round(float(v), 3) for v in centre_mm],
            "frame": "LPS",
            "location": dict(given),
        }
    )
    if volume.resampled:
        source["resampled_axial"] = {
            "oblique_degrees": round(volume.oblique_degrees, 2),
            "slice": z,
            "box_px": [round(v, 3) for v in placement.box],
        }
    if volume.dicom is not None:
        uid = volume.sop_instance_uid(file_slice) if file_slice is not None else None
        if uid:
            source["sop_instance_uid"] = uid
        for keyword, key in (("SeriesInstanceUID", "series_instance_uid"), ("StudyInstanceUID", "study_instance_uid")):
            if volume.dicom.get(keyword):
                source[key] = volume.dicom.get(keyword)
    return source


def _tidy(value: float) -> float:
    """Integers stay integers after the index maps (no 33.00000000001)."""
    return float(round(float(value), 3))


def volume_stem(path: str | Path) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def volume_inputs(
    volume: Any,
    locations: Sequence[Location],
    lesion_ids: Sequence[str | None] | None = None,
    extra_source: dict[str, Any] | None = None,
    errors: list[str] | None = None,
) -> list[LesionInput]:
    """One LesionInput per lesion of ``locations`` on ``volume``; ids default to
    ``FORMAT/STEM/SLICE/N``; a location that yields several lesions (a mask) gets ``/N``
    after its given id. A location that cannot be placed raises, or with ``errors`` is
    reported there (``where`` of the location first) and left out."""
    inputs: list[LesionInput] = []
    slice_interval = float(volume.spacing_mm[2]) if volume.num_slices > 1 else SINGLE_SLICE_INTERVAL
    for i, location in enumerate(locations):
        try:
            placements = place(volume, location)
        except (PredictError, DataError) as exc:
            if errors is None:
                raise
            where = getattr(location, "where", None) or f"lesion {i + 1}"
            errors.append(f"{where}: {exc}")
            continue
        for n, placement in enumerate(placements):
            source = placement_source(volume, placement)
            if extra_source:
                source.update(extra_source)
            given_id = lesion_ids[i] if lesion_ids else None
            if given_id:
                lesion_id = given_id if len(placements) == 1 else f"{given_id}/{n + 1}"
            else:
                where = source["slice"] if source["slice"] is not None else f"z{placement.key_slice}"
                lesion_id = f"{volume.format}/{volume_stem(volume.source)}/{where}/{len(inputs)}"
            inputs.append(
                LesionInput(
                    lesion_id=lesion_id,
                    source=source,
                    provider=volume.provider(),
                    key_slice=placement.key_slice,
                    box_px=placement.box,
                    spacing_xy=(float(volume.spacing_mm[0]), float(volume.spacing_mm[1])),
                    slice_interval=slice_interval,
                )
            )
    return inputs


def image_inputs(
    path: str | Path,
    locations: Sequence[Location],
    series: str | None = None,
    force: bool = False,
    warn: Callable[[str], None] | None = None,
    errors: list[str] | None = None,
) -> list[LesionInput]:
    """Read a CT volume (any format of vision.data.volumes) and place its lesions (``errors``: see volume_inputs)."""
    try:
        volume = read_volume(path, series_uid=series, force=force, on_warning=warn)
    except DataError as exc:
        raise PredictError(str(exc)) from None
    return volume_inputs(volume, locations, errors=errors)
