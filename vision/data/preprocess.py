"""LesaNet's lesion-patch preprocessing, crop-first.

The paper's facts: three slices 2 mm apart around the key slice (linear interpolation
between neighbouring slices when the interval does not divide 2 mm), HU window
[-1024, 3071] -> [0, 255], resampling to 1 mm per pixel, a 120 × 120 patch centred on
the box centre (replicated border), the box mapped into the patch, pixel mean 50
subtracted at the model input.

:func:`lesion_patch` interpolates only the patch region (crop first);
:func:`lesion_patch_whole_slice` is the paper's order (window and resample the whole
slice, then crop) kept as the reference the crop-first path is tested against.
Both share the pixel-centre mapping of a bilinear resize (``cv2.INTER_LINEAR``):
resized pixel ``r`` samples source coordinate ``(r + 0.5) / scale - 0.5``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy import ndimage

from vision.data.deeplesion import DataError

# slice number -> HU array (rows × cols), or None when that slice file does not exist
SliceProvider = Callable[[int], "np.ndarray | None"]
WarningSink = Callable[[str], None]


@dataclass(frozen=True)
class PreprocessConfig:
    """The paper's preprocessing settings (defaults = LesaNet)."""

    patch_size: int = 120
    pixel_mm: float = 1.0  # output pixel size
    slice_step_mm: float = 2.0  # distance between the three channels
    num_slices: int = 3
    hu_window: tuple[float, float] = (-1024.0, 3071.0)
    pixel_mean: float = 50.0  # subtracted at the model input, not in the cache
    max_fallback_slices: int = 3  # how far a missing neighbour may be replaced


DEFAULT_CONFIG = PreprocessConfig()


def context_positions(key_slice: int, slice_interval: float, cfg: PreprocessConfig = DEFAULT_CONFIG) -> list[float]:
    """Fractional slice numbers of the channels, e.g. key ± 2 mm / interval."""
    if not (slice_interval > 0 and math.isfinite(slice_interval)):
        raise DataError(f"slice interval {slice_interval!r} is not a positive number")
    half = cfg.num_slices // 2
    step = cfg.slice_step_mm / slice_interval
    return [round(key_slice + (c - half) * step, 6) for c in range(cfg.num_slices)]


def _slice_plan(
    provider: SliceProvider, position: float, cfg: PreprocessConfig, warn: WarningSink
) -> list[tuple[int, float]]:
    """Slices and weights that make the image at ``position`` (linear in z)."""
    lo, hi = math.floor(position), math.ceil(position)
    weight_hi = position - lo
    wanted = [(lo, 1.0 - weight_hi), (hi, weight_hi)] if hi != lo else [(lo, 1.0)]
    if all(provider(n) is not None for n, _ in wanted):
        return wanted
    # a missing neighbour file: take the nearest slice that exists
    candidates = sorted(
        range(lo - cfg.max_fallback_slices, hi + cfg.max_fallback_slices + 1), key=lambda n: (abs(n - position), n)
    )
    for n in candidates:
        if provider(n) is not None:
            warn(f"slice {position:g} missing; used nearest existing slice {n}")
            return [(n, 1.0)]
    raise DataError(f"no slice within {cfg.max_fallback_slices} of slice {position:g}")


def _z_plans(
    provider: SliceProvider, key_slice: int, slice_interval: float, cfg: PreprocessConfig, warn: WarningSink
) -> list[list[tuple[int, float]]]:
    if provider(key_slice) is None:
        raise DataError(f"key slice {key_slice} is missing")
    return [_slice_plan(provider, p, cfg, warn) for p in context_positions(key_slice, slice_interval, cfg)]


def _window(hu: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    lo, hi = cfg.hu_window
    return np.clip((hu.astype(np.float32) - lo) * np.float32(255.0 / (hi - lo)), 0.0, 255.0)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(values, 0, 255)).astype(np.uint8)


@dataclass(frozen=True)
class _Geometry:
    """Where the patch lies in the resized image, per axis (y, x)."""

    scale: tuple[float, float]  # resized pixels per source pixel
    resized: tuple[int, int]  # resized image size (rows, cols)
    origin: tuple[int, int]  # patch top-left in resized pixels
    box: np.ndarray  # box in patch pixels (x1, y1, x2, y2)


def _geometry(
    shape: tuple[int, int], box_px: Sequence[float], spacing_xy: Sequence[float], cfg: PreprocessConfig
) -> _Geometry:
    rows, cols = shape
    x1, y1, x2, y2 = (float(v) for v in box_px)
    sx, sy = (float(spacing_xy[0]), float(spacing_xy[1]))
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 < x1 or y2 < y1:
        raise DataError(f"malformed box {list(box_px)}")
    if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
        raise DataError(f"pixel spacing {list(spacing_xy)} is not positive")
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    if not (0 <= cx <= cols - 1 and 0 <= cy <= rows - 1):
        raise DataError(f"box {list(box_px)} lies outside the {rows}×{cols} image")
    scale_x, scale_y = sx / cfg.pixel_mm, sy / cfg.pixel_mm
    resized = (max(1, round(rows * scale_y)), max(1, round(cols * scale_x)))
    half = cfg.patch_size // 2

    def to_resized(v: float, s: float) -> float:  # pixel-centre mapping
        return (v + 0.5) * s - 0.5

    origin = (round(to_resized(cy, scale_y)) - half, round(to_resized(cx, scale_x)) - half)
    box = np.array(
        [
            to_resized(x1, scale_x) - origin[1],
            to_resized(y1, scale_y) - origin[0],
            to_resized(x2, scale_x) - origin[1],
            to_resized(y2, scale_y) - origin[0],
        ],
        dtype=np.float32,
    )
    return _Geometry(scale=(scale_y, scale_x), resized=resized, origin=origin, box=box)


