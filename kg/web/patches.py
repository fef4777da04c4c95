"""Lesion patches as PNG for the browser: from the patch cache, or from the source slice.

The cache (docs/architecture.md, "Patch cache") is read with numpy directly: ``index.json``
maps a lesion's ``lesion_idx`` to its row of ``patches.npy`` (uint8, N x 3 x 120 x 120,
opened memory-mapped) and gives its box in patch pixels. Without a cached patch, a
DeepLesion-format 16-bit PNG slice (HU + 32768) named by the prediction record's
``source.file`` is cropped around the box, if it lies under ``--images DIR``: a path
from the store is never opened outside that folder.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ontology.errors import LesanetError
from ontology.files import read_json

CACHE_FORMAT = "lesanet-patch-cache"
# The cache's window (docs/architecture.md): the same grey levels the model saw.
WINDOW_HU = (-1024.0, 3071.0)
DEEPLESION_HU_OFFSET = 32768  # DeepLesion PNGs store HU + 32768 as uint16
SCALE = 2  # patches are 120 px; shown at 240 px
SOURCE_MARGIN = 1.0  # crop of a source slice: the box plus this many box sizes on each side
MIN_SOURCE_CROP_PX = 64
MAX_SOURCE_SIDE_PX = 4096  # larger PNGs are refused before decoding (as the data reader does)
BOX_COLOUR = (255, 200, 0)
_RENDERED_KEEP = 512  # PNGs kept in memory (about 30 KB each)


class PatchError(LesanetError, ValueError):
    """No patch can be shown for a lesion; the message says why and what to give."""


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class PatchRequest:
    """What the store knows about a lesion's image: its cache key and its source slice."""

    lesion_id: str
    lesion_idx: int | None
    file: str | None
    box_px: Box | None


def parse_box(text: str | None) -> Box | None:
    """``kg:boxPx`` ("x1 y1 x2 y2") as a :class:`Box`, None when absent or malformed."""
    if not text:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split())
    except ValueError:
        return None
    return Box(x1, y1, x2, y2)


