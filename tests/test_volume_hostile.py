"""CT volumes that are no image, or lack the geometry: refused with the file named, --force or not."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import SimpleITK as sitk
else:
    sitk = pytest.importorskip("SimpleITK")
pydicom = pytest.importorskip("pydicom")

from vision.data.deeplesion import DataError  # noqa: E402
from vision.data.volumes import read_volume  # noqa: E402


def _volume(values: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing((0.8, 0.8, 2.0))
    return image


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize(
    ("fill", "reason"),
    [
        (np.nan, "voxels are NaN or infinite"),
        (np.inf, "NaN or infinite"),
        (-1000.0, "every voxel is -1000"),
        (0.0, "every voxel is 0"),
    ],
)
def test_nan_and_constant_volumes_are_refused_even_with_force(tmp_path, force, fill, reason):
    path = tmp_path / "ct.nrrd"  # NRRD keeps NaN as NaN (ITK's NIfTI reader gives 0, refused as blank)
    sitk.WriteImage(_volume(np.full((6, 20, 20), fill)), str(path))
    with pytest.raises(DataError, match=f"{path}: .*{reason}"):
        read_volume(path, force=force)


def test_partly_nan_volume_is_refused(tmp_path):
    values = np.full((6, 20, 20), -1000.0)
    values[2, 5:9, 5:9] = 40.0
    values[3, 0, 0] = np.nan
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(_volume(values), str(path))
    with pytest.raises(DataError, match="1 voxels are NaN"):
        read_volume(path, force=True)


def _dicom_series(folder: Path) -> list[Path]:
    folder.mkdir()
    values = np.full((4, 16, 16), -1000, np.int16)
    values[:, 4:12, 4:12] = 40
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(values.shape[0]):
        plane = sitk.GetImageFromArray(values[k])  # stored = HU (intercept 0)
        plane.SetSpacing((0.7, 0.7))
        for tag, value in (
            ("0008|0060", "CT"),
            ("0020|000e", "1.2.826.0.1.3680043.8.498.5"),
            ("0008|0018", f"1.2.826.0.1.3680043.8.498.5.{k + 1}"),
            ("0020|0013", str(k + 1)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0032", f"0\\0\\{2.0 * k:g}"),
            ("0028|0030", "0.7\\0.7"),
            ("0028|1052", "0"),
            ("0028|1053", "1"),
        ):
            plane.SetMetaData(tag, value)
        path = folder / f"{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(plane)
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    ("keyword", "reason"),
    [
        ("ImageOrientationPatient", "no ImageOrientationPatient (0020,0037)"),
        ("PixelSpacing", "no PixelSpacing (0028,0030)"),
    ],
)
def test_dicom_without_orientation_or_spacing_is_a_clear_error(tmp_path, keyword, reason):
    paths = _dicom_series(tmp_path / "series")
    assert read_volume(tmp_path / "series").hu.shape[0] == 4  # the intact series reads
    for path in paths:
        ds = pydicom.dcmread(path)
        delattr(ds, keyword)
        ds.save_as(path)
    with pytest.raises(DataError, match=re.escape(reason)):
        read_volume(tmp_path / "series")
    with pytest.raises(DataError, match=re.escape(f"{paths[0]}: {reason}")):
        read_volume(paths[0])