def _source_coords(geo: _Geometry, axis: int, size: int, patch: int) -> np.ndarray:
    """Source coordinate of each patch pixel along one axis (replicated border)."""
    r = np.clip(np.arange(patch) + geo.origin[axis], 0, geo.resized[axis] - 1)
    return np.clip((r + 0.5) / geo.scale[axis] - 0.5, 0, size - 1)


def _separable_bilinear(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples at the grid ys × xs (in-range coordinates): the resize is
    separable, so four gathers replace a general 2-D coordinate map."""
    y0 = np.floor(ys).astype(np.intp)
    x0 = np.floor(xs).astype(np.intp)
    y1 = np.minimum(y0 + 1, image.shape[0] - 1)
    x1 = np.minimum(x0 + 1, image.shape[1] - 1)
    wy = (ys - y0).astype(np.float32)[:, None]
    wx = (xs - x0).astype(np.float32)[None, :]
    top = image[y0][:, x0] * (1 - wx) + image[y0][:, x1] * wx
    bottom = image[y1][:, x0] * (1 - wx) + image[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy


def lesion_patch(
    provider: SliceProvider,
    key_slice: int,
    box_px: Sequence[float],
    spacing_xy: Sequence[float],
    slice_interval: float,
    cfg: PreprocessConfig = DEFAULT_CONFIG,
    on_warning: WarningSink | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One lesion -> (uint8 array C × P × P, box in patch pixels x1,y1,x2,y2), crop-first.

    ``provider(n)`` returns slice ``n`` in HU (or None if it does not exist); slice
    numbers are whatever the source uses (DeepLesion file numbers, volume indices).
    """
    warn = on_warning or (lambda message: warnings.warn(message, stacklevel=3))
    plans = _z_plans(provider, key_slice, slice_interval, cfg, warn)
    key_image = provider(key_slice)
    assert key_image is not None
    height, width = key_image.shape[-2:]
    shape = (int(height), int(width))
    geo = _geometry(shape, box_px, spacing_xy, cfg)
    ys = _source_coords(geo, 0, shape[0], cfg.patch_size)
    xs = _source_coords(geo, 1, shape[1], cfg.patch_size)
    # the source window the patch reads from (+1 for the bilinear neighbour)
    r0, r1 = int(math.floor(ys.min())), min(shape[0], int(math.floor(ys.max())) + 2)
    c0, c1 = int(math.floor(xs.min())), min(shape[1], int(math.floor(xs.max())) + 2)
    out = np.empty((cfg.num_slices, cfg.patch_size, cfg.patch_size), dtype=np.uint8)
    for channel, plan in enumerate(plans):
        region = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
        for n, weight in plan:
            image = provider(n)
            if image is None or image.shape[-2:] != shape:
                raise DataError(f"slice {n} has shape {None if image is None else image.shape}, key slice {shape}")
            region += np.float32(weight) * image[r0:r1, c0:c1].astype(np.float32)
        windowed = _window(region, cfg)
        out[channel] = _to_uint8(_separable_bilinear(windowed, ys - r0, xs - c0))
    return out, geo.box


def lesion_patch_whole_slice(
    provider: SliceProvider,
    key_slice: int,
    box_px: Sequence[float],
    spacing_xy: Sequence[float],
    slice_interval: float,
    cfg: PreprocessConfig = DEFAULT_CONFIG,
    on_warning: WarningSink | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The paper's order: interpolate, window and resample whole slices, then crop.

    An independent implementation (scipy's general coordinate map) on purpose: the
    tests hold the crop-first path to it."""
    warn = on_warning or (lambda message: warnings.warn(message, stacklevel=3))
    plans = _z_plans(provider, key_slice, slice_interval, cfg, warn)
    key_image = provider(key_slice)
    assert key_image is not None
    height, width = key_image.shape[-2:]
    shape = (int(height), int(width))
    geo = _geometry(shape, box_px, spacing_xy, cfg)
    rows = np.clip((np.arange(geo.resized[0]) + 0.5) / geo.scale[0] - 0.5, 0, shape[0] - 1)
    cols = np.clip((np.arange(geo.resized[1]) + 0.5) / geo.scale[1] - 0.5, 0, shape[1] - 1)
    grid = np.meshgrid(rows, cols, indexing="ij")
    out = np.empty((cfg.num_slices, cfg.patch_size, cfg.patch_size), dtype=np.uint8)
    p = cfg.patch_size
    for channel, plan in enumerate(plans):
        slices = (np.float32(w) * provider(n).astype(np.float32) for n, w in plan)  # type: ignore[union-attr]
        volume = cast(np.ndarray, sum(slices))
        resized = ndimage.map_coordinates(_window(volume, cfg), grid, order=1, mode="nearest", prefilter=False)
        oy, ox = geo.origin
        pad = ((max(0, -oy), max(0, oy + p - geo.resized[0])), (max(0, -ox), max(0, ox + p - geo.resized[1])))
        padded = np.pad(resized, pad, mode="edge")
        y0, x0 = oy + pad[0][0], ox + pad[1][0]
        out[channel] = _to_uint8(padded[y0 : y0 + p, x0 : x0 + p])
    return out, geo.box


def model_input(patches: np.ndarray, cfg: PreprocessConfig = DEFAULT_CONFIG) -> np.ndarray:
    """Cached uint8 patches -> float32 network input (pixel mean subtracted)."""
    return patches.astype(np.float32) - np.float32(cfg.pixel_mean)
