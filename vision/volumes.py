"""CT volumes for inference: NIfTI (nibabel) and DICOM series (pydicom).

Both become a :class:`Volume`: HU slices ``(Z, rows, cols)`` shown the radiological way
(patient's anterior up, patient's right on the image left, as DeepLesion's PNGs) and
the spacing read from the files. A lesion is then a slice index plus a box in that
slice's pixels, and :meth:`Volume.provider` feeds :func:`vision.preprocess.lesion_patch`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision.deeplesion import DataError


@dataclass(frozen=True)
class Volume:
    hu: np.ndarray  # float32 (Z, rows, cols)
    spacing_mm: tuple[float, float, float]  # x (cols), y (rows), z (slice interval)
    source: str

    @property
    def num_slices(self) -> int:
        return int(self.hu.shape[0])

    def provider(self):  # -> vision.preprocess.SliceProvider
        """Slice index (0-based) -> HU image, None outside the volume."""

        def slice_at(n: int) -> np.ndarray | None:
            return self.hu[n] if 0 <= n < self.hu.shape[0] else None

        return slice_at


def _check_spacing(spacing: tuple[float, float, float], source: str) -> None:
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise DataError(f"{source}: spacing {spacing} is not positive; the header lacks voxel sizes")


def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """A NIfTI CT volume (values in HU after scl_slope/scl_inter)."""
    import nibabel as nib

    try:
        image = nib.as_closest_canonical(nib.load(str(path)))  # RAS+ axes
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for bad files
        raise DataError(f"{path}: unreadable NIfTI ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    # RAS+: i runs to the patient's right, j to anterior; show right on the image left, anterior up
    slices = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1])
    # superior first, like a head-to-feet series
    slices = np.ascontiguousarray(slices[::-1])
    spacing = (zooms[0], zooms[1], zooms[2])
    _check_spacing(spacing, str(path))
    return Volume(hu=slices, spacing_mm=spacing, source=str(path))


def read_dicom_series(folder: str | os.PathLike[str], series_uid: str | None = None) -> Volume:
    """One axial DICOM series from a folder; slices sorted head to feet by position."""
    import pydicom

    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not files:
        raise DataError(f"{folder}: no files; give the folder of one DICOM series")
    datasets = []
    for path in files:
        try:
            ds = pydicom.dcmread(str(path), force=False)
        except Exception:  # not DICOM (e.g. a DICOMDIR sidecar or a text file): skip it
            continue
        if "PixelData" in ds and "ImagePositionPatient" in ds:
            datasets.append(ds)
    if not datasets:
        raise DataError(f"{folder}: no DICOM images with ImagePositionPatient")
    uids = sorted({str(ds.SeriesInstanceUID) for ds in datasets})
    if series_uid is None and len(uids) > 1:
        raise DataError(f"{folder}: {len(uids)} series ({', '.join(uids[:3])}...); pass series_uid")
    chosen = series_uid or uids[0]
    datasets = [ds for ds in datasets if str(ds.SeriesInstanceUID) == chosen]
    if not datasets:
        raise DataError(f"{folder}: no series {chosen}")
    orientation = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    normal = np.cross(orientation[:3], orientation[3:])
    positions = [float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for ds in datasets]
    order = np.argsort(positions)[::-1]  # highest z (superior) first
    datasets = [datasets[i] for i in order]
    positions = [positions[i] for i in order]
    try:
        slices = np.stack(
            [
                ds.pixel_array.astype(np.float32) * float(getattr(ds, "RescaleSlope", 1.0))
                + float(getattr(ds, "RescaleIntercept", 0.0))
                for ds in datasets
            ]
        )
    except Exception as exc:
        raise DataError(f"{folder}: cannot decode pixel data ({exc})") from None
    row_mm, col_mm = (float(v) for v in datasets[0].PixelSpacing)
    if len(positions) > 1:
        z_mm = float(np.median(np.abs(np.diff(positions))))
    else:
        z_mm = float(getattr(datasets[0], "SliceThickness", 0) or 0)
    spacing = (col_mm, row_mm, z_mm)
    _check_spacing(spacing, str(folder))
    return Volume(hu=slices, spacing_mm=spacing, source=str(folder))


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """A NIfTI file (.nii / .nii.gz) or a DICOM series folder."""
    p = Path(path)
    if p.is_dir():
        return read_dicom_series(p)
    if p.name.endswith((".nii", ".nii.gz")):
        return read_nifti(p)
    raise DataError(f"{p}: not a NIfTI file (.nii, .nii.gz) or a DICOM folder")