class PatchCache:
    """``patches.npy`` + ``index.json`` of a patch cache folder, opened once."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index_path, patches_path = self.folder / "index.json", self.folder / "patches.npy"
        for path in (index_path, patches_path):
            if not path.is_file():
                raise PatchError(f"{path}: missing; --cache takes a folder written by `lesanet data cache`")
        index = read_json(index_path, PatchError, "a patch cache index")
        if (
            not isinstance(index, dict)
            or index.get("format") != CACHE_FORMAT
            or not isinstance(index.get("lesions"), list)
        ):
            raise PatchError(f"{index_path}: not a patch cache index (format {CACHE_FORMAT!r} expected)")
        self.patches = np.load(patches_path, mmap_mode="r", allow_pickle=False)
        if self.patches.dtype != np.uint8 or self.patches.ndim != 4 or self.patches.shape[1] != 3:
            raise PatchError(
                f"{patches_path}: shape {self.patches.shape} {self.patches.dtype}, expected N x 3 x H x W uint8"
            )
        self.rows: dict[int, tuple[int, Box | None]] = {}
        for number, entry in enumerate(index["lesions"]):
            try:
                row, idx = int(entry["row"]), int(entry["lesion_idx"])
                box = Box(*(float(v) for v in entry["box"])) if entry.get("box") is not None else None
            except (KeyError, TypeError, ValueError) as exc:
                raise PatchError(f"{index_path}: lesion entry {number} is malformed ({exc!r})") from None
            if not 0 <= row < len(self.patches):
                raise PatchError(f"{index_path}: lesion entry {number} points at row {row}, outside patches.npy")
            self.rows[idx] = (row, box)

    def patch(self, lesion_idx: int) -> tuple[np.ndarray, Box | None] | None:
        """The key-slice channel (H x W uint8) and box of a cached lesion, or None."""
        hit = self.rows.get(lesion_idx)
        if hit is None:
            return None
        row, box = hit
        return np.asarray(self.patches[row, 1]), box


def _window(hu: np.ndarray) -> np.ndarray:
    low, high = WINDOW_HU
    return (np.clip((hu - low) / (high - low), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def read_source_crop(path: Path, box: Box) -> tuple[np.ndarray, Box]:
    """A DeepLesion 16-bit PNG slice cropped around ``box``, windowed like the cache."""
    with Image.open(path) as image:
        if image.format != "PNG":
            raise PatchError(f"{path}: not a PNG slice")
        if max(image.size) > MAX_SOURCE_SIDE_PX:
            raise PatchError(f"{path}: {image.size[0]} x {image.size[1]} px, over {MAX_SOURCE_SIDE_PX} a side")
        pixels = np.asarray(image)
    if pixels.ndim != 2:
        raise PatchError(f"{path}: not a single-channel slice (shape {pixels.shape})")
    hu = pixels.astype(np.float32) - DEEPLESION_HU_OFFSET if pixels.dtype != np.uint8 else None
    grey = _window(hu) if hu is not None else pixels
    height, width = grey.shape
    side = max(box.x2 - box.x1, box.y2 - box.y1, 1.0)
    half = max(side * (0.5 + SOURCE_MARGIN), MIN_SOURCE_CROP_PX / 2)
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    x1, y1 = int(min(cx + half, width)), int(min(cy + half, height))
    if x1 <= x0 or y1 <= y0:
        raise PatchError(f"{path}: the box lies outside the {width} x {height} slice")
    return grey[y0:y1, x0:x1], Box(box.x1 - x0, box.y1 - y0, box.x2 - x0, box.y2 - y0)


def render_png(grey: np.ndarray, box: Box | None, scale: int = SCALE) -> bytes:
    """A grey patch scaled up, with its box drawn, as PNG bytes."""
    image = Image.fromarray(np.ascontiguousarray(grey), mode="L").convert("RGB")
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.BILINEAR)
    if box is not None:
        draw = ImageDraw.Draw(image)
        draw.rectangle([box.x1 * scale, box.y1 * scale, box.x2 * scale, box.y2 * scale], outline=BOX_COLOUR, width=2)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()


class PatchSource:
    """PNG patches for lesions: the cache first, then the source slice under ``images``."""

    def __init__(self, cache: str | Path | None = None, images: str | Path | None = None) -> None:
        self.cache = PatchCache(cache) if cache is not None else None
        self.images = Path(images).resolve() if images is not None else None
        if self.images is not None and not self.images.is_dir():
            raise PatchError(f"{images}: no such folder (--images takes the folder that holds Images_png/)")
        self._rendered: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.cache is not None or self.images is not None

    def describe(self) -> str:
        parts = []
        if self.cache is not None:
            parts.append(f"patch cache {self.cache.folder} ({len(self.cache.rows):,} lesions)")
        if self.images is not None:
            parts.append(f"source slices under {self.images}")
        return " and ".join(parts) or "none (start kg serve with --cache CACHE or --images DIR)"

    def png(self, request: PatchRequest) -> bytes:
        with self._lock:
            hit = self._rendered.get(request.lesion_id)
            if hit is not None:
                self._rendered.move_to_end(request.lesion_id)
                return hit
        data = self._render(request)
        with self._lock:
            self._rendered[request.lesion_id] = data
            while len(self._rendered) > _RENDERED_KEEP:
                self._rendered.popitem(last=False)
        return data

    def _render(self, request: PatchRequest) -> bytes:
        if self.cache is not None and request.lesion_idx is not None:
            cached = self.cache.patch(request.lesion_idx)
            if cached is not None:
                return render_png(*cached)
        if self.images is not None and request.file and request.box_px is not None:
            path = self._source_path(request.file)
            return render_png(*read_source_crop(path, request.box_px))
        raise PatchError(
            f"no patch for lesion {request.lesion_id}: not in the cache and no source slice; "
            f"patches come from {self.describe()}"
        )

    def _source_path(self, file: str) -> Path:
        assert self.images is not None
        path = (self.images / file).resolve()
        if not path.is_relative_to(self.images):
            raise PatchError(f"the source file {file!r} is outside --images {self.images}; not opened")
        if path.suffix.lower() != ".png" or not path.is_file():
            raise PatchError(f"the source slice {path} is missing or not a PNG")
        return path


def as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
